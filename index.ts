// fastapi-edge: read config, choose the host and the front end, wire the
// components, export outputs. Everything else lives in components/ and lib/.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { CertExpiryAlarm } from "./components/alerts";
import { AlbFrontend } from "./components/alb";
import { AppService } from "./components/app";
import { AppHosts, EdgeAppRetirement, listedAppHosts } from "./components/app-hosts";
import { AutoScalingFleet } from "./components/asg";
import { ContainerAppService } from "./components/app-container";
import { HostBootstrap } from "./components/bootstrap";
import { readAppRuntime, readConfig, readHostPrivateKey, readRegistryPassword } from "./components/config";
import { DnsRecord } from "./components/dns";
import { defaultVpc, Ec2Host } from "./components/ec2";
import { Ec2AppHosts } from "./components/ec2-app-hosts";
import { ExistingHost } from "./components/existing-host";
import { NginxFrontend } from "./components/nginx";
import { Host } from "./components/remote";
import { PROJECT } from "./lib/config";
import { omitUndefinedOutputs } from "./lib/outputs";

const config = readConfig(); // validated before any resource exists
const deps = readAppRuntime(config, __dirname); // requirements.txt / pyproject.toml: a virtualenv per release
const registryPassword = readRegistryPassword(config); // appImage from a registry that needs a login
const stack = pulumi.getStack();
const tags = { Project: PROJECT, Stack: stack, ManagedBy: "pulumi" };
const alerts = Boolean(config.alertEmail);

// albAutoScaling: an Auto Scaling Group behind the ALB instead of one host (config
// validation allows it with frontend alb only; the ALB always has an app virtualenv).
const fleetDeps = config.albAutoScaling ? deps : null;
const ec2 =
  config.hostMode === "ec2" && !fleetDeps
    ? new Ec2Host("host", { config, tags, publishMetrics: alerts && config.frontend === "nginx" })
    : undefined;
const host: Host | undefined = fleetDeps ? undefined : (ec2 ?? new ExistingHost("host", { config, privateKey: readHostPrivateKey() }));
// The ALB targets an EC2 instance (config validation refuses frontend alb without hostMode ec2).
const albHost = config.frontend === "alb" ? ec2 : undefined;

// Behind nginx uvicorn trusts forwarded headers from nginx on loopback only;
// behind the ALB, from the VPC range (the ALB's nodes have changing addresses).
const forwardedAllowIps = albHost ? albHost.vpcCidr : pulumi.output("127.0.0.1");
// The app on the one host (the group's instances install it themselves).
// appRuntime host: uvicorn units; container: podman containers (same ports, same rollout).
// With app hosts the edge keeps the release for its static files only (docs/multi-host.md).
const hasAppHosts = config.appHosts.length > 0 || config.appHostCount > 0;
let app: AppService | ContainerAppService | undefined;
if (host) {
  const bootstrap = new HostBootstrap("bootstrap", { config, target: host.target, venv: deps !== null });
  app =
    config.appRuntime === "container"
      ? new ContainerAppService("app", { config, target: host.target, projectDir: __dirname, registryPassword }, { dependsOn: [bootstrap] })
      : new AppService(
          "app",
          { config, target: host.target, forwardedAllowIps, projectDir: __dirname, deps, filesOnly: hasAppHosts },
          { dependsOn: [bootstrap] },
        );
}

// appHosts / appHostCount (frontend nginx, appRuntime host: config validation): the host
// above is the edge, and the app runs on each app host behind it, reached through the
// edge. The edge keeps its own release for the static files nginx serves from it.
let appHosts: AppHosts | undefined;
if (host && app && hasAppHosts) {
  const edgePrivateAddress = ec2 ? ec2.privateAddress : pulumi.output(config.edgePrivateAddress!);
  const hosts =
    ec2 && config.appHostCount > 0
      ? new Ec2AppHosts("app-instance", {
          config,
          tags,
          vpcId: ec2.vpcId,
          edgeSecurityGroupId: ec2.securityGroup.id,
          keyName: ec2.keyName,
          amiId: ec2.amiId,
        }).hosts
      : listedAppHosts(config, host.target.user);
  appHosts = new AppHosts(
    "app-host",
    { config, edge: host.target, edgePrivateAddress, hosts, projectDir: __dirname, deps },
    { dependsOn: [app] },
  );
}

