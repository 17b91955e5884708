// The ALB front end: no nginx on the host. The load balancer terminates TLS
// with an ACM certificate validated through Route53, redirects HTTP to HTTPS,
// drops invalid header fields, and forwards to every app process on the
// instance. Its security group is the only source the instance admits on
// the app ports. An optional WAF rate-based rule is this mode's rate limit.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { appPorts, EdgeConfig, PROJECT } from "../lib/config";

/**
 * The HTTPS listener's policy: TLS 1.3 and 1.2, forward-secret AEAD ciphers
 * only ("Res": restricted), and hybrid post-quantum key exchange
 * (X25519MLKEM768, SecP256r1MLKEM768) offered first. Mozilla's generator maps
 * its intermediate profile to it for ALBs; it replaces
 * ELBSecurityPolicy-TLS13-1-2-2021-06, which also allowed CBC ciphers.
 */
export const ALB_TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09";

/**
 * What the ALB forwards to: the one EC2 instance (every app port registered in one target
 * group, and the instance's group opened to the ALB here), or an Auto Scaling Group
 * (albAutoScaling), which registers its instances itself: an ASG registers an instance on a
 * target group's own port only, so there is one target group per app port, and
 * components/asg.ts opens its group to the ALB's.
 */
export type AlbTarget =
  { kind: "instance"; instanceId: pulumi.Input<string>; securityGroupId: pulumi.Input<string> } | { kind: "autoScalingGroup" };

export interface AlbFrontendArgs {
  config: EdgeConfig;
  vpcId: pulumi.Input<string>;
  subnetIds: pulumi.Input<string[]>;
  target: AlbTarget;
  tags: Record<string, string>;
}

export class AlbFrontend extends pulumi.ComponentResource {
  readonly loadBalancer: aws.lb.LoadBalancer;
  readonly certificate: aws.acm.Certificate;
  readonly httpsListener: aws.lb.Listener;
  readonly httpListener: aws.lb.Listener;
  /** The first app port's target group (the only one with target kind instance). */
  readonly targetGroup: aws.lb.TargetGroup;
  /** One per app port with an Auto Scaling Group; [targetGroup] otherwise. */
  readonly targetGroups: aws.lb.TargetGroup[];
  readonly securityGroup: aws.ec2.SecurityGroup;
  readonly dnsName: pulumi.Output<string>;
  readonly zoneId: pulumi.Output<string>;
  readonly webAcl?: aws.wafv2.WebAcl;

