// Tests for the fastapi-edge-baseline policy pack (policy/), in process:
//
// 1. The pure rules (policy/rules.ts) on literal property bags.
// 2. The real policy objects the pack serves (policy/policies.ts), called the
//    way the policy SDK calls them: validateResource(args, reportViolation)
//    and validateStack(args, reportViolation), with props wrapped in the
//    SDK's own unknown-checking proxy where preview behaviour matters.
// The pack as the CLI runs it: policy-pack.test.ts, and the e2e scenario (a real
// `pulumi preview --policy-pack`).
import { describe, expect, it } from "vitest";
import * as policySdk from "@pulumi/policy";
import type {
  PolicyResource,
  PolicyResourceOptions,
  ResourceValidationArgs,
  ResourceValidationPolicy,
  StackValidationPolicy,
} from "@pulumi/policy";
import {
  appInstancesPrivate,
  appPortsFromEdgeOnly,
  asgElbHealthCheck,
  ebsEncrypted,
  instanceRequiresImdsv2,
  isUnknownValueError,
  launchTemplateHardened,
  listenerTls12AndRedirect,
  noPlaintextCredentialInputs,
  noPlaintextCredentialsInState,
  noSshFromInternet,
  policies,
} from "../../policy/policies";
import * as rules from "../../policy/rules";
import { OPENSSH_PEM, RSA_PEM, SSH_PUBLIC, T, UNKNOWN_STRING } from "../helpers/policy-fixtures";

// The SDK's own proxy (a runtime export whose type is stripped).
const sdkRuntime = policySdk as unknown as {
  unknownCheckingProxy: <T extends object>(o: T) => T;
};
// ---------------------------------------------------------------------------
// harness: call real policies as the SDK does
// ---------------------------------------------------------------------------

function options(additionalSecretOutputs: string[] = []): PolicyResourceOptions {
  return {
    protect: false,
    ignoreChanges: [],
    aliases: [],
    customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 },
    additionalSecretOutputs,
  };
}

function resourceArgs(type: string, props: Record<string, unknown>, additionalSecretOutputs: string[] = []): ResourceValidationArgs {
  return {
    type,
    props,
    urn: `urn:pulumi:test::fastapi-edge::${type}::subject`,
    name: "subject",
    opts: options(additionalSecretOutputs),
    stackTags: new Map<string, string>(),
    isType: () => false,
    asType: () => undefined,
    getConfig<T extends object>(): T {
      return {} as T;
    },
    notApplicable(reason?: string): never {
      throw new Error(`not applicable: ${reason ?? ""}`);
    },
  };
}

async function violations(
  policy: ResourceValidationPolicy,
  type: string,
  props: Record<string, unknown>,
  additionalSecretOutputs: string[] = [],
): Promise<string[]> {
  const fns =
    policy.validateResource === undefined
      ? []
      : Array.isArray(policy.validateResource)
        ? policy.validateResource
        : [policy.validateResource];
  const out: string[] = [];
  const args = resourceArgs(type, props, additionalSecretOutputs);
  for (const fn of fns) await fn(args, (message) => out.push(message));
  return out;
}

function stackResource(name: string, type: string, props: Record<string, unknown>, additionalSecretOutputs: string[] = []): PolicyResource {
  return {
    type,
    props,
    urn: `urn:pulumi:test::fastapi-edge::${type}::${name}`,
    name,
    opts: options(additionalSecretOutputs),
    dependencies: [],
    propertyDependencies: {},
    isType: () => false,
    asType: () => undefined,
  };
}

async function stackViolations(
  policy: StackValidationPolicy,
  resources: PolicyResource[],
): Promise<{ message: string; urn: string | undefined }[]> {
  const out: { message: string; urn: string | undefined }[] = [];
  await policy.validateStack(
    {
      resources,
      stackTags: new Map<string, string>(),
      getConfig<T extends object>(): T {
        return {} as T;
      },
      notApplicable(reason?: string): never {
        throw new Error(`not applicable: ${reason ?? ""}`);
      },
    },
    (message, urn) => out.push({ message, urn }),
  );
  return out;
}

// ---------------------------------------------------------------------------
// the pack as a whole
// ---------------------------------------------------------------------------

