// albAutoScaling: the Auto Scaling Group behind the ALB (components/asg.ts) under
// Pulumi mocks, its config refusals, the release bundle (lib/asg.ts), and the
// user-data script run for real outside AWS (a file:// bundle, the fake systemctl
// running real uvicorn processes).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { releaseBundle, releaseKey, renderUserData, tarGz, type UserDataSettings } from "../../lib/asg";
import { ConfigError } from "../../lib/config";
import { shipped } from "../../lib/shipped";
import { fakeSystemdEnv } from "../helpers/fake-systemd";
import { runProgram, unwrap, type ProgramRun } from "../helpers/mocks";
import { APP_DIR, freePorts, httpJson, REPO_ROOT, run, script, stopPidFiles } from "../helpers/proc";
import { configErrorOf } from "../helpers/config-error";

const VENV_APP = "test/fixtures/app-venv";
const SUBNETS = "subnet-0123456789abcdef0,subnet-0fedcba9876543210";
const albEc2 = { domain: "api.example.com", frontend: "alb", route53ZoneId: "Z0123456789ABC", appSource: VENV_APP };
const asgOn = { ...albEc2, albAutoScaling: "true", albAsgSubnetIds: SUBNETS };

const scratch = mkdtempSync(path.join(tmpdir(), "fe-asg-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

type Inputs = Record<string, unknown>;
const inputs = (run: ProgramRun, type: string, name?: string): Inputs => unwrap<Inputs>(run.one(type, name).inputs);
const userData = (run: ProgramRun): string =>
  Buffer.from(String(inputs(run, "aws:ec2/launchTemplate:LaunchTemplate").userData), "base64").toString("utf8");

type Rule = {
  securityGroupId?: string;
  referencedSecurityGroupId?: string;
  fromPort?: number;
  toPort?: number;
  cidrIpv4?: string;
  cidrIpv6?: string;
};
const rules = (run: ProgramRun, kind: "Ingress" | "Egress"): Rule[] =>
  run.ofType(`aws:vpc/securityGroup${kind}Rule:SecurityGroup${kind}Rule`).map((r) => unwrap<Rule>(r.inputs));

describe("albAutoScaling on (mocks)", () => {
  let cached: ProgramRun | undefined;
  const program = async (): Promise<ProgramRun> => (cached ??= await runProgram(asgOn));

  it("replaces the one instance: no EC2 instance, Elastic IP, key pair or SSH step; no SSH outputs", async () => {
    const run = await program();
    for (const t of ["aws:ec2/instance:Instance", "aws:ec2/eip:Eip", "aws:ec2/keyPair:KeyPair", "tls:index/privateKey:PrivateKey"]) {
      expect(run.ofType(t), t).toEqual([]);
    }
    expect(run.resources.filter((r) => r.type.startsWith("command:"))).toEqual([]);
    expect(run.ofType("aws:lb/targetGroupAttachment:TargetGroupAttachment")).toEqual([]);
    expect(Object.keys(run.outputs).sort()).toEqual([
      "appRelease",
      "autoScalingGroupName",
      "frontend",
      "loadBalancerDnsName",
      "releaseBucket",
      "url",
    ]);
  });

  it("launch template: IMDSv2 only (hop limit 1), encrypted gp3 root volume, no public address, the instance profile, no key", async () => {
    const run = await program();
    const lt = inputs(run, "aws:ec2/launchTemplate:LaunchTemplate");
    expect(lt.metadataOptions).toEqual({ httpTokens: "required", httpEndpoint: "enabled", httpPutResponseHopLimit: 1 });
    expect(lt.blockDeviceMappings).toEqual([
      { deviceName: "/dev/xvda", ebs: { volumeType: "gp3", volumeSize: 20, encrypted: "true", deleteOnTermination: "true" } },
    ]);
    expect(lt.networkInterfaces).toEqual([
      { deviceIndex: 0, associatePublicIpAddress: "false", securityGroups: ["asg-sg-id"], deleteOnTermination: "true" },
    ]);
    expect(lt.iamInstanceProfile).toEqual({ arn: "arn:mock:aws:iam/instanceProfile:InstanceProfile:asg-profile" });
    expect(lt.imageId).toBe("ami-0123456789abcdef0");
    expect(lt.instanceType).toBe("t3.small");
    expect(lt).not.toHaveProperty("keyName");
    expect(lt.updateDefaultVersion).toBe(true);
  });

  it("amiId: the launch template boots that image, with the root volume on its own root device", async () => {
    const run = await runProgram({ ...asgOn, amiId: "ami-0aaaaaaaaaaaaaaaa", instanceType: "t3.medium", rootVolumeGb: "30" });
    const lt = inputs(run, "aws:ec2/launchTemplate:LaunchTemplate");
    expect(lt).toMatchObject({ imageId: "ami-0aaaaaaaaaaaaaaaa", instanceType: "t3.medium" });
    expect(lt.blockDeviceMappings).toEqual([
      { deviceName: "/dev/sda1", ebs: { volumeType: "gp3", volumeSize: 30, encrypted: "true", deleteOnTermination: "true" } },
    ]);
  });

  it("user data: the shipped script with the release's key, sha256 and version, the ports, the VPC block and the health path", async () => {
    const run = await program();
    const text = userData(run);
    const release = String(run.outputs.appRelease);
    const { sha256 } = releaseBundle(path.join(REPO_ROOT, VENV_APP), undefined);
    expect(text.startsWith("#!/usr/bin/env bash\n")).toBe(true);
    expect(text).toContain(`RELEASE_ID='${release}'\n`);
    expect(text).toContain(`RELEASE_URL='s3://fastapi-edge-releases-20261130/${releaseKey(release)}'\n`);
    expect(text).toContain(`RELEASE_SHA256='${sha256}'\n`);
    expect(text).toContain("RELEASE_VERSION_ID='3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY'\n");
    expect(text).toContain("S3_REGION='eu-west-1'\n");
    expect(text).toContain("APP_PORTS='8000 8001'\n");
    expect(text).toContain("HEALTH_PATH='/healthz'\n");
    expect(text).toContain("APP_VERSION='1'\n");
    expect(text).toContain("DEPLOY_ARGS='--venv requirements.txt --python /usr/bin/python3 --min-uvicorn 0.33'\n");
    expect(text).toMatch(/PACKAGES='[^']*python3-venv'\n/);
    expect(text).toContain("FORWARDED_ALLOW_IPS=172.31.0.0/16\n");
    expect(text).toContain("UVICORN_HOST=0.0.0.0\n");
    expect(text.endsWith(shipped("scripts/asg-user-data.sh").slice("#!/usr/bin/env bash\n".length))).toBe(true);
    // The bundle object is keyed by the release id, after versioning and encryption are on.
    expect(inputs(run, "aws:s3/bucketObjectv2:BucketObjectv2")).toMatchObject({
      key: `releases/${release}.tar.gz`,
      serverSideEncryption: "AES256",
    });
  });

  it("group: the given subnets and sizes, both target groups, ELB health checks with a grace period, instance refresh with rollback", async () => {
    const run = await program();
    expect(inputs(run, "aws:autoscaling/group:Group")).toMatchObject({
      vpcZoneIdentifiers: SUBNETS.split(","),
      minSize: 2,
      maxSize: 4,
      desiredCapacity: 2,
      targetGroupArns: ["arn:mock:aws:lb/targetGroup:TargetGroup:alb-tg", "arn:mock:aws:lb/targetGroup:TargetGroup:alb-tg-8001"],
      healthCheckType: "ELB",
      healthCheckGracePeriod: 600,
      defaultInstanceWarmup: 600,
      // The version number (the mock's latestVersion), so a new version starts a refresh.
      launchTemplate: { id: "asg-lt-id", version: "1" },
      instanceRefresh: {
        strategy: "Rolling",
        preferences: { minHealthyPercentage: 100, maxHealthyPercentage: 200, autoRollback: true, instanceWarmup: "600" },
      },
    });
  });

  it("target tracking on ALBRequestCountPerTarget, labelled with the ALB's and the first target group's ARN suffixes", async () => {
    const run = await program();
    expect(inputs(run, "aws:autoscaling/policy:Policy")).toEqual({
      autoscalingGroupName: "asg-group",
      policyType: "TargetTrackingScaling",
      targetTrackingConfiguration: {
        predefinedMetricSpecification: {
          predefinedMetricType: "ALBRequestCountPerTarget",
          resourceLabel: "app/alb-lb/50dc6c495c0c9188/targetgroup/alb-tg/943f017f100becff",
        },
        targetValue: 1000,
      },
    });
  });

  it("one target group per app port, and the HTTPS listener spreads over them evenly", async () => {
    const run = await program();
    expect(run.ofType("aws:lb/targetGroup:TargetGroup").map((t) => [t.name, (t.inputs as { port: number }).port])).toEqual([
      ["alb-tg", 8000],
      ["alb-tg-8001", 8001],
    ]);
    const https = run
      .ofType("aws:lb/listener:Listener")
      .map((l) => unwrap<Inputs>(l.inputs))
      .find((l) => l.port === 443)!;
    expect(https.defaultActions).toEqual([
      {
        type: "forward",
        forward: {
          targetGroups: [
            { arn: "arn:mock:aws:lb/targetGroup:TargetGroup:alb-tg", weight: 1 },
            { arn: "arn:mock:aws:lb/targetGroup:TargetGroup:alb-tg-8001", weight: 1 },
          ],
        },
      },
    ]);
  });

  it("security groups: the instances admit the app ports from the ALB's group only, and nothing reaches port 22", async () => {
    const run = await program();
    const ingress = rules(run, "Ingress");
    expect(ingress.filter((r) => r.securityGroupId === "asg-sg-id")).toEqual([
      {
        securityGroupId: "asg-sg-id",
        ipProtocol: "tcp",
        fromPort: 8000,
        toPort: 8001,
        referencedSecurityGroupId: "alb-sg-id",
        description: "app ports from the ALB only",
      },
    ]);
    expect(ingress.filter((r) => (r.fromPort ?? 0) <= 22 && 22 <= (r.toPort ?? 0))).toEqual([]);
    expect(rules(run, "Egress").filter((r) => r.securityGroupId === "alb-sg-id")).toEqual([
      expect.objectContaining({ fromPort: 8000, toPort: 8001, referencedSecurityGroupId: "asg-sg-id" }),
    ]);
  });

  it("bucket: versioned, encrypted, no public access, TLS only; the role reads only its releases/ prefix", async () => {
    const run = await program();
    expect(inputs(run, "aws:s3/bucketVersioning:BucketVersioning")).toMatchObject({ versioningConfiguration: { status: "Enabled" } });
    expect(inputs(run, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")).toMatchObject({
      rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "AES256" } }],
    });
    expect(inputs(run, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")).toMatchObject({
      blockPublicAcls: true,
      blockPublicPolicy: true,
      ignorePublicAcls: true,
      restrictPublicBuckets: true,
    });
    const policy = JSON.parse(String(inputs(run, "aws:s3/bucketPolicy:BucketPolicy").policy)) as { Statement: Inputs[] };
    expect(policy.Statement).toEqual([
      expect.objectContaining({ Effect: "Deny", Principal: "*", Action: "s3:*", Condition: { Bool: { "aws:SecureTransport": "false" } } }),
    ]);
    const role = JSON.parse(String(inputs(run, "aws:iam/rolePolicy:RolePolicy", "asg-").policy)) as { Statement: Inputs[] };
    expect(role.Statement).toEqual([
      {
        Effect: "Allow",
        Action: ["s3:GetObject", "s3:GetObjectVersion"],
        Resource: "arn:aws:s3:::fastapi-edge-releases-20261130/releases/*",
      },
    ]);
  });

  it("passes the policy pack's rules for launch templates and groups", async () => {
    const { launchTemplateFindings, autoScalingGroupFindings } = await import("../../policy/rules");
    const run = await program();
    expect(launchTemplateFindings(inputs(run, "aws:ec2/launchTemplate:LaunchTemplate"))).toEqual([]);
    expect(autoScalingGroupFindings(inputs(run, "aws:autoscaling/group:Group"))).toEqual([]);
  });
});