  constructor(name: string, args: AlbFrontendArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:alb:Frontend", name, {}, opts);
    const c = args.config;
    const parent = { parent: this };
    const ports = appPorts(c);

    const albSg = new aws.ec2.SecurityGroup(
      `${name}-sg`,
      { vpcId: args.vpcId, description: `${PROJECT} ALB: HTTP/HTTPS from anywhere`, tags: args.tags },
      parent,
    );
    for (const port of [80, 443]) {
      new aws.vpc.SecurityGroupIngressRule(
        `${name}-${port}-v4`,
        { securityGroupId: albSg.id, ipProtocol: "tcp", fromPort: port, toPort: port, cidrIpv4: "0.0.0.0/0" },
        parent,
      );
      new aws.vpc.SecurityGroupIngressRule(
        `${name}-${port}-v6`,
        { securityGroupId: albSg.id, ipProtocol: "tcp", fromPort: port, toPort: port, cidrIpv6: "::/0" },
        parent,
      );
    }
    this.securityGroup = albSg;
    const target = args.target;
    if (target.kind === "instance") {
      // One rule, seen from both groups: the ALB sends to the app ports, and
      // the instance admits them from the ALB's group and nothing else.
      // (With an Auto Scaling Group, components/asg.ts makes the same pair.)
      const appPortRange = { ipProtocol: "tcp", fromPort: ports[0]!, toPort: ports[ports.length - 1]! };
      new aws.vpc.SecurityGroupEgressRule(
        `${name}-to-app`,
        {
          securityGroupId: albSg.id,
          ...appPortRange,
          referencedSecurityGroupId: target.securityGroupId,
          description: "to the app processes",
        },
        parent,
      );
      new aws.vpc.SecurityGroupIngressRule(
        `${name}-app-from-alb`,
        {
          securityGroupId: target.securityGroupId,
          ...appPortRange,
          referencedSecurityGroupId: albSg.id,
          description: "app ports from the ALB only",
        },
        parent,
      );
    }

    this.loadBalancer = new aws.lb.LoadBalancer(
      `${name}-lb`,
      {
        loadBalancerType: "application",
        internal: false,
        securityGroups: [albSg.id],
        subnets: args.subnetIds,
        idleTimeout: c.albIdleTimeout,
        dropInvalidHeaderFields: true,
        enableHttp2: true,
        tags: args.tags,
      },
      parent,
    );
    this.dnsName = this.loadBalancer.dnsName;
    this.zoneId = this.loadBalancer.zoneId;

    this.certificate = new aws.acm.Certificate(
      `${name}-cert`,
      { domainName: c.domain, validationMethod: "DNS", tags: args.tags },
      { parent: this, protect: c.protect },
    );
    const validationRecord = new aws.route53.Record(
      `${name}-cert-validation`,
      {
        zoneId: c.route53ZoneId!,
        name: this.certificate.domainValidationOptions[0]!.resourceRecordName,
        type: this.certificate.domainValidationOptions[0]!.resourceRecordType,
        records: [this.certificate.domainValidationOptions[0]!.resourceRecordValue],
        ttl: 300,
        allowOverwrite: true,
      },
      parent,
    );
    const validation = new aws.acm.CertificateValidation(
      `${name}-cert-validated`,
      { certificateArn: this.certificate.arn, validationRecordFqdns: [validationRecord.fqdn] },
      parent,
    );

    const targetGroup = (suffix: string, port: number) =>
      new aws.lb.TargetGroup(
        `${name}-${suffix}`,
        {
          vpcId: args.vpcId,
          targetType: "instance",
          protocol: "HTTP",
          port,
          deregistrationDelay: c.albDeregistrationDelay,
          healthCheck: { path: c.appHealthPath, matcher: "200", interval: 10, timeout: 5, healthyThreshold: 2, unhealthyThreshold: 2 },
          tags: args.tags,
        },
        parent,
      );
    this.targetGroup = targetGroup("tg", ports[0]!);
    if (target.kind === "instance") {
      this.targetGroups = [this.targetGroup];
      ports.forEach((port) => {
        new aws.lb.TargetGroupAttachment(
          `${name}-target-${port}`,
          { targetGroupArn: this.targetGroup.arn, targetId: target.instanceId, port },
          parent,
        );
      });
    } else {
      this.targetGroups = [this.targetGroup, ...ports.slice(1).map((port) => targetGroup(`tg-${port}`, port))];
    }
    // One target group: forward to it, as always. One per port: spread evenly over them.
    const forward: aws.types.input.lb.ListenerDefaultAction =
      this.targetGroups.length === 1
        ? { type: "forward", targetGroupArn: this.targetGroup.arn }
        : { type: "forward", forward: { targetGroups: this.targetGroups.map((tg) => ({ arn: tg.arn, weight: 1 })) } };

    // Both listeners are on this load balancer, with the stack's tags.
    const listener = (suffix: string, settings: Omit<aws.lb.ListenerArgs, "loadBalancerArn" | "tags">) =>
      new aws.lb.Listener(`${name}-${suffix}`, { loadBalancerArn: this.loadBalancer.arn, ...settings, tags: args.tags }, parent);
    this.httpListener = listener("http", {
      port: 80,
      protocol: "HTTP",
      defaultActions: [{ type: "redirect", redirect: { protocol: "HTTPS", port: "443", statusCode: "HTTP_301" } }],
    });
    this.httpsListener = listener("https", {
      port: 443,
      protocol: "HTTPS",
      sslPolicy: ALB_TLS_POLICY,
      certificateArn: validation.certificateArn,
      defaultActions: [forward],
    });

    if (c.wafRateLimit > 0) {
      this.webAcl = new aws.wafv2.WebAcl(
        `${name}-waf`,
        {
          scope: "REGIONAL",
          defaultAction: { allow: {} },
          rules: [
            {
              name: "rate-limit-per-ip",
              priority: 1,
              action: { block: { customResponse: { responseCode: 429 } } },
              statement: { rateBasedStatement: { limit: c.wafRateLimit, aggregateKeyType: "IP", evaluationWindowSec: 300 } },
              visibilityConfig: { cloudwatchMetricsEnabled: true, metricName: "rate-limit-per-ip", sampledRequestsEnabled: true },
            },
          ],
          visibilityConfig: { cloudwatchMetricsEnabled: true, metricName: `${PROJECT}-waf`, sampledRequestsEnabled: true },
          tags: args.tags,
        },
        parent,
      );
      new aws.wafv2.WebAclAssociation(`${name}-waf-assoc`, { resourceArn: this.loadBalancer.arn, webAclArn: this.webAcl.arn }, parent);
    }
    this.registerOutputs({ dnsName: this.dnsName, zoneId: this.zoneId });
  }
}