describe("policy pack shape", () => {
  it("has the ten policies, unique names, all mandatory", () => {
    const names = policies.map((p) => p.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toEqual([
      "no-ssh-from-internet",
      "instance-requires-imdsv2",
      "ebs-encrypted",
      "lb-listener-tls12-and-https-redirect",
      "no-plaintext-credential-inputs",
      "no-plaintext-credentials-in-state",
      "launch-template-hardened",
      "asg-elb-health-check",
      "app-instances-private",
      "app-ports-from-edge-only",
    ]);
    for (const p of policies) expect(p.enforcementLevel).toBe("mandatory");
  });

  it("ignores resource types a policy does not cover", async () => {
    const open = { ingress: [{ protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"] }] };
    expect(await violations(noSshFromInternet, T.instance, open)).toEqual([]);
    expect(await violations(instanceRequiresImdsv2, T.ebsVolume, {})).toEqual([]);
    expect(await violations(ebsEncrypted, T.securityGroup, {})).toEqual([]);
    expect(await violations(listenerTls12AndRedirect, T.instance, { protocol: "HTTP" })).toEqual([]);
    expect(await violations(launchTemplateHardened, T.instance, {})).toEqual([]);
    expect(await violations(asgElbHealthCheck, T.launchTemplate, {})).toEqual([]);
    const appTags = { tags: { [rules.APP_HOST_ROLE_TAG.key]: rules.APP_HOST_ROLE_TAG.value } };
    expect(await violations(appInstancesPrivate, T.launchTemplate, appTags)).toEqual([]);
    expect(await violations(appPortsFromEdgeOnly, T.instance, { ...appTags, ...open })).toEqual([]);
  });
});

// ---------------------------------------------------------------------------
// (a) SSH
// ---------------------------------------------------------------------------

describe("(a) no-ssh-from-internet", () => {
  it("ruleCoversSsh understands protocols and ranges", () => {
    expect(rules.ruleCoversSsh("tcp", 22, 22)).toBe(true);
    expect(rules.ruleCoversSsh("TCP", 0, 65535)).toBe(true);
    expect(rules.ruleCoversSsh("6", 20, 25)).toBe(true);
    expect(rules.ruleCoversSsh("-1", 0, 0)).toBe(true);
    expect(rules.ruleCoversSsh("all", undefined, undefined)).toBe(true);
    expect(rules.ruleCoversSsh("tcp", -1, -1)).toBe(true);
    expect(rules.ruleCoversSsh("tcp", 23, 443)).toBe(false);
    expect(rules.ruleCoversSsh("tcp", 443, 443)).toBe(false);
    expect(rules.ruleCoversSsh("udp", 0, 65535)).toBe(false);
    expect(rules.ruleCoversSsh("icmp", -1, -1)).toBe(false);
  });

  it("isWorldCidr matches only /0", () => {
    expect(rules.isWorldCidr("0.0.0.0/0")).toBe(true);
    expect(rules.isWorldCidr("::/0")).toBe(true);
    expect(rules.isWorldCidr("10.0.0.0/8")).toBe(false);
    expect(rules.isWorldCidr("203.0.113.7/32")).toBe(false);
    expect(rules.isWorldCidr("2001:db8::/32")).toBe(false);
  });

  it("flags inline SecurityGroup ingress that opens 22 to the world", async () => {
    const bad = [
      { protocol: "tcp", fromPort: 22, toPort: 22, cidrBlocks: ["0.0.0.0/0"] },
      { protocol: "tcp", fromPort: 0, toPort: 65535, ipv6CidrBlocks: ["::/0"] },
      { protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"] },
      { protocol: "6", fromPort: 20, toPort: 25, cidrBlocks: ["10.0.0.0/8", "0.0.0.0/0"] },
    ];
    for (const rule of bad) {
      const v = await violations(noSshFromInternet, T.securityGroup, { ingress: [rule] });
      expect(v, JSON.stringify(rule)).toHaveLength(1);
      expect(v[0]).toMatch(/port 22/);
    }
  });

  it("passes SecurityGroups that keep SSH private or only open web ports", async () => {
    const good = {
      ingress: [
        { protocol: "tcp", fromPort: 22, toPort: 22, cidrBlocks: ["203.0.113.7/32"] },
        { protocol: "tcp", fromPort: 80, toPort: 80, cidrBlocks: ["0.0.0.0/0"], ipv6CidrBlocks: ["::/0"] },
        { protocol: "tcp", fromPort: 443, toPort: 443, cidrBlocks: ["0.0.0.0/0"], ipv6CidrBlocks: ["::/0"] },
        { protocol: "udp", fromPort: 0, toPort: 65535, cidrBlocks: ["0.0.0.0/0"] },
      ],
      egress: [{ protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"] }],
    };
    expect(await violations(noSshFromInternet, T.securityGroup, good)).toEqual([]);
    expect(await violations(noSshFromInternet, T.securityGroup, {})).toEqual([]);
  });

  it("checks aws.ec2.SecurityGroupRule (ingress only)", async () => {
    const open = { type: "ingress", protocol: "tcp", fromPort: 22, toPort: 22, cidrBlocks: ["0.0.0.0/0"] };
    expect(await violations(noSshFromInternet, T.securityGroupRule, open)).toHaveLength(1);
    expect(await violations(noSshFromInternet, T.securityGroupRule, { ...open, type: "egress" })).toEqual([]);
    expect(await violations(noSshFromInternet, T.securityGroupRule, { ...open, cidrBlocks: ["198.51.100.0/24"] })).toEqual([]);
  });

  it("checks aws.vpc.SecurityGroupIngressRule (cidrIpv4/cidrIpv6, ipProtocol -1 = all)", async () => {
    const bad = [
      { ipProtocol: "tcp", fromPort: 22, toPort: 22, cidrIpv4: "0.0.0.0/0" },
      { ipProtocol: "tcp", fromPort: 22, toPort: 22, cidrIpv6: "::/0" },
      { ipProtocol: "-1", cidrIpv4: "0.0.0.0/0" },
      { ipProtocol: "tcp", fromPort: 1, toPort: 1024, cidrIpv4: "0.0.0.0/0" },
    ];
    for (const rule of bad) {
      expect(await violations(noSshFromInternet, T.vpcIngressRule, rule), JSON.stringify(rule)).toHaveLength(1);
    }
    const good = [
      { ipProtocol: "tcp", fromPort: 22, toPort: 22, cidrIpv4: "203.0.113.7/32" },
      { ipProtocol: "tcp", fromPort: 443, toPort: 443, cidrIpv4: "0.0.0.0/0" },
      { ipProtocol: "-1", referencedSecurityGroupId: "sg-0123456789abcdef0" },
    ];
    for (const rule of good) {
      expect(await violations(noSshFromInternet, T.vpcIngressRule, rule), JSON.stringify(rule)).toEqual([]);
    }
  });

  it("lets an unknown CIDR surface as the SDK's preview-unknown error (advisory in preview, enforced in up)", async () => {
    const props = sdkRuntime.unknownCheckingProxy({
      ingress: [{ protocol: "tcp", fromPort: 22, toPort: 22, cidrBlocks: UNKNOWN_STRING }],
    });
    const err = await violations(noSshFromInternet, T.securityGroup, props).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isUnknownValueError(err)).toBe(true);
  });
});

// ---------------------------------------------------------------------------
// (b) IMDSv2
// ---------------------------------------------------------------------------

describe("(b) instance-requires-imdsv2", () => {
  it("passes httpTokens=required", async () => {
    expect(
      await violations(instanceRequiresImdsv2, T.instance, { metadataOptions: { httpTokens: "required", httpEndpoint: "enabled" } }),
    ).toEqual([]);
  });
  it("flags optional or missing metadata options", async () => {
    expect(await violations(instanceRequiresImdsv2, T.instance, { metadataOptions: { httpTokens: "optional" } })).toHaveLength(1);
    expect(await violations(instanceRequiresImdsv2, T.instance, { metadataOptions: {} })).toHaveLength(1);
    const v = await violations(instanceRequiresImdsv2, T.instance, { instanceType: "t3.micro" });
    expect(v).toHaveLength(1);
    expect(v[0]).toMatch(/IMDSv1/);
  });
});

// ---------------------------------------------------------------------------
// (c) EBS encryption
// ---------------------------------------------------------------------------

describe("(c) ebs-encrypted", () => {
  it("passes an instance with an encrypted root volume", async () => {
    expect(
      await violations(ebsEncrypted, T.instance, {
        rootBlockDevice: { encrypted: true, volumeType: "gp3", volumeSize: 20 },
        ebsBlockDevices: [{ deviceName: "/dev/sdf", encrypted: true }],
      }),
    ).toEqual([]);
  });
  it("flags a missing, unencrypted or partially encrypted instance", async () => {
    expect(await violations(ebsEncrypted, T.instance, {})).toHaveLength(1);
    expect(await violations(ebsEncrypted, T.instance, { rootBlockDevice: { encrypted: false } })).toHaveLength(1);
    expect(await violations(ebsEncrypted, T.instance, { rootBlockDevice: { volumeSize: 20 } })).toHaveLength(1);
    const v = await violations(ebsEncrypted, T.instance, {
      rootBlockDevice: { encrypted: true },
      ebsBlockDevices: [{ deviceName: "/dev/sdf", encrypted: false }],
    });
    expect(v).toEqual([expect.stringMatching(/ebsBlockDevices\[0\] \(\/dev\/sdf\)/)]);
  });
  it("checks aws.ebs.Volume", async () => {
    expect(await violations(ebsEncrypted, T.ebsVolume, { size: 10, encrypted: true })).toEqual([]);
    expect(await violations(ebsEncrypted, T.ebsVolume, { size: 10, encrypted: false })).toHaveLength(1);
    expect(await violations(ebsEncrypted, T.ebsVolume, { size: 10 })).toHaveLength(1);
  });
});

// ---------------------------------------------------------------------------
// (f) launch templates and Auto Scaling Groups
// ---------------------------------------------------------------------------

describe("(f) launch-template-hardened", () => {
  const hardened = {
    metadataOptions: { httpTokens: "required", httpPutResponseHopLimit: 1 },
    blockDeviceMappings: [{ deviceName: "/dev/xvda", ebs: { volumeType: "gp3", encrypted: "true" } }],
    networkInterfaces: [{ deviceIndex: 0, associatePublicIpAddress: "false", securityGroups: ["sg-1"] }],
  };
  it("passes IMDSv2, encrypted volumes and no public address", async () => {
    expect(await violations(launchTemplateHardened, T.launchTemplate, hardened)).toEqual([]);
    // Booleans as the provider's schema would take them elsewhere count too.
    const booleans = {
      ...hardened,
      blockDeviceMappings: [{ deviceName: "/dev/xvda", ebs: { encrypted: true } }],
      networkInterfaces: [{ associatePublicIpAddress: false }],
    };
    expect(await violations(launchTemplateHardened, T.launchTemplate, booleans)).toEqual([]);
  });
  it("flags IMDSv1", async () => {
    const v = await violations(launchTemplateHardened, T.launchTemplate, { ...hardened, metadataOptions: { httpTokens: "optional" } });
    expect(v).toEqual([expect.stringMatching(/httpTokens is "optional"/)]);
    expect(await violations(launchTemplateHardened, T.launchTemplate, { ...hardened, metadataOptions: undefined })).toEqual([
      expect.stringMatching(/not set \(IMDSv1 allowed\)/),
    ]);
  });
  it("flags an unencrypted or undeclared volume", async () => {
    const plain = {
      ...hardened,
      blockDeviceMappings: [
        { deviceName: "/dev/xvda", ebs: { encrypted: "false" } },
        { deviceName: "/dev/sdf", ebs: {} },
      ],
    };
    expect(await violations(launchTemplateHardened, T.launchTemplate, plain)).toEqual([
      expect.stringMatching(/\/dev\/xvda\) ebs.encrypted is "false"/),
      expect.stringMatching(/\/dev\/sdf\) ebs.encrypted is null/),
    ]);
    expect(await violations(launchTemplateHardened, T.launchTemplate, { ...hardened, blockDeviceMappings: [] })).toEqual([
      expect.stringMatching(/declares no EBS volume/),
    ]);
  });
  it("flags a public address, asked for or left to the subnet", async () => {
    const pub = { ...hardened, networkInterfaces: [{ deviceIndex: 0, associatePublicIpAddress: "true" }] };
    const v = await violations(launchTemplateHardened, T.launchTemplate, pub);
    expect(v).toEqual([expect.stringMatching(/associatePublicIpAddress is true/), expect.stringMatching(/the subnet decides/)]);
    const { networkInterfaces: _n, ...noNic } = hardened;
    expect(await violations(launchTemplateHardened, T.launchTemplate, noNic)).toEqual([expect.stringMatching(/the subnet decides/)]);
  });
});

describe("(f) asg-elb-health-check", () => {
  it("passes ELB health checks behind a load balancer, and a group behind none", async () => {
    expect(await violations(asgElbHealthCheck, T.autoScalingGroup, { targetGroupArns: ["arn:tg"], healthCheckType: "ELB" })).toEqual([]);
    expect(await violations(asgElbHealthCheck, T.autoScalingGroup, { healthCheckType: "EC2" })).toEqual([]);
  });
  it("flags EC2 (or unset) health checks behind target groups, classic load balancers or traffic sources", async () => {
    for (const attach of [{ targetGroupArns: ["arn:tg"] }, { loadBalancers: ["clb"] }, { trafficSources: [{ identifier: "arn:tg" }] }]) {
      expect(await violations(asgElbHealthCheck, T.autoScalingGroup, { ...attach, healthCheckType: "EC2" })).toEqual([
        expect.stringMatching(/healthCheckType is "EC2" but the group is behind a load balancer/),
      ]);
      expect(await violations(asgElbHealthCheck, T.autoScalingGroup, attach)).toEqual([expect.stringMatching(/not set/)]);
    }
  });
});

// ---------------------------------------------------------------------------
// (g) the app instances behind the edge (appHostCount)
// ---------------------------------------------------------------------------

describe("(g) app-instances-private", () => {
  const role = { [rules.APP_HOST_ROLE_TAG.key]: rules.APP_HOST_ROLE_TAG.value };
  const app = { tags: { Project: "fastapi-edge", ...role, Name: "fastapi-edge-dev-app-0" }, associatePublicIpAddress: false };

  it("passes an app host without a public address, ignores instances without the role tag", async () => {
    expect(rules.isAppHostResource(app)).toBe(true);
    expect(await violations(appInstancesPrivate, T.instance, app)).toEqual([]);
    // The edge (and anything else untagged or tagged another role) is not an app host.
    expect(
      await violations(appInstancesPrivate, T.instance, { tags: { Name: "fastapi-edge-dev-app-0" }, associatePublicIpAddress: true }),
    ).toEqual([]);
    expect(await violations(appInstancesPrivate, T.instance, { tags: { [rules.APP_HOST_ROLE_TAG.key]: "edge" } })).toEqual([]);
    expect(await violations(appInstancesPrivate, T.instance, {})).toEqual([]);
  });

  it("flags a public address, asked for or left to the subnet, naming the key and the fix", async () => {
    expect(await violations(appInstancesPrivate, T.instance, { ...app, associatePublicIpAddress: true })).toEqual([
      "associatePublicIpAddress is true; app hosts are reached through the edge only: set associatePublicIpAddress: false.",
    ]);
    const { associatePublicIpAddress: _a, ...unset } = app;
    expect(await violations(appInstancesPrivate, T.instance, unset)).toEqual([
      expect.stringMatching(/^associatePublicIpAddress is not set, so the subnet decides .*set associatePublicIpAddress: false\.$/),
    ]);
    expect(await violations(appInstancesPrivate, T.instance, { ...app, associatePublicIpAddress: "false" })).toEqual([
      expect.stringMatching(/^associatePublicIpAddress is "false";/),
    ]);
  });

  it("lets an unknown value surface as the SDK's preview-unknown error", async () => {
    const props = sdkRuntime.unknownCheckingProxy({ ...app, associatePublicIpAddress: UNKNOWN_STRING });
    const err = await violations(appInstancesPrivate, T.instance, props).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isUnknownValueError(err)).toBe(true);
  });
});

describe("(g) app-ports-from-edge-only", () => {
  const role = { [rules.APP_HOST_ROLE_TAG.key]: rules.APP_HOST_ROLE_TAG.value };
  const edgeSg = "sg-0123456789abcdef0";
  const vpcRule = { securityGroupId: "sg-0aaaaaaaaaaaaaaaa", ipProtocol: "tcp", fromPort: 8000, toPort: 8001, tags: role };

  it("passes the component's shape: a tagged group without inline ingress, rules that reference the edge's group", async () => {
    expect(await violations(appPortsFromEdgeOnly, T.securityGroup, { vpcId: "vpc-1", tags: role })).toEqual([]);
    expect(await violations(appPortsFromEdgeOnly, T.vpcIngressRule, { ...vpcRule, referencedSecurityGroupId: edgeSg })).toEqual([]);
    expect(
      await violations(appPortsFromEdgeOnly, T.securityGroup, {
        tags: role,
        ingress: [{ protocol: "tcp", fromPort: 22, toPort: 22, securityGroups: [edgeSg], cidrBlocks: [] }],
      }),
    ).toEqual([]);
  });

  it("ignores groups and rules without the role tag (the edge admits the internet on 80/443)", async () => {
    const open = { ingress: [{ protocol: "tcp", fromPort: 443, toPort: 443, cidrBlocks: ["0.0.0.0/0"] }] };
    expect(await violations(appPortsFromEdgeOnly, T.securityGroup, { ...open, tags: { Project: "fastapi-edge" } })).toEqual([]);
    expect(
      await violations(appPortsFromEdgeOnly, T.vpcIngressRule, { ipProtocol: "tcp", fromPort: 443, toPort: 443, cidrIpv4: "0.0.0.0/0" }),
    ).toEqual([]);
  });

  it("flags inline ingress with CIDR or prefix-list sources, or without a source group", async () => {
    const v = await violations(appPortsFromEdgeOnly, T.securityGroup, {
      tags: role,
      ingress: [
        { protocol: "tcp", fromPort: 8000, toPort: 8001, cidrBlocks: ["10.0.0.0/16"], securityGroups: [edgeSg] },
        { protocol: "tcp", fromPort: 22, toPort: 22, ipv6CidrBlocks: ["::/0"], prefixListIds: ["pl-12345678"] },
        { protocol: "-1", fromPort: 0, toPort: 0, self: true },
      ],
    });
    expect(v).toEqual([
      "ingress[0] (tcp 8000-8001) admits cidrBlocks 10.0.0.0/16; admit the app hosts' ports only from the edge's security group (securityGroups) and drop cidrBlocks.",
      expect.stringMatching(/^ingress\[1\] \(tcp 22-22\) admits ipv6CidrBlocks ::\/0; .*drop ipv6CidrBlocks\.$/),
      expect.stringMatching(/^ingress\[1\] \(tcp 22-22\) admits prefixListIds pl-12345678; .*drop prefixListIds\.$/),
      expect.stringMatching(
        /^ingress\[1\] \(tcp 22-22\) names no source security group; .*set securityGroups: \[<edge security group id>\]\.$/,
      ),
      expect.stringMatching(/^ingress\[2\] \(all traffic\) names no source security group;/),
    ]);
  });

  it("flags vpc ingress rules with a CIDR or prefix-list source, or without referencedSecurityGroupId", async () => {
    expect(await violations(appPortsFromEdgeOnly, T.vpcIngressRule, { ...vpcRule, cidrIpv4: "0.0.0.0/0" })).toEqual([
      "ingress rule (tcp 8000-8001) admits cidrIpv4 0.0.0.0/0; admit the app hosts' ports only from the edge's security group (referencedSecurityGroupId) and drop cidrIpv4.",
      "ingress rule (tcp 8000-8001) has no referencedSecurityGroupId; admit the app hosts' ports only from the edge's security group: set referencedSecurityGroupId to the edge security group's id.",
    ]);
    expect(
      await violations(appPortsFromEdgeOnly, T.vpcIngressRule, {
        ...vpcRule,
        cidrIpv6: "2001:db8::/32",
        referencedSecurityGroupId: edgeSg,
      }),
    ).toEqual([expect.stringMatching(/admits cidrIpv6 2001:db8::\/32; .*drop cidrIpv6\.$/)]);
    expect(await violations(appPortsFromEdgeOnly, T.vpcIngressRule, { ...vpcRule, prefixListId: "pl-12345678" })).toEqual([
      expect.stringMatching(/admits prefixListId pl-12345678; .*drop prefixListId\.$/),
      expect.stringMatching(/has no referencedSecurityGroupId/),
    ]);
  });

  it("lets an unknown source surface as the SDK's preview-unknown error", async () => {
    const props = sdkRuntime.unknownCheckingProxy({ ...vpcRule, cidrIpv4: UNKNOWN_STRING });
    const err = await violations(appPortsFromEdgeOnly, T.vpcIngressRule, props).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isUnknownValueError(err)).toBe(true);
  });
});

// ---------------------------------------------------------------------------
// (d) listeners
// ---------------------------------------------------------------------------

describe("(d) lb-listener-tls12-and-https-redirect", () => {
  const redirect = { type: "redirect", redirect: { protocol: "HTTPS", port: "443", statusCode: "HTTP_301" } };

  it("accepts HTTPS with every allow-listed TLS 1.2+ policy, for lb and alb listeners", async () => {
    for (const sslPolicy of rules.TLS12_PLUS_SSL_POLICIES) {
      expect(sslPolicy).not.toMatch(/-1-0-|-1-1-|2016-08|FS-2018-06/);
      expect(await violations(listenerTls12AndRedirect, T.lbListener, { protocol: "HTTPS", port: 443, sslPolicy })).toEqual([]);
    }
    expect(
      await violations(listenerTls12AndRedirect, T.albListener, {
        protocol: "HTTPS",
        sslPolicy: "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
      }),
    ).toEqual([]);
  });

  it("rejects old or missing ssl policies on HTTPS and TLS listeners", async () => {
    for (const sslPolicy of ["ELBSecurityPolicy-2016-08", "ELBSecurityPolicy-TLS13-1-0-2021-06", "ELBSecurityPolicy-TLS-1-1-2017-01"]) {
      expect(await violations(listenerTls12AndRedirect, T.lbListener, { protocol: "HTTPS", sslPolicy }), sslPolicy).toHaveLength(1);
    }
    const unset = await violations(listenerTls12AndRedirect, T.lbListener, { protocol: "HTTPS", port: 443 });
    expect(unset).toEqual([expect.stringMatching(/2016-08/)]);
    expect(
      await violations(listenerTls12AndRedirect, T.albListener, { protocol: "TLS", sslPolicy: "ELBSecurityPolicy-TLS13-1-1-2021-06" }),
    ).toHaveLength(1);
  });

  it("accepts HTTP listeners that only redirect to HTTPS", async () => {
    expect(await violations(listenerTls12AndRedirect, T.lbListener, { protocol: "HTTP", port: 80, defaultActions: [redirect] })).toEqual(
      [],
    );
    expect(await violations(listenerTls12AndRedirect, T.lbListener, { port: 80, defaultActions: [redirect] })).toEqual([]);
  });

  it("rejects HTTP listeners that serve traffic or redirect elsewhere", async () => {
    const forward = { type: "forward", targetGroupArn: "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/app/abc" };
    expect(await violations(listenerTls12AndRedirect, T.lbListener, { protocol: "HTTP", defaultActions: [forward] })).toHaveLength(1);
    expect(await violations(listenerTls12AndRedirect, T.lbListener, { protocol: "HTTP", defaultActions: [] })).toHaveLength(1);
    expect(
      await violations(listenerTls12AndRedirect, T.lbListener, {
        protocol: "HTTP",
        defaultActions: [{ type: "redirect", redirect: { protocol: "HTTP", port: "8080", statusCode: "HTTP_302" } }],
      }),
    ).toHaveLength(1);
    expect(
      await violations(listenerTls12AndRedirect, T.lbListener, {
        protocol: "HTTP",
        defaultActions: [{ type: "fixed-response", fixedResponse: { contentType: "text/plain", statusCode: "200" } }],
      }),
    ).toHaveLength(1);
  });

  it("ignores TCP/UDP listeners", async () => {
    expect(await violations(listenerTls12AndRedirect, T.lbListener, { protocol: "TCP", port: 22 })).toEqual([]);
  });
});

// ---------------------------------------------------------------------------
// (e) credentials
// ---------------------------------------------------------------------------

describe("(e) credential detection rules", () => {
  it("recognises private key material, also base64-encoded", () => {
    expect(rules.containsPrivateKeyMaterial(RSA_PEM)).toBe(true);
    expect(rules.containsPrivateKeyMaterial(OPENSSH_PEM)).toBe(true);
    expect(rules.containsPrivateKeyMaterial(`#!/bin/bash\ncat > /root/k <<EOF\n${RSA_PEM}EOF\n`)).toBe(true);
    expect(rules.containsPrivateKeyMaterial(Buffer.from(`#!/bin/bash\necho '${OPENSSH_PEM}'`).toString("base64"))).toBe(true);
    expect(rules.containsPrivateKeyMaterial(SSH_PUBLIC)).toBe(false);
    expect(rules.containsPrivateKeyMaterial(Buffer.from("#!/bin/bash\napt-get install -y nginx\n".repeat(4)).toString("base64"))).toBe(
      false,
    );
    expect(rules.containsPrivateKeyMaterial(["-----BEGIN", "PUBLIC KEY-----"].join(" "))).toBe(false);
  });

  it("tells credentials from references to them", () => {
    for (const k of [
      "privateKey",
      "private_key",
      "password",
      "masterPassword",
      "passwd",
      "passphrase",
      "secret",
      "clientSecret",
      "secretString",
      "secretKey",
    ]) {
      expect(rules.isCredentialName(k), k).toBe(true);
    }
    for (const k of [
      "secretArn",
      "secretId",
      "passwordLength",
      "secretName",
      "privateKeyPemWo",
      "kmsKeyId",
      "httpTokens",
      "publicKeyOpenssh",
      "privateKeyFile",
    ]) {
      expect(rules.isCredentialName(k), k).toBe(false);
    }
  });
});

describe("(e) no-plaintext-credential-inputs (resource policy)", () => {
  it("allows key material in a schema-secret property (SDK-provided additionalSecretOutputs)", async () => {
    // command.remote.Command marks `connection` secret; tls.PrivateKey its key outputs.
    expect(
      await violations(
        noPlaintextCredentialInputs,
        "command:remote:Command",
        {
          connection: { host: "203.0.113.10", user: "admin", privateKey: OPENSSH_PEM },
          create: "sudo nginx -t && sudo systemctl reload nginx",
        },
        ["connection"],
      ),
    ).toEqual([]);
    expect(
      await violations(
        noPlaintextCredentialInputs,
        "tls:index/privateKey:PrivateKey",
        { algorithm: "ED25519", privateKeyPem: RSA_PEM, privateKeyOpenssh: OPENSSH_PEM, publicKeyOpenssh: SSH_PUBLIC },
        ["privateKeyOpenssh", "privateKeyPem", "privateKeyPemPkcs8"],
      ),
    ).toEqual([]);
    expect(
      await violations(noPlaintextCredentialInputs, "aws:rds/instance:Instance", { password: "hunter2hunter2" }, [
        "password",
        "passwordWo",
      ]),
    ).toEqual([]);
  });

  it("flags a private key copied into a plain property (command script, userData, base64 userData, tags)", async () => {
    const cases: [string, Record<string, unknown>][] = [
      ["command:remote:Command", { connection: { host: "h", privateKey: OPENSSH_PEM }, create: `echo '${OPENSSH_PEM}' > ~/.ssh/id` }],
      [T.instance, { userData: `#!/bin/bash\ncat > /etc/ssl/private/k.pem <<'EOF'\n${RSA_PEM}EOF\n` }],
      [T.instance, { userDataBase64: Buffer.from(`#!/bin/bash\necho '${RSA_PEM}'`).toString("base64") }],
      [T.instance, { tags: { Name: "edge", debugKey: RSA_PEM } }],
    ];
    for (const [type, props] of cases) {
      const v = await violations(noPlaintextCredentialInputs, type, props, type === "command:remote:Command" ? ["connection"] : []);
      expect(v, `${type} ${Object.keys(props).join(",")}`).toHaveLength(1);
      expect(v[0]).toMatch(/private key material/);
    }
  });

  it("flags credential-named plain strings, passes references and public keys", async () => {
    const v = await violations(
      noPlaintextCredentialInputs,
      "command:remote:Command",
      {
        connection: { host: "h", user: "admin" },
        create: "./deploy.sh",
        environment: { DB_PASSWORD: "hunter2hunter2", APP_ENV: "staging" },
      },
      ["connection"],
    );
    expect(v).toEqual([expect.stringMatching(/"environment\.DB_PASSWORD".*additionalSecretOutputs/)]);
    // the same resource with `environment` declared secret passes
    expect(
      await violations(noPlaintextCredentialInputs, "command:remote:Command", { environment: { DB_PASSWORD: "x" } }, [
        "connection",
        "environment",
      ]),
    ).toEqual([]);
    expect(await violations(noPlaintextCredentialInputs, "aws:ec2/keyPair:KeyPair", { keyName: "edge", publicKey: SSH_PUBLIC })).toEqual(
      [],
    );
    expect(
      await violations(
        noPlaintextCredentialInputs,
        "aws:secretsmanager/secretVersion:SecretVersion",
        {
          secretId: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:edge",
          secretString: "s3cr3t",
        },
        ["secretBinary", "secretString", "secretStringWo"],
      ),
    ).toEqual([]);
    expect(
      await violations(noPlaintextCredentialInputs, T.instance, {
        tags: { "secret-rotation": "enabled" },
        metadataOptions: { httpTokens: "required" },
        passwordData: "",
        getPasswordData: false,
      }),
    ).toEqual([]);
  });

  it("skips unknown values (preview) and still checks the known ones", async () => {
    const props = sdkRuntime.unknownCheckingProxy({
      connection: { host: UNKNOWN_STRING, privateKey: OPENSSH_PEM },
      create: UNKNOWN_STRING,
      userData: `echo '${RSA_PEM}'`,
    });
    const v = await violations(noPlaintextCredentialInputs, T.instance, props, ["connection"]);
    expect(v).toEqual([expect.stringMatching(/"userData" contains private key material/)]);
  });
});

describe("(e) no-plaintext-credentials-in-state (stack policy)", () => {
  it("passes a stack where the generated key only flows into secret properties", async () => {
    const v = await stackViolations(noPlaintextCredentialsInState, [
      stackResource("deploy-key", "tls:index/privateKey:PrivateKey", { privateKeyOpenssh: OPENSSH_PEM, publicKeyOpenssh: SSH_PUBLIC }, [
        "privateKeyOpenssh",
        "privateKeyPem",
        "privateKeyPemPkcs8",
      ]),
      stackResource("edge-key", "aws:ec2/keyPair:KeyPair", { publicKey: SSH_PUBLIC, keyName: "edge" }),
      stackResource(
        "push-nginx",
        "command:remote:Command",
        { connection: { host: "203.0.113.10", privateKey: OPENSSH_PEM }, create: "sudo nginx -t", stdout: "ok" },
        ["connection"],
      ),
      // stack exports cannot be judged (secret markers are stripped): skipped
      stackResource("fastapi-edge-staging", T.stack, { sshPrivateKey: OPENSSH_PEM, url: "https://staging.example.com" }),
    ]);
    expect(v).toEqual([]);
  });

  it("reports every leak with the offending resource's URN", async () => {
    const leakyCommand = stackResource(
      "write-key",
      "command:remote:Command",
      {
        connection: { host: "203.0.113.10", privateKey: OPENSSH_PEM },
        create: `printf '%s' '${OPENSSH_PEM}' > ~/.ssh/id_ed25519`,
      },
      ["connection"],
    );
    const leakyInstance = stackResource("edge", T.instance, { userData: `#!/bin/bash\necho '${RSA_PEM}' > /root/key` });
    const unmarkedKey = stackResource("bad-key", "tls:index/privateKey:PrivateKey", { privateKeyPem: RSA_PEM });
    const v = await stackViolations(noPlaintextCredentialsInState, [leakyCommand, leakyInstance, unmarkedKey]);
    expect(v.map((x) => x.urn)).toEqual([leakyCommand.urn, leakyInstance.urn, unmarkedKey.urn]);
    expect(v[0]?.message).toMatch(/^write-key: property "create" contains private key material/);
    expect(v[2]?.message).toMatch(/^bad-key: property "privateKeyPem"/);
  });
});

// ---------------------------------------------------------------------------
// end to end: the pack as the Pulumi CLI runs it
// ---------------------------------------------------------------------------
