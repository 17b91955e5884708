// Every file the program puts on a host, as a pure function of validated config.
// `npm run render` writes these; the components push the same values.
import { appPorts, EdgeConfig } from "./config";
import { hostLayout, PUBLIC_LISTEN } from "./hostpaths";
import { durationSeconds, renderAcmeBootstrap, renderSite, StageFile, workerNofile } from "./nginx";
import { shipped } from "./shipped";

export const REMOTE = {
  base: "/opt/fastapi-edge",
  appDir: "/opt/fastapi-edge/app",
  binDir: "/opt/fastapi-edge/bin",
  etcDir: "/etc/fastapi-edge",
  envFile: "/etc/fastapi-edge/app.env",
  stateDir: "/var/lib/fastapi-edge",
  unit: "/etc/systemd/system/fastapi-edge-app@.service",
  nginxDropIn: "/etc/systemd/system/nginx.service.d/fastapi-edge.conf",
  certbotDropIn: "/etc/systemd/system/certbot.service.d/fastapi-edge.conf",
  acmeCaBundle: "/etc/fastapi-edge/acme-ca.pem",
  deployHook: "/etc/letsencrypt/renewal-hooks/deploy/fastapi-edge-reload-nginx.sh",
  expiryService: "/etc/systemd/system/fastapi-edge-cert-expiry.service",
  expiryTimer: "/etc/systemd/system/fastapi-edge-cert-expiry.timer",
} as const;

/** Scripts from files/scripts/ installed into REMOTE.binDir. */
export const HOST_SCRIPTS = [
  "install-packages.sh",
  "ensure-user.sh",
  "nginx-apply.sh",
  "run-app.sh",
  "app-rollout.sh",
  "app-remove.sh",
  "obtain-cert.sh",
  "cert-expiry-check.sh",
] as const;

export interface HostFile {
  /** Absolute path on the host, or stage-relative for nginx files. */
  path: string;
  content: string;
  mode?: number;
}

export interface HostFileSet {
  /** The nginx stage (conf/ and extra/), pushed with nginx-apply.sh. */
  nginx: StageFile[];
  /** Scripts, units and env files, keyed by absolute path. */
  system: HostFile[];
}

export interface HostFileOptions {
  /** AWS region the cert-expiry check publishes to (when alertEmail is set). */
  region?: string;
  phase: "acme-bootstrap" | "full";
  /** Addresses uvicorn trusts forwarded headers from (nginx: 127.0.0.1; ALB: the VPC range). */
  forwardedAllowIps?: string;
  /** The ACME CA bundle's PEM text, when config names one. */
  acmeCaBundlePem?: string;
}

/** Behind nginx uvicorn listens on loopback only; behind an ALB on all addresses (the security group admits only the ALB). */
export function appBindAddress(c: EdgeConfig): string {
  return c.frontend === "alb" ? "0.0.0.0" : "127.0.0.1";
}

export function renderAppEnv(c: EdgeConfig, forwardedAllowIps: string): string {
  if (!/^[0-9a-fA-F.:\/,]+$/.test(forwardedAllowIps)) {
    throw new Error(`forwarded-allow-ips must be addresses or CIDRs separated by commas (got ${JSON.stringify(forwardedAllowIps)})`);
  }
  return [
    "# Rendered by fastapi-edge: environment of every fastapi-edge-app@PORT instance.",
    `APP_MODULE=${c.appModule}`,
    `APP_DIR=${REMOTE.appDir}`,
    `STATIC_DIR=${REMOTE.appDir}/${c.appStaticDir}`,
    `PYTHON=${c.appPython}`,
    `UVICORN_HOST=${appBindAddress(c)}`,
    `FORWARDED_ALLOW_IPS=${forwardedAllowIps}`,
    `APP_VERSION=${c.appVersion}`,
    `APP_PORTS=${appPorts(c).join(" ")}`,
    `HEALTH_PATH=${c.appHealthPath}`,
    "",
  ].join("\n");
}

