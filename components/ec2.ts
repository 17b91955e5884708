// The VPS on AWS: an EC2 instance with IMDSv2 required, an encrypted gp3 root
// volume, an Elastic IP, and a security group that opens SSH only to the
// configured CIDR blocks.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import { appPorts, EdgeConfig, frontRanges, PROJECT } from "../lib/config";
import { HOST_OS } from "../lib/hostos";
import { Connection, Host, HostTarget } from "./remote";

export interface Ec2HostArgs {
  config: EdgeConfig;
  tags: Record<string, string>;
  /** Give the instance a role that may publish CloudWatch metrics (cert-expiry check). */
  publishMetrics?: boolean;
}

function ipRule(cidr: string): { cidrIpv4: string } | { cidrIpv6: string } {
  return cidr.includes(":") ? { cidrIpv6: cidr } : { cidrIpv4: cidr };
}

/** The default VPC, its block and its default subnets (one per AZ): where the host, the ALB and the ALB's targets live. */
export interface DefaultVpc {
  vpcId: pulumi.Output<string>;
  vpcCidr: pulumi.Output<string>;
  subnetIds: pulumi.Output<string[]>;
}

export function defaultVpc(opts: pulumi.InvokeOutputOptions): DefaultVpc {
  const vpc = aws.ec2.getVpcOutput({ default: true }, opts);
  const subnetIds = aws.ec2.getSubnetsOutput(
    {
      filters: [
        { name: "vpc-id", values: [vpc.id] },
        { name: "default-for-az", values: ["true"] },
      ],
    },
    opts,
  ).ids;
  return { vpcId: vpc.id, vpcCidr: vpc.cidrBlock, subnetIds };
}

/** The newest image of hostOs from its publisher (amiId unset). */
export function hostOsAmi(c: EdgeConfig, opts: pulumi.InvokeOutputOptions): pulumi.Output<aws.ec2.GetAmiResult> {
  return aws.ec2.getAmiOutput(
    {
      owners: [HOST_OS[c.hostOs].ami.owner],
      mostRecent: true,
      filters: [
        { name: "name", values: [HOST_OS[c.hostOs].ami.name] },
        { name: "virtualization-type", values: ["hvm"] },
        { name: "architecture", values: ["x86_64"] },
      ],
    },
    opts,
  );
}

/** The trust policy of an instance role: EC2 may assume it (the single host's and the ASG's). */
export const EC2_ASSUME_ROLE_POLICY = JSON.stringify({
  Version: "2012-10-17",
  Statement: [{ Effect: "Allow", Principal: { Service: "ec2.amazonaws.com" }, Action: "sts:AssumeRole" }],
});

export class Ec2Host extends pulumi.ComponentResource implements Host {
  readonly target: HostTarget;
  readonly instance: aws.ec2.Instance;
  readonly securityGroup: aws.ec2.SecurityGroup;
  readonly publicAddress: pulumi.Output<string>;
  readonly vpcId: pulumi.Output<string>;
  readonly vpcCidr: pulumi.Output<string>;
  readonly subnetIds: pulumi.Output<string[]>;
  readonly sshCommand: pulumi.Output<string>;
  /** Generated private key (secret) when no sshPublicKey is configured. */
  readonly privateKey?: pulumi.Output<string>;
  /** The instance's private address (app hosts trust forwarded headers from it and are reached through it). */
  readonly privateAddress: pulumi.Output<string>;
  /** The key pair's name and the image: app instances (appHostCount) take the same. */
  readonly keyName: pulumi.Output<string>;
  readonly amiId: pulumi.Output<string>;

