// Certificate-expiry alarm ("you want a monitoring alert on cert expiry").
// nginx mode: a systemd timer on the host checks the live certificate daily
// and publishes its days left as a CloudWatch metric; an alarm fires below
// the threshold (or when the metric stops arriving). ALB mode: an alarm on
// ACM's own DaysToExpiry metric. Both notify an SNS topic with an e-mail
// subscription.
import * as aws from "@pulumi/aws";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { EdgeConfig } from "../lib/config";
import { expiryTimerFiles, installedScript } from "../lib/hostfiles";
import { commandLine, stepShell } from "../lib/shell";
import { HostTarget, hostStep } from "./remote";

export const CERT_METRIC_NAMESPACE = "FastapiEdge";
export const CERT_METRIC_NAME = "CertificateDaysToExpiry";

export interface CertExpiryAlarmArgs {
  config: EdgeConfig;
  tags: Record<string, string>;
  /**
   * nginx mode: the host that publishes the metric. Its step runs the host
   * scripts and checks the live site, so the component must depend on the
   * nginx front end (index.ts).
   */
  target?: HostTarget;
  /** ALB mode: the ACM certificate. */
  acmCertificateArn?: pulumi.Input<string>;
  region: string;
}

export class CertExpiryAlarm extends pulumi.ComponentResource {
  readonly topic: aws.sns.Topic;
  readonly alarm: aws.cloudwatch.MetricAlarm;
  readonly timer?: command.remote.Command;

  constructor(name: string, args: CertExpiryAlarmArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:alerts:CertExpiry", name, {}, opts);
    const c = args.config;
    const parent = { parent: this };
    this.topic = new aws.sns.Topic(`${name}-topic`, { tags: args.tags }, parent);
    new aws.sns.TopicSubscription(`${name}-email`, { topic: this.topic.arn, protocol: "email", endpoint: c.alertEmail! }, parent);

    const common = {
      comparisonOperator: "LessThanThreshold",
      threshold: c.certExpiryAlarmDays,
      evaluationPeriods: 1,
      period: 86400,
      statistic: "Minimum",
      alarmActions: [this.topic.arn],
      okActions: [this.topic.arn],
      tags: args.tags,
    };
    if (args.acmCertificateArn !== undefined) {
      this.alarm = new aws.cloudwatch.MetricAlarm(
        `${name}-acm`,
        {
          ...common,
          namespace: "AWS/CertificateManager",
          metricName: "DaysToExpiry",
          dimensions: { CertificateArn: args.acmCertificateArn },
          alarmDescription: `ACM certificate for ${c.domain} expires in fewer than ${c.certExpiryAlarmDays} days`,
          treatMissingData: "notBreaching",
        },
        parent,
      );
    } else {
      this.alarm = new aws.cloudwatch.MetricAlarm(
        `${name}-host`,
        {
          ...common,
          namespace: CERT_METRIC_NAMESPACE,
          metricName: CERT_METRIC_NAME,
          dimensions: { Domain: c.domain },
          alarmDescription: `Certificate for ${c.domain} expires in fewer than ${c.certExpiryAlarmDays} days, or the daily check stopped reporting`,
          // No data for two days means renewal checks stopped: treat as breaching.
          evaluationPeriods: 2,
          datapointsToAlarm: 1,
          treatMissingData: "breaching",
        },
        parent,
      );
      if (args.target) {
        // Enables the daily check once the units are written, and runs it once now.
        const timerScript = installedScript("cert-expiry-timer.sh");
        this.timer = hostStep(
          `${name}-timer`,
          {
            target: args.target,
            stdin: stepShell(expiryTimerFiles(c, args.region), [commandLine(timerScript, "--servername", c.domain)]),
            onDelete: commandLine(timerScript, "--remove"),
          },
          parent,
        );
      }
    }
    this.registerOutputs({ topicArn: this.topic.arn, alarmName: this.alarm.name });
  }
}