describe("albAutoScaling off", () => {
  it("creates none of its resources (the single instance path is program.test.ts's)", async () => {
    const run = await runProgram({ ...albEc2, albAutoScaling: "false" });
    const fleet = run.resources.filter(
      (r) => /^(aws:autoscaling|aws:s3\/|aws:ec2\/launchTemplate)/.test(r.type) || r.name.startsWith("asg"),
    );
    expect(fleet).toEqual([]);
    run.one("aws:ec2/instance:Instance");
    expect(run.ofType("aws:lb/targetGroup:TargetGroup")).toHaveLength(1);
  });
});

describe("config refusals name the key", () => {
  const refuse = (raw: Record<string, string>, re: RegExp) => {
    const err = configErrorOf(raw);
    expect(err, JSON.stringify(raw)).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toMatch(re);
  };

  it("refuses each bad combination with the key and the accepted form", () => {
    refuse(
      { domain: "api.example.com", email: "ops@example.com", albAutoScaling: "true", albAsgSubnetIds: SUBNETS },
      /fastapi-edge:albAutoScaling needs frontend alb/,
    );
    refuse({ ...albEc2, albAutoScaling: "true" }, /fastapi-edge:albAsgSubnetIds is required when albAutoScaling is true/);
    refuse(
      { ...asgOn, albAsgSubnetIds: "subnet-xyz" },
      /fastapi-edge:albAsgSubnetIds must be a subnet id such as subnet-0123456789abcdef0/,
    );
    refuse(
      { ...asgOn, albAsgSubnetIds: "subnet-0123456789abcdef0,subnet-0123456789abcdef0" },
      /albAsgSubnetIds must not name a subnet twice/,
    );
    refuse({ ...asgOn, albAsgMinSize: "3", albAsgMaxSize: "2" }, /fastapi-edge:albAsgMinSize must be at most albAsgMaxSize \(3 > 2\)/);
    refuse(
      { ...asgOn, albAsgDesiredCapacity: "5" },
      /fastapi-edge:albAsgDesiredCapacity must be from albAsgMinSize to albAsgMaxSize \(2 to 4, got 5\)/,
    );
    refuse({ ...asgOn, albAsgMaxSize: "101" }, /fastapi-edge:albAsgMaxSize must be a whole number from 1 to 100/);
    refuse(
      { ...asgOn, albAsgHealthCheckGracePeriod: "30" },
      /fastapi-edge:albAsgHealthCheckGracePeriod must be a whole number from 60 to 7200/,
    );
    refuse({ ...asgOn, albAsgMinHealthyPercentage: "150" }, /fastapi-edge:albAsgMinHealthyPercentage must be a whole number from 0 to 100/);
    refuse({ ...asgOn, sshAllowedCidrs: "198.51.100.7/32" }, /fastapi-edge:sshAllowedCidrs must be empty with albAutoScaling/);
    refuse({ ...albEc2, albAsgMinSize: "3" }, /fastapi-edge:albAsgMinSize is only used with albAutoScaling true/);
    refuse({ ...albEc2, albAsgSubnetIds: SUBNETS }, /fastapi-edge:albAsgSubnetIds is only used with albAutoScaling true/);
  });

  it("the program stops before any resource", async () => {
    await expect(runProgram({ ...albEc2, albAutoScaling: "true" })).rejects.toThrow(/albAsgSubnetIds is required/);
  });
});

