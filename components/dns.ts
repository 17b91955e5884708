// Optional Route53 record for the domain: an A record to the host's Elastic IP
// (nginx), or an alias to the load balancer (ALB).
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

export type DnsTarget =
  { kind: "ip"; address: pulumi.Input<string> } | { kind: "alias"; dnsName: pulumi.Input<string>; zoneId: pulumi.Input<string> };

export interface DnsRecordArgs {
  zoneId: string;
  domain: string;
  target: DnsTarget;
}

export class DnsRecord extends pulumi.ComponentResource {
  readonly fqdn: pulumi.Output<string>;

  constructor(name: string, args: DnsRecordArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:dns:Record", name, {}, opts);
    const t = args.target;
    const record = new aws.route53.Record(
      `${name}-a`,
      t.kind === "ip"
        ? { zoneId: args.zoneId, name: args.domain, type: "A", ttl: 300, records: [t.address] }
        : {
            zoneId: args.zoneId,
            name: args.domain,
            type: "A",
            aliases: [{ name: t.dnsName, zoneId: t.zoneId, evaluateTargetHealth: true }],
          },
      { parent: this },
    );
    this.fqdn = record.fqdn;
    this.registerOutputs({ fqdn: this.fqdn });
  }
}