export function renderNginxDropIn(c: EdgeConfig): string {
  return [
    "# Rendered by fastapi-edge: open-file limit for the nginx master (workers raise",
    "# their own with worker_rlimit_nofile). Takes effect at the next nginx start.",
    "[Service]",
    `LimitNOFILE=${workerNofile(c.workerConnections)}`,
    "",
  ].join("\n");
}

export function renderCertbotDropIn(): string {
  return [
    "# Rendered by fastapi-edge: scheduled renewals trust the configured ACME CA bundle.",
    "[Service]",
    `Environment=REQUESTS_CA_BUNDLE=${REMOTE.acmeCaBundle}`,
    "",
  ].join("\n");
}

export function renderHostFiles(c: EdgeConfig, o: HostFileOptions): HostFileSet {
  const forwarded = o.forwardedAllowIps ?? "127.0.0.1";
  const system: HostFile[] = [
    ...HOST_SCRIPTS.map((s) => ({ path: `${REMOTE.binDir}/${s}`, content: shipped(`scripts/${s}`), mode: 0o755 })),
    { path: REMOTE.unit, content: shipped("systemd/fastapi-edge-app@.service") },
    { path: REMOTE.envFile, content: renderAppEnv(c, forwarded) },
  ];
  if (c.frontend === "alb") return { nginx: [], system };

  system.push(
    { path: REMOTE.nginxDropIn, content: renderNginxDropIn(c) },
    { path: REMOTE.deployHook, content: shipped("scripts/certbot-deploy-hook.sh"), mode: 0o755 },
  );
  if (o.acmeCaBundlePem !== undefined) {
    system.push({ path: REMOTE.acmeCaBundle, content: o.acmeCaBundlePem }, { path: REMOTE.certbotDropIn, content: renderCertbotDropIn() });
  }
  if (c.alertEmail) {
    const units = renderExpiryUnits(c, o.region ?? "us-east-1");
    system.push({ path: REMOTE.expiryService, content: units.service }, { path: REMOTE.expiryTimer, content: units.timer });
  }
  const layout = hostLayout(c, `${REMOTE.appDir}/${c.appStaticDir}`);
  const nginx =
    o.phase === "full" ? renderSite(c, { layout, listen: PUBLIC_LISTEN }) : renderAcmeBootstrap({ domain: c.domain, layout, listen: PUBLIC_LISTEN });
  return { nginx, system };
}

/** systemd service + timer publishing the live certificate's days left (nginx mode, alertEmail set). */
export function renderExpiryUnits(c: EdgeConfig, region: string): { service: string; timer: string } {
  const service = [
    "# Rendered by fastapi-edge: publish the live certificate's days left to CloudWatch.",
    "[Unit]",
    "Description=fastapi-edge certificate expiry check",
    "After=network-online.target nginx.service",
    "",
    "[Service]",
    "Type=oneshot",
    `Environment=AWS_REGION=${region}`,
    `Environment=WARN_DAYS=${c.certExpiryAlarmDays}`,
    // Exit 2 means "below the threshold": the alarm reports it, the unit should not fail.
    "SuccessExitStatus=2",
    `ExecStart=${REMOTE.binDir}/cert-expiry-check.sh --host 127.0.0.1 --port 443 --servername ${c.domain} --publish`,
    "",
  ].join("\n");
  const timer = [
    "[Unit]",
    "Description=Daily fastapi-edge certificate expiry check",
    "",
    "[Timer]",
    "OnCalendar=daily",
    "RandomizedDelaySec=1h",
    "OnBootSec=5min",
    "Persistent=true",
    "",
    "[Install]",
    "WantedBy=timers.target",
    "",
  ].join("\n");
  return { service, timer };
}

/**
 * Pause between two app processes in a rolling restart. While a process
 * restarts nginx counts its refused connections and, after max_fails, keeps it
 * out for fail_timeout: restarting the next one before then leaves no live
 * upstream. +2 s: nginx's clock ticks in seconds and one request must succeed
 * to re-admit the process. Found by test/stress/rollout.test.ts.
 */
export function rolloutSettleSeconds(c: EdgeConfig): number {
  if (c.frontend !== "nginx" || c.upstreamMaxFails === 0) return 0;
  return Math.ceil(durationSeconds(c.upstreamFailTimeout)) + 2;
}