describe("the release bundle", () => {
  it("is the same bytes for the same files, and holds app/, bin/ and the unit", async () => {
    const a = releaseBundle(APP_DIR, undefined);
    const b = releaseBundle(APP_DIR, undefined);
    expect(a.sha256).toBe(b.sha256);
    const file = path.join(scratch, "bundle.tar.gz");
    writeFileSync(file, a.archive);
    const list = await run("tar", ["-tvzf", file]);
    expect(list.code).toBe(0);
    const lines = list.stdout.trim().split("\n");
    const names = lines.map((l) => l.split(/\s+/).pop()!);
    expect(names).toContain("app/main.py");
    expect(names).toContain("bin/app-deploy.sh");
    expect(names).toContain("bin/release-lib.sh");
    expect(names).toContain("systemd/fastapi-edge-app@.service");
    expect(lines.find((l) => l.endsWith("bin/app-deploy.sh"))).toMatch(/^-rwxr-xr-x root\/root/);
  });

  it("refuses unsafe paths and splits long ones into the ustar prefix", async () => {
    expect(() => tarGz([{ path: "../x", content: Buffer.from(""), mode: 0o644 }])).toThrow(/unsafe bundle path/);
    const long = `${"d".repeat(60)}/${"e".repeat(60)}/f.txt`;
    const file = path.join(scratch, "long.tar.gz");
    writeFileSync(file, tarGz([{ path: long, content: Buffer.from("x\n"), mode: 0o644 }]));
    const dir = path.join(scratch, "long");
    mkdirSync(dir);
    expect((await run("tar", ["-xzf", file, "-C", dir])).code).toBe(0);
    expect(readFileSync(path.join(dir, long), "utf8")).toBe("x\n");
  });

  it("user data refuses a quote in a value", () => {
    const s = { RELEASE_ID: "0123456789abcdef", APP_ENV: "X='y'" } as UserDataSettings;
    expect(() => renderUserData(s)).toThrow(/refusing to put APP_ENV/);
  });
});