const siteUrlOutput = pulumi.output(`https://${config.domain}/`);
let albDnsName: pulumi.Output<string> | undefined;
let acmCertificateArn: pulumi.Output<string> | undefined;
let nginx: NginxFrontend | undefined;
let fleet: AutoScalingFleet | undefined;
if (albHost || fleetDeps) {
  const vpc = albHost ?? defaultVpc({});
  const alb = new AlbFrontend("alb", {
    config,
    vpcId: vpc.vpcId,
    subnetIds: vpc.subnetIds,
    target: albHost
      ? { kind: "instance", instanceId: albHost.instance.id, securityGroupId: albHost.securityGroup.id }
      : { kind: "autoScalingGroup" },
    tags,
  });
  if (fleetDeps) {
    fleet = new AutoScalingFleet("asg", {
      config,
      tags,
      projectDir: __dirname,
      deps: fleetDeps,
      vpcId: vpc.vpcId,
      vpcCidr: vpc.vpcCidr,
      albSecurityGroupId: alb.securityGroup.id,
      targetGroups: alb.targetGroups,
      loadBalancer: alb.loadBalancer,
    });
  }
  albDnsName = alb.dnsName;
  acmCertificateArn = alb.certificate.arn;
  if (config.route53ZoneId) {
    new DnsRecord("dns", {
      zoneId: config.route53ZoneId,
      domain: config.domain,
      target: { kind: "alias", dnsName: alb.dnsName, zoneId: alb.zoneId },
    });
  }
} else if (host && app) {
  nginx = appHosts
    ? new NginxFrontend(
        "nginx",
        { config, target: host.target, projectDir: __dirname, upstreamHosts: appHosts.addresses },
        { dependsOn: [app, ...appHosts.apps] },
      )
    : new NginxFrontend("nginx", { config, target: host.target, projectDir: __dirname }, { dependsOn: [app] });
  // The edge's own processes stop only once nginx's upstream names the app hosts alone.
  if (appHosts) new EdgeAppRetirement("edge-app", { edge: host.target }, { dependsOn: [nginx] });
  if (config.route53ZoneId && ec2) {
    new DnsRecord("dns", { zoneId: config.route53ZoneId, domain: config.domain, target: { kind: "ip", address: ec2.publicAddress } });
  }
}
if (alerts) {
  // nginx mode: the timer step runs host scripts and checks the live site, so after nginx.
  new CertExpiryAlarm(
    "cert-expiry",
    {
      config,
      tags,
      region: aws.config.region ?? "us-east-1",
      ...(acmCertificateArn ? { acmCertificateArn } : host ? { target: host.target } : {}),
    },
    nginx ? { dependsOn: [nginx] } : {},
  );
}

export const frontend = config.frontend;
export const url = siteUrlOutput;
export const publicIp = host?.publicAddress;
export const loadBalancerDnsName = albDnsName;
export const sshCommand = host?.sshCommand;
export const appRelease = fleet?.release ?? app?.release;
/** appHosts / appHostCount: the app hosts' private addresses, in the upstream's order. */
export const appHostAddresses = appHosts?.addresses;
/** albAutoScaling: the bucket holding the release bundles, and the group's name. */
export const releaseBucket = fleet?.bucket.bucket;
export const autoScalingGroupName = fleet?.group.name;
/** The generated SSH private key (secret), when no sshPublicKey was configured. */
export const sshPrivateKey = ec2?.privateKey;

omitUndefinedOutputs(exports, [
  "appHostAddresses",
  "publicIp",
  "sshCommand",
  "loadBalancerDnsName",
  "releaseBucket",
  "autoScalingGroupName",
  "sshPrivateKey",
]);