  constructor(name: string, args: Ec2HostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:host:Ec2", name, {}, opts);
    const c = args.config;
    const parent = { parent: this };
    const protect = { parent: this, protect: c.protect };

    const vpc = defaultVpc(parent);
    this.vpcId = vpc.vpcId;
    this.vpcCidr = vpc.vpcCidr;
    this.subnetIds = vpc.subnetIds;

    const amiId = c.amiId ? pulumi.output(c.amiId) : hostOsAmi(c, parent).id;
    this.amiId = amiId;

    // SSH key: the configured public key, or one generated here whose private
    // half lives only in the (encrypted) Pulumi state as a secret.
    let publicKey: pulumi.Input<string>;
    if (c.sshPublicKey) {
      publicKey = c.sshPublicKey;
    } else {
      const key = new tls.PrivateKey(
        `${name}-ssh-key`,
        { algorithm: "ED25519" },
        { parent: this, additionalSecretOutputs: ["privateKeyOpenssh", "privateKeyPem", "privateKeyPemPkcs8"] },
      );
      publicKey = key.publicKeyOpenssh;
      this.privateKey = pulumi.secret(key.privateKeyOpenssh);
    }
    const keyPair = new aws.ec2.KeyPair(`${name}-key`, { publicKey, tags: args.tags }, parent);
    this.keyName = keyPair.keyName;

    this.securityGroup = new aws.ec2.SecurityGroup(
      `${name}-sg`,
      {
        vpcId: vpc.vpcId,
        description: `${PROJECT} host: ${c.frontend === "nginx" ? "HTTP/HTTPS from anywhere" : "app ports from the ALB only"}, SSH from allowed CIDRs only`,
        tags: args.tags,
      },
      parent,
    );
    const sg = this.securityGroup.id;
    new aws.vpc.SecurityGroupEgressRule(
      `${name}-egress-v4`,
      { securityGroupId: sg, ipProtocol: "-1", cidrIpv4: "0.0.0.0/0", description: "all outbound (apt, ACME)" },
      parent,
    );
    new aws.vpc.SecurityGroupEgressRule(
      `${name}-egress-v6`,
      { securityGroupId: sg, ipProtocol: "-1", cidrIpv6: "::/0", description: "all outbound (apt, ACME)" },
      parent,
    );
    c.sshAllowedCidrs.forEach((cidr, i) => {
      new aws.vpc.SecurityGroupIngressRule(
        `${name}-ssh-${i}`,
        { securityGroupId: sg, ipProtocol: "tcp", fromPort: 22, toPort: 22, ...ipRule(cidr), description: "SSH from an allowed CIDR" },
        parent,
      );
    });
    if (c.frontend === "nginx") {
      // 80/443 from everyone, or with restrictHttpToCdn only from the ranges
      // of what stands in front (config validation keeps the rule count per
      // family within AWS's default quota of 60). Rules are named after their
      // block, so a refreshed range list adds and removes only what changed.
      const ranges = c.restrictHttpToCdn ? frontRanges(c) : null;
      const sources: { cidr: string; key: string; what: string }[] = ranges
        ? [...ranges.v4, ...ranges.v6].map((cidr) => ({
            cidr,
            key: `cdn-${cidr.replace(/[^0-9A-Za-z]+/g, "-").replace(/-+$/, "")}`,
            what: c.frontedBy === "cloudflare" ? "from Cloudflare" : "from a trusted proxy",
          }))
        : [
            { cidr: "0.0.0.0/0", key: "v4", what: "" },
            { cidr: "::/0", key: "v6", what: "" },
          ];
      for (const port of [80, 443]) {
        for (const src of sources) {
          const base = port === 80 ? "HTTP (ACME, redirect)" : "HTTPS";
          new aws.vpc.SecurityGroupIngressRule(
            `${name}-${port}-${src.key}`,
            {
              securityGroupId: sg,
              ipProtocol: "tcp",
              fromPort: port,
              toPort: port,
              ...ipRule(src.cidr),
              description: src.what ? `${base} ${src.what}` : base,
            },
            parent,
          );
        }
      }
      if (c.http3) {
        // HTTP/3 runs over QUIC, which is UDP: the TCP rule above does not cover it.
        for (const cidr of ["0.0.0.0/0", "::/0"]) {
          const v = cidr.includes(":") ? "v6" : "v4";
          new aws.vpc.SecurityGroupIngressRule(
            `${name}-443-udp-${v}`,
            { securityGroupId: sg, ipProtocol: "udp", fromPort: 443, toPort: 443, ...ipRule(cidr), description: "HTTP/3 (QUIC)" },
            parent,
          );
        }
      }
    }

    let instanceProfile: aws.iam.InstanceProfile | undefined;
    if (args.publishMetrics) {
      const role = new aws.iam.Role(
        `${name}-role`,
        {
          assumeRolePolicy: EC2_ASSUME_ROLE_POLICY,
          tags: args.tags,
        },
        parent,
      );
      new aws.iam.RolePolicy(
        `${name}-put-metrics`,
        {
          role: role.id,
          policy: JSON.stringify({
            Version: "2012-10-17",
            Statement: [
              {
                Effect: "Allow",
                Action: "cloudwatch:PutMetricData",
                Resource: "*",
                Condition: { StringEquals: { "cloudwatch:namespace": "FastapiEdge" } },
              },
            ],
          }),
        },
        parent,
      );
      instanceProfile = new aws.iam.InstanceProfile(`${name}-profile`, { role: role.name, tags: args.tags }, parent);
    }

    this.instance = new aws.ec2.Instance(
      `${name}-instance`,
      {
        ami: amiId,
        instanceType: c.instanceType,
        keyName: keyPair.keyName,
        subnetId: this.subnetIds.apply((ids) => {
          if (!ids.length) throw new Error("the default VPC has no default subnets");
          return [...ids].sort()[0]!;
        }),
        vpcSecurityGroupIds: [sg],
        associatePublicIpAddress: true,
        metadataOptions: { httpTokens: "required", httpEndpoint: "enabled", httpPutResponseHopLimit: 1 },
        rootBlockDevice: { volumeType: "gp3", volumeSize: c.rootVolumeGb, encrypted: true, deleteOnTermination: true },
        monitoring: false,
        ...(instanceProfile ? { iamInstanceProfile: instanceProfile.name } : {}),
        tags: { ...args.tags, Name: `${PROJECT}-${pulumi.getStack()}` },
        volumeTags: args.tags,
      },
      { ...protect, ignoreChanges: c.amiId ? [] : ["ami"] },
    );
    const eip = new aws.ec2.Eip(`${name}-eip`, { domain: "vpc", instance: this.instance.id, tags: args.tags }, protect);
    this.publicAddress = eip.publicIp;
    this.privateAddress = this.instance.privateIp;

    const user = c.hostUser ?? HOST_OS[c.hostOs].ec2User;
    const connection: Connection = {
      host: eip.publicIp,
      port: 22,
      user,
      ...(this.privateKey ? { privateKey: this.privateKey } : {}),
      ...(c.hostKey ? { hostKey: c.hostKey } : {}),
    };
    this.target = { connection, user, machineId: this.instance.id };
    this.sshCommand = pulumi.interpolate`ssh ${user}@${eip.publicIp}`;
    this.registerOutputs({
      publicIp: this.publicAddress,
      instanceId: this.instance.id,
      securityGroupId: sg,
      sshCommand: this.sshCommand,
      appPorts: appPorts(c),
    });
  }
}