describe("asg-user-data.sh, run outside AWS", () => {
  const userDataScript = script("asg-user-data.sh");
  const base = path.join(scratch, "host");
  const state = path.join(scratch, "fake-systemd");
  afterAll(() => stopPidFiles(state));

  const settings = (extra: Record<string, string>): NodeJS.ProcessEnv => ({
    ...extra,
    FASTAPI_EDGE_BASE: path.join(base, "opt"),
    ETC_DIR: path.join(base, "etc"),
    UNIT_DIR: path.join(base, "units"),
    WORK_DIR: path.join(base, "tmp"),
    SKIP_USER: "1",
  });

  it("refuses a missing or malformed setting (exit 78) and a bundle with another sha256 (exit 1)", async () => {
    mkdirSync(path.join(base, "tmp"), { recursive: true });
    const bare = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
    const r1 = await run(userDataScript, [], { env: { ...bare, ...settings({ RELEASE_ID: "nope" }) } });
    expect([r1.code, r1.stderr]).toEqual([78, expect.stringMatching(/RELEASE_ID must be 16 hex digits/)]);
    const file = path.join(scratch, "ud-bundle.tar.gz");
    writeFileSync(file, releaseBundle(APP_DIR, undefined).archive);
    const ok = { RELEASE_ID: "0123456789abcdef", RELEASE_SHA256: "0".repeat(64), APP_PORTS: "8000", APP_ENV: "X=1\n" };
    const r2 = await run(userDataScript, [], { env: { ...bare, ...settings({ ...ok, RELEASE_URL: "ftp://x/y" }) } });
    expect([r2.code, r2.stderr]).toEqual([78, expect.stringMatching(/RELEASE_URL must be s3:/)]);
    const r3 = await run(userDataScript, [], { env: { ...bare, ...settings({ ...ok, RELEASE_URL: "s3://bucket/key" }) } });
    expect([r3.code, r3.stderr]).toEqual([78, expect.stringMatching(/S3_REGION is required/)]);
    const r4 = await run(userDataScript, [], { env: { ...bare, ...settings({ ...ok, RELEASE_URL: `file://${file}` }) } });
    expect([r4.code, r4.stderr]).toEqual([1, expect.stringMatching(/sha256 is [0-9a-f]{64}, not 0{64}: refused/)]);
    expect((await run("ls", [path.join(base, "tmp")])).stdout.trim()).toBe(""); // its work directory is gone
  });

  it("installs the release in the single host's layout, starts every port healthy, and a second run changes nothing", async () => {
    const ports = await freePorts(2);
    const { archive, sha256 } = releaseBundle(APP_DIR, undefined);
    const file = path.join(scratch, "bundle-ok.tar.gz");
    writeFileSync(file, archive);
    const release = "00112233445566aa";
    const env = fakeSystemdEnv(state, {
      ...settings({
        RELEASE_ID: release,
        RELEASE_URL: `file://${file}`,
        RELEASE_SHA256: sha256,
        APP_PORTS: ports.join(" "),
        APP_ENV: "APP_MODULE=main:app\n",
        APP_VERSION: "asg-1",
        HEALTH_TIMEOUT: "60",
      }),
      APP_DIR: path.join(base, "opt", "app"),
      HEALTH_INTERVAL: "0.2",
      WANTS_DIR: path.join(base, "wants"),
    });
    for (const pass of [1, 2]) {
      const res = await run(userDataScript, [], { env, timeoutMs: 120_000 });
      expect(res.code, `pass ${pass}: ${res.stdout}\n${res.stderr}`).toBe(0);
      expect(res.stdout).toContain(`release ${release} is live on ports ${ports.join(" ")}`);
      if (pass === 2) expect(res.stdout).toContain(`release ${release} already installed`);
      for (const port of ports) {
        const h = await httpJson<{ version: string }>(`http://127.0.0.1:${port}/healthz`);
        expect([h.status, h.json.version]).toEqual([200, "asg-1"]);
      }
    }
    expect(readFileSync(path.join(base, "etc", "app.env"), "utf8")).toBe("APP_MODULE=main:app\n");
    expect(readFileSync(path.join(base, "units", "fastapi-edge-app@.service"), "utf8")).toBe(shipped("systemd/fastapi-edge-app@.service"));
    expect(readFileSync(path.join(base, "opt", "bin", "app-deploy.sh"), "utf8")).toBe(shipped("scripts/app-deploy.sh"));
    expect(readFileSync(path.join(base, "opt", "app", "main.py"), "utf8")).toBe(readFileSync(path.join(APP_DIR, "main.py"), "utf8"));
    // The upload app-deploy.sh consumed is gone, and so is the script's work directory.
    expect((await run("ls", [path.join(base, "tmp")])).stdout.trim()).toBe("");
  }, 180_000);
});
