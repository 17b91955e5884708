// Certificate-expiry alarm ("you want a monitoring alert on cert expiry").
// nginx mode: a systemd timer on the host checks the live certificate every
// 6 hours and publishes the percentage of its lifetime left,
// 100 * (notAfter - now) / (notAfter - notBefore), as a CloudWatch metric; an
// alarm fires below certExpiryAlarmPercent (or when the metric stops
// arriving). A fraction, not days: the same threshold suits 90-, 45- and
// 6-day certificates, as certbot's own renewal point (a third left) does.
// ALB mode: an alarm on ACM's own DaysToExpiry metric (ACM publishes days
// only, and renews from 60 days before expiry). Both notify an SNS topic with
// an e-mail subscription.
import * as aws from "@pulumi/aws";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { EdgeConfig } from "../lib/config";
import { expiryTimerFiles, installedScript } from "../lib/hostfiles";
import { EXPIRY_CHECK_PERIOD_S } from "../lib/units";
import { commandLine, stepShell } from "../lib/shell";
import { HostTarget, hostStep } from "./remote";

export const CERT_METRIC_NAMESPACE = "FastapiEdge";
export const CERT_METRIC_NAME = "CertificateLifetimeLeftPercent";
/**
 * ALB mode: ACM starts renewing 60 days before expiry (its managed renewal);
 * an ACM certificate still under 30 days has failed renewal for a month.
 */
export const ACM_ALARM_DAYS = 30;

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
          threshold: ACM_ALARM_DAYS,
          period: 86400,
          evaluationPeriods: 1,
          alarmDescription: `ACM certificate for ${c.domain} expires in fewer than ${ACM_ALARM_DAYS} days (ACM renews from 60 days before expiry)`,
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
          threshold: c.certExpiryAlarmPercent,
          alarmDescription:
            `Certificate for ${c.domain} has less than ${c.certExpiryAlarmPercent}% of its lifetime left (certbot renews at a third), ` +
            "or the 6-hourly check stopped reporting; the host's message (journalctl -u fastapi-edge-cert-expiry) gives the days left",
          // One data point per period (the host checks every 6 hours). Two
          // periods in a row below the threshold or without data (the check
          // stopped, missing data is breaching) raise the alarm.
          period: EXPIRY_CHECK_PERIOD_S,
          evaluationPeriods: 2,
          datapointsToAlarm: 2,
          treatMissingData: "breaching",
        },
        parent,
      );
      if (args.target) {
        // Enables the 6-hourly check once the units are written, and runs it once now.
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
