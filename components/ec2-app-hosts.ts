// appHostCount: the EC2 app instances behind the nginx edge, in the edge's VPC
// with no public address. Their security group admits the app ports and SSH
// from the edge's security group only; host steps reach them through the edge.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { appPorts, EdgeConfig, PROJECT } from "../lib/config";
import { HOST_OS } from "../lib/hostos";
import { PrivateHost } from "./remote";

/**
 * The marker the policy pack's app-instances-private and app-ports-from-edge-only
 * rules look for (APP_HOST_ROLE_TAG in policy/rules.ts; the pack can't import the
 * program, test/unit/multi-host.test.ts checks the two agree).
 */
export const APP_HOST_ROLE_TAG = { "fastapi-edge:role": "app-host" } as const;

export interface Ec2AppHostsArgs {
  config: EdgeConfig;
  tags: Record<string, string>;
  vpcId: pulumi.Input<string>;
  /** The edge's security group: the only source the app instances admit. */
  edgeSecurityGroupId: pulumi.Input<string>;
  /** The edge's key pair and image (Ec2Host). */
  keyName: pulumi.Input<string>;
  amiId: pulumi.Input<string>;
}

export class Ec2AppHosts extends pulumi.ComponentResource {
  readonly securityGroup: aws.ec2.SecurityGroup;
  readonly instances: aws.ec2.Instance[] = [];
  /** The instances as app hosts, in order (app-0, app-1, ...). */
  readonly hosts: { key: string; host: PrivateHost }[] = [];

  constructor(name: string, args: Ec2AppHostsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:host:Ec2AppHosts", name, {}, opts);
    const c = args.config;
    const parent = { parent: this };
    const ports = appPorts(c);
    const tags = { ...args.tags, ...APP_HOST_ROLE_TAG };

    this.securityGroup = new aws.ec2.SecurityGroup(
      `${name}-sg`,
      {
        vpcId: args.vpcId,
        description: `${PROJECT} app hosts: app ports and SSH from the edge's security group only`,
        tags,
      },
      parent,
    );
    const sg = this.securityGroup.id;
    new aws.vpc.SecurityGroupEgressRule(
      `${name}-egress-v4`,
      { securityGroupId: sg, ipProtocol: "-1", cidrIpv4: "0.0.0.0/0", description: "all outbound (apt through the subnet's NAT)", tags },
      parent,
    );
    new aws.vpc.SecurityGroupIngressRule(
      `${name}-app`,
      {
        securityGroupId: sg,
        ipProtocol: "tcp",
        fromPort: ports[0]!,
        toPort: ports[ports.length - 1]!,
        referencedSecurityGroupId: args.edgeSecurityGroupId,
        description: "app ports from the nginx edge",
        tags,
      },
      parent,
    );
    new aws.vpc.SecurityGroupIngressRule(
      `${name}-ssh`,
      {
        securityGroupId: sg,
        ipProtocol: "tcp",
        fromPort: 22,
        toPort: 22,
        referencedSecurityGroupId: args.edgeSecurityGroupId,
        description: "SSH from the edge (the bastion of host steps)",
        tags,
      },
      parent,
    );

    const user = c.hostUser ?? HOST_OS[c.hostOs].ec2User;
    for (let i = 0; i < c.appHostCount; i++) {
      const instance = new aws.ec2.Instance(
        `${name}-${i}`,
        {
          ami: args.amiId,
          instanceType: c.instanceType,
          keyName: args.keyName,
          // Config validation requires appHostSubnetIds with appHostCount; taken in turn.
          subnetId: c.appHostSubnetIds[i % c.appHostSubnetIds.length]!,
          vpcSecurityGroupIds: [sg],
          associatePublicIpAddress: false,
          metadataOptions: { httpTokens: "required", httpEndpoint: "enabled", httpPutResponseHopLimit: 1 },
          rootBlockDevice: { volumeType: "gp3", volumeSize: c.rootVolumeGb, encrypted: true, deleteOnTermination: true },
          monitoring: false,
          tags: { ...tags, Name: `${PROJECT}-${pulumi.getStack()}-app-${i}` },
          volumeTags: args.tags,
        },
        { parent: this, protect: c.protect, ignoreChanges: c.amiId ? [] : ["ami"] },
      );
      this.instances.push(instance);
      this.hosts.push({ key: String(i), host: { address: instance.privateIp, user, port: 22, machineId: instance.id } });
    }
    this.registerOutputs({ securityGroupId: sg, privateIps: this.instances.map((i) => i.privateIp) });
  }
}
