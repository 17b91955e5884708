// fastapi-edge: read config, choose the host and the front end, wire the
// components, export outputs. Everything else lives in components/ and lib/.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { CertExpiryAlarm } from "./components/alerts";
import { AlbFrontend } from "./components/alb";
import { AppService } from "./components/app";
import { HostBootstrap } from "./components/bootstrap";
import { readConfig, readHostPrivateKey } from "./components/config";
import { DnsRecord } from "./components/dns";
import { Ec2Host } from "./components/ec2";
import { ExistingHost } from "./components/existing-host";
import { NginxFrontend } from "./components/nginx";
import { PROJECT } from "./lib/config";

const config = readConfig(); // validated before any resource exists
const stack = pulumi.getStack();
const tags = { Project: PROJECT, Stack: stack, ManagedBy: "pulumi" };
const alerts = Boolean(config.alertEmail);

const ec2 = config.hostMode === "ec2" ? new Ec2Host("host", { config, tags, publishMetrics: alerts && config.frontend === "nginx" }) : undefined;
const host = ec2 ?? new ExistingHost("host", { config, privateKey: readHostPrivateKey() });
const bootstrap = new HostBootstrap("bootstrap", { config, target: host.target });

// Behind nginx uvicorn trusts forwarded headers from nginx on loopback only;
// behind the ALB, from the VPC range (the ALB's nodes have changing addresses).
const forwardedAllowIps = config.frontend === "nginx" ? pulumi.output("127.0.0.1") : ec2!.vpcCidr;
const app = new AppService("app", { config, target: host.target, forwardedAllowIps, projectDir: __dirname }, { dependsOn: [bootstrap] });

const siteUrlOutput = pulumi.output(`https://${config.domain}/`);
let albDnsName: pulumi.Output<string> | undefined;
let acmCertificateArn: pulumi.Output<string> | undefined;
let nginx: NginxFrontend | undefined;
if (config.frontend === "nginx") {
  nginx = new NginxFrontend("nginx", { config, target: host.target, projectDir: __dirname }, { dependsOn: [app] });
} else {
  const alb = new AlbFrontend("alb", {
    config,
    vpcId: ec2!.vpcId,
    subnetIds: ec2!.subnetIds,
    instanceId: ec2!.instance.id,
    instanceSecurityGroupId: ec2!.securityGroup.id,
    tags,
  });
  albDnsName = alb.dnsName;
  acmCertificateArn = alb.certificate.arn;
  if (config.route53ZoneId) {
    new DnsRecord("dns", { zoneId: config.route53ZoneId, domain: config.domain, target: { kind: "alias", dnsName: alb.dnsName, zoneId: alb.zoneId } });
  }
}
if (config.frontend === "nginx" && config.route53ZoneId && ec2) {
  new DnsRecord("dns", { zoneId: config.route53ZoneId, domain: config.domain, target: { kind: "ip", address: ec2.publicIp } });
}
if (alerts) {
  // nginx mode: the timer step runs host scripts and checks the live site, so after nginx.
  new CertExpiryAlarm(
    "cert-expiry",
    {
      config,
      tags,
      region: aws.config.region ?? "us-east-1",
      ...(acmCertificateArn ? { acmCertificateArn } : { target: host.target }),
    },
    nginx ? { dependsOn: [nginx] } : {},
  );
}

export const frontend = config.frontend;
export const url = siteUrlOutput;
export const publicIp = ec2 ? ec2.publicIp : (host as ExistingHost).publicAddress;
export const loadBalancerDnsName = albDnsName;
export const sshCommand = host.sshCommand;
export const appRelease = app.release;
/** The generated SSH private key (secret), when no sshPublicKey was configured. */
export const sshPrivateKey = ec2?.privateKey;

// The engine warns on every run about a top-level output that is undefined ("Undefined value
// (sshPrivateKey) will not show as a stack output"): outputs that do not apply to this stack's
// mode are left out of the module's exports instead.
const cjsExports = exports as Record<string, unknown>;
for (const key of ["loadBalancerDnsName", "sshPrivateKey"]) if (cjsExports[key] === undefined) delete cjsExports[key];
