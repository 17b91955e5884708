// Runs the whole program (index.ts) under Pulumi mocks with a given stack
// config and returns every resource it registered, with its inputs.
import * as pulumi from "@pulumi/pulumi";
import { vi } from "vitest";

export interface MockResource {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
  /** Inputs with secrets still wrapped, to check what is secret. */
  id: string;
}

export interface ProgramRun {
  resources: MockResource[];
  outputs: Record<string, unknown>;
  ofType(type: string): MockResource[];
  one(type: string, nameIncludes?: string): MockResource;
  /** The names of the resources a resource was registered to depend on (dependsOn, and through its inputs). */
  dependencies(name: string): string[];
}

const FAKE_PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

export async function runProgram(
  config: Record<string, string>,
  opts: { secrets?: Record<string, string>; stack?: string } = {},
): Promise<ProgramRun> {
  const resources: MockResource[] = [];
  await pulumi.runtime.setMocks(
    {
      newResource(args: pulumi.runtime.MockResourceArgs): { id: string; state: Record<string, unknown> } {
        const id = `${args.name}-id`;
        resources.push({ type: args.type, name: args.name, inputs: args.inputs as Record<string, unknown>, id });
        const state: Record<string, unknown> = { ...args.inputs };
        switch (args.type) {
          case "tls:index/privateKey:PrivateKey":
            state.publicKeyOpenssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockMockMock generated";
            state.privateKeyOpenssh = FAKE_PRIVATE_KEY;
            break;
          case "aws:ec2/keyPair:KeyPair":
            state.keyName = `${args.name}-keyname`;
            break;
          case "aws:ec2/instance:Instance": {
            // The edge (host-instance) and the app instances (app-instance-N) in 172.31.0.0/16.
            const n = /-(\d+)$/.exec(args.name);
            state.privateIp = n ? `172.31.1.${11 + Number(n[1])}` : "172.31.0.10";
            break;
          }
          case "aws:ec2/eip:Eip":
            state.publicIp = "203.0.113.10";
            break;
          case "aws:lb/loadBalancer:LoadBalancer":
            state.dnsName = "alb-123.eu-west-1.elb.amazonaws.com";
            state.zoneId = "Z32O12XQLNTSW2";
            state.arn = `arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/${args.name}`;
            state.arnSuffix = `app/${args.name}/50dc6c495c0c9188`;
            break;
          case "aws:lb/targetGroup:TargetGroup":
            state.arn = `arn:mock:${args.type}:${args.name}`;
            state.name = args.name;
            state.arnSuffix = `targetgroup/${args.name}/943f017f100becff`;
            break;
          case "aws:s3/bucket:Bucket":
            state.bucket = `${String(args.inputs.bucketPrefix ?? "")}20261130`;
            state.arn = `arn:aws:s3:::${String(state.bucket)}`;
            state.region = "eu-west-1";
            break;
          case "aws:s3/bucketObjectv2:BucketObjectv2":
            state.versionId = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY";
            break;
          case "aws:ec2/launchTemplate:LaunchTemplate":
            state.latestVersion = 1;
            break;
          case "aws:acm/certificate:Certificate":
            state.arn = "arn:aws:acm:eu-west-1:123456789012:certificate/abc";
            state.domainValidationOptions = [
              {
                domainName: args.inputs.domainName,
                resourceRecordName: "_x.api.example.com",
                resourceRecordType: "CNAME",
                resourceRecordValue: "_y.acm-validations.aws",
              },
            ];
            break;
          case "aws:route53/record:Record":
            state.fqdn = args.inputs.name;
            break;
          default:
            state.arn = state.arn ?? `arn:mock:${args.type}:${args.name}`;
            state.name = state.name ?? args.name;
        }
        return { id, state };
      },
      call(args: pulumi.runtime.MockCallArgs): Record<string, unknown> {
        switch (args.token) {
          case "aws:ec2/getVpc:getVpc":
            return { id: "vpc-123", cidrBlock: "172.31.0.0/16" };
          case "aws:ec2/getSubnets:getSubnets":
            return { ids: ["subnet-b", "subnet-a"] };
          case "aws:ec2/getAmi:getAmi": {
            // A lookup by id (albAutoScaling with amiId) finds that image.
            const byId = (args.inputs.filters as { name: string; values: string[] }[] | undefined)?.find((f) => f.name === "image-id");
            return {
              id: byId?.values[0] ?? "ami-0123456789abcdef0",
              name: "ubuntu-noble",
              rootDeviceName: byId ? "/dev/sda1" : "/dev/xvda",
            };
          }
          default:
            return args.inputs;
        }
      },
    },
    "fastapi-edge",
    opts.stack ?? "test",
    false,
  );
  // Record each registration's dependencies (URNs), which the mocks' newResource is not given.
  const deps = new Map<string, string[]>();
  type Req = { getName(): string; getDependenciesList(): string[] };
  type Monitor = { registerResource(req: Req, cb: unknown): unknown };
  const monitor = pulumi.runtime.getMonitor() as unknown as Monitor | undefined;
  if (monitor) {
    const register = monitor.registerResource.bind(monitor);
    monitor.registerResource = (req, cb) => {
      deps.set(req.getName(), req.getDependenciesList());
      return register(req, cb);
    };
  }
  const all: Record<string, string> = {};
  for (const [k, v] of Object.entries(config)) all[`fastapi-edge:${k}`] = v;
  all["aws:region"] = "eu-west-1";
  const secretKeys: string[] = [];
  for (const [k, v] of Object.entries(opts.secrets ?? {})) {
    all[`fastapi-edge:${k}`] = v;
    secretKeys.push(`fastapi-edge:${k}`);
  }
  pulumi.runtime.setAllConfig(all, secretKeys);
  vi.resetModules();
  const mod = (await import("../../index")) as Record<string, unknown>;
  const outputs: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(mod)) {
    outputs[k] = pulumi.Output.isInstance(v) ? await resolve(v) : v;
  }
  // Let every registration settle.
  await new Promise((r) => setTimeout(r, 50));
  return {
    resources,
    outputs,
    ofType: (type) => resources.filter((r) => r.type === type),
    dependencies: (name) => (deps.get(name) ?? []).map((urn) => urn.slice(urn.lastIndexOf("::") + 2)),
    one(type, nameIncludes) {
      const found = resources.filter((r) => r.type === type && (!nameIncludes || r.name.includes(nameIncludes)));
      if (found.length !== 1)
        throw new Error(
          `expected one ${type}${nameIncludes ? ` named *${nameIncludes}*` : ""}, found ${found.length}: ${resources.map((r) => `${r.type} ${r.name}`).join("\n")}`,
        );
      return found[0]!;
    },
  };
}

export function resolve<T>(o: pulumi.Output<T>): Promise<T> {
  return new Promise((res) => o.apply((v) => res(v)));
}

export { FAKE_PRIVATE_KEY };

const SECRET_SIG = "4dabf18193072939515e22adb298388d";

/** True when a mock input value is a Pulumi secret. */
export function isSecretValue(v: unknown): boolean {
  return typeof v === "object" && v !== null && (v as Record<string, unknown>)[SECRET_SIG] === "1b47061264138c4ac30d75fd1eb44270";
}

/** A mock input with secret wrappers removed (recursively). */
export function unwrap<T = Record<string, unknown>>(v: unknown): T {
  if (isSecretValue(v)) return unwrap<T>((v as { value: unknown }).value);
  if (Array.isArray(v)) return v.map((x) => unwrap(x)) as T;
  if (typeof v === "object" && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unwrap(x)])) as T;
  return v as T;
}
