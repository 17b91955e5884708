// The fastapi-edge-baseline policy pack end to end: policy/index.ts started exactly as the
// Pulumi CLI starts a TypeScript policy pack (@pulumi/pulumi's run-policy-pack under ts-node
// with type checking), then driven over its analyzer gRPC API with engine-encoded
// properties (secret envelopes, unknown sentinels). The e2e scenario runs it through a real
// `pulumi preview --policy-pack` as well.
import { spawn, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { specialSecretSig, specialSigKey } from "@pulumi/pulumi/runtime/rpc";
import * as analyzerPb from "@pulumi/pulumi/proto/analyzer_pb";
import { AnalyzerClient } from "@pulumi/pulumi/proto/analyzer_grpc_pb";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";
import { policies } from "../../policy/policies";
import { OPENSSH_PEM, POLICY_DIR, ROOT, SSH_PUBLIC, T, UNKNOWN_STRING } from "../helpers/policy-fixtures";

function secret(value: unknown): Record<string, unknown> {
  return { [specialSigKey]: specialSecretSig, value };
}

function analyzerOptions(additionalSecretOutputs: string[] = []): analyzerPb.AnalyzerResourceOptions {
  const o = new analyzerPb.AnalyzerResourceOptions();
  o.setProtect(false);
  o.setAdditionalsecretoutputsList(additionalSecretOutputs);
  return o;
}

/** Fill in what an AnalyzeRequest and an AnalyzerResource both carry: the resource's type, name, URN, properties and options. */
function describeResource<M extends analyzerPb.AnalyzeRequest | analyzerPb.AnalyzerResource>(
  m: M,
  type: string,
  name: string,
  props: Record<string, unknown>,
  aso: string[],
): M {
  m.setType(type);
  m.setName(name);
  m.setUrn(`urn:pulumi:ci::fastapi-edge::${type}::${name}`);
  m.setProperties(Struct.fromJavaScript(props as Parameters<typeof Struct.fromJavaScript>[0]));
  m.setOptions(analyzerOptions(aso));
  return m;
}

function analyzeRequest(type: string, name: string, props: Record<string, unknown>, aso: string[] = []): analyzerPb.AnalyzeRequest {
  return describeResource(new analyzerPb.AnalyzeRequest(), type, name, props, aso);
}

function analyzerResource(type: string, name: string, props: Record<string, unknown>, aso: string[] = []): analyzerPb.AnalyzerResource {
  return describeResource(new analyzerPb.AnalyzerResource(), type, name, props, aso);
}

interface Diag {
  policy: string;
  level: analyzerPb.EnforcementLevel;
  message: string;
  urn: string;
}

function diags(resp: analyzerPb.AnalyzeResponse): Diag[] {
  return resp.getDiagnosticsList().map((d) => ({
    policy: d.getPolicyname(),
    level: d.getEnforcementlevel(),
    message: d.getMessage(),
    urn: d.getUrn(),
  }));
}

describe("policy pack served over the analyzer gRPC API (as `pulumi preview --policy-pack policy` runs it)", () => {
  let child: ChildProcess | undefined;
  let client: AnalyzerClient | undefined;
  let stderr = "";

  beforeAll(async () => {
    // The nodejs language host runs `node @pulumi/pulumi/cmd/run-policy-pack <engine> <dir>` in the
    // pack directory with PULUMI_NODEJS_TYPESCRIPT=true (ts-node, type-checked); the pack prints its port.
    const runner = path.join(ROOT, "node_modules/@pulumi/pulumi/cmd/run-policy-pack");
    const proc = spawn(process.execPath, [runner, "127.0.0.1:1", "."], {
      cwd: POLICY_DIR,
      env: { ...process.env, PULUMI_NODEJS_TYPESCRIPT: "true" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = proc;
    proc.stderr?.on("data", (b: Buffer) => {
      stderr += b.toString();
    });
    const port = await new Promise<number>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`policy pack did not start in time; stderr:\n${stderr}`)), 110_000);
      proc.stdout?.on("data", (b: Buffer) => {
        out += b.toString();
        const m = /^(\d+)\s*$/m.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      proc.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`policy pack exited with ${String(code)}; stderr:\n${stderr}`));
      });
    });
    client = new AnalyzerClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  }, 120_000);

  afterAll(() => {
    client?.close();
    if (child?.pid !== undefined && child.exitCode === null) child.kill("SIGTERM");
  });

  const analyze = (req: analyzerPb.AnalyzeRequest): Promise<analyzerPb.AnalyzeResponse> =>
    new Promise((resolve, reject) => {
      client!.analyze(req, (err, res) => (err ? reject(err) : resolve(res)));
    });
  const analyzeStack = (req: analyzerPb.AnalyzeStackRequest): Promise<analyzerPb.AnalyzeResponse> =>
    new Promise((resolve, reject) => {
      client!.analyzeStack(req, (err, res) => (err ? reject(err) : resolve(res)));
    });
  const analyzerInfo = (): Promise<analyzerPb.AnalyzerInfo> =>
    new Promise((resolve, reject) => {
      client!.getAnalyzerInfo(new Empty(), (err, res) => (err ? reject(err) : resolve(res)));
    });

  it("announces the pack name and its ten mandatory policies", async () => {
    const info = await analyzerInfo();
    expect(info.getName()).toBe("fastapi-edge-baseline");
    expect(info.getVersion()).toBe("0.1.0");
    const served = info.getPoliciesList().map((p) => [p.getName(), p.getEnforcementlevel()] as const);
    expect(served.map(([n]) => n)).toEqual(policies.map((p) => p.name));
    for (const [, level] of served) expect(level).toBe(analyzerPb.EnforcementLevel.MANDATORY);
  });

  it("blocks a security group that opens SSH to the world, passes a compliant one", async () => {
    const bad = await analyze(
      analyzeRequest(T.securityGroup, "edge-sg", {
        ingress: [{ protocol: "tcp", fromPort: 22, toPort: 22, cidrBlocks: ["0.0.0.0/0"] }],
      }),
    );
    expect(diags(bad)).toEqual([expect.objectContaining({ policy: "no-ssh-from-internet", level: analyzerPb.EnforcementLevel.MANDATORY })]);
    const good = await analyze(
      analyzeRequest(T.securityGroup, "edge-sg", {
        ingress: [{ protocol: "tcp", fromPort: 22, toPort: 22, cidrBlocks: ["203.0.113.7/32"] }],
      }),
    );
    expect(diags(good)).toEqual([]);
  });

  it("blocks an instance without IMDSv2 and root encryption", async () => {
    const resp = await analyze(analyzeRequest(T.instance, "edge", { instanceType: "t3.small" }));
    expect(
      diags(resp)
        .map((d) => d.policy)
        .sort(),
    ).toEqual(["ebs-encrypted", "instance-requires-imdsv2"]);
  });

  it("blocks a launch template without IMDSv2, encryption or a no-public-address interface, and an ASG without ELB health checks", async () => {
    const lt = await analyze(analyzeRequest(T.launchTemplate, "app-lt", { instanceType: "t3.small" }));
    expect(diags(lt)).toEqual([
      expect.objectContaining({
        policy: "launch-template-hardened",
        level: analyzerPb.EnforcementLevel.MANDATORY,
        message: expect.stringMatching(/httpTokens/),
      }),
      expect.objectContaining({ policy: "launch-template-hardened", message: expect.stringMatching(/no EBS volume/) }),
      expect.objectContaining({ policy: "launch-template-hardened", message: expect.stringMatching(/associatePublicIpAddress/) }),
    ]);
    const asg = await analyze(analyzeRequest(T.autoScalingGroup, "app-asg", { targetGroupArns: ["arn:tg"], healthCheckType: "EC2" }));
    expect(diags(asg)).toEqual([expect.objectContaining({ policy: "asg-elb-health-check", level: analyzerPb.EnforcementLevel.MANDATORY })]);
  });

  it("blocks an app instance with a public address and an app ingress rule from a CIDR, passes the component's shape", async () => {
    const role = { Project: "fastapi-edge", "fastapi-edge:role": "app-host" };
    const instance = {
      tags: { ...role, Name: "fastapi-edge-ci-app-0" },
      metadataOptions: { httpTokens: "required" },
      rootBlockDevice: { encrypted: true },
    };
    const rule = { securityGroupId: "sg-0aaaaaaaaaaaaaaaa", ipProtocol: "tcp", fromPort: 8000, toPort: 8001, tags: role };
    const good = [
      analyzeRequest(T.instance, "app-instance-0", { ...instance, associatePublicIpAddress: false }),
      analyzeRequest(T.securityGroup, "app-instance-sg", { vpcId: "vpc-1", tags: role }),
      analyzeRequest(T.vpcIngressRule, "app-instance-app", { ...rule, referencedSecurityGroupId: "sg-0123456789abcdef0" }),
    ];
    for (const req of good) expect(diags(await analyze(req)), req.getName()).toEqual([]);

    const publicApp = await analyze(analyzeRequest(T.instance, "app-instance-0", { ...instance, associatePublicIpAddress: true }));
    expect(diags(publicApp)).toEqual([
      expect.objectContaining({
        policy: "app-instances-private",
        level: analyzerPb.EnforcementLevel.MANDATORY,
        message: expect.stringMatching(/associatePublicIpAddress is true; .*set associatePublicIpAddress: false/),
      }),
    ]);
    const cidrRule = await analyze(analyzeRequest(T.vpcIngressRule, "app-instance-app", { ...rule, cidrIpv4: "10.0.0.0/8" }));
    expect(diags(cidrRule)).toEqual([
      expect.objectContaining({
        policy: "app-ports-from-edge-only",
        level: analyzerPb.EnforcementLevel.MANDATORY,
        message: expect.stringMatching(/cidrIpv4/),
      }),
      expect.objectContaining({ policy: "app-ports-from-edge-only", message: expect.stringMatching(/no referencedSecurityGroupId/) }),
    ]);
  });

  it("downgrades to advisory when a checked value is unknown during preview", async () => {
    const resp = await analyze(
      analyzeRequest(T.securityGroup, "edge-sg", {
        ingress: [{ protocol: "tcp", fromPort: 22, toPort: 22, cidrBlocks: UNKNOWN_STRING }],
      }),
    );
    expect(diags(resp)).toEqual([
      expect.objectContaining({
        policy: "no-ssh-from-internet",
        level: analyzerPb.EnforcementLevel.ADVISORY,
        message: expect.stringMatching(/can't be known during preview/),
      }),
    ]);
  });

  it("sees through engine secret envelopes: a secret private key inside a non-secret property is still a leak", async () => {
    const ok = new analyzerPb.AnalyzeStackRequest();
    ok.setResourcesList([
      analyzerResource(
        "tls:index/privateKey:PrivateKey",
        "deploy-key",
        { privateKeyOpenssh: secret(OPENSSH_PEM), publicKeyOpenssh: SSH_PUBLIC },
        ["privateKeyOpenssh", "privateKeyPem", "privateKeyPemPkcs8"],
      ),
      analyzerResource(
        "command:remote:Command",
        "push",
        { connection: secret({ host: "203.0.113.10", privateKey: OPENSSH_PEM }), create: "sudo nginx -t" },
        ["connection"],
      ),
    ]);
    expect(diags(await analyzeStack(ok))).toEqual([]);

    const leak = new analyzerPb.AnalyzeStackRequest();
    leak.setResourcesList([
      analyzerResource(
        "command:remote:Command",
        "write-key",
        { connection: secret({ host: "h" }), create: secret(`echo '${OPENSSH_PEM}' > k`) },
        ["connection"],
      ),
    ]);
    expect(diags(await analyzeStack(leak))).toEqual([
      expect.objectContaining({
        policy: "no-plaintext-credentials-in-state",
        level: analyzerPb.EnforcementLevel.MANDATORY,
        urn: "urn:pulumi:ci::fastapi-edge::command:remote:Command::write-key",
        message: expect.stringMatching(/"create" contains private key material/),
      }),
    ]);
  });
});
