// Every file the program puts on a host, as a pure function of validated config.
// `npm run render` writes these; the components push the same values.
import { appPorts, EdgeConfig } from "./config";
import { hostLayout, PUBLIC_LISTEN, readTemplate, RenderedFile, renderNginx, workerNofile } from "./render";

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
} as const;

/** Scripts from files/scripts/ installed into REMOTE.binDir. */
export const HOST_SCRIPTS = [
  "install-packages.sh",
  "ensure-user.sh",
  "nginx-apply.sh",
  "run-app.sh",
  "app-rollout.sh",
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
  nginx: RenderedFile[];
  /** Scripts, units and env files, keyed by absolute path. */
  system: HostFile[];
}

export interface HostFileOptions {
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
    `LimitNOFILE=${workerNofile(c)}`,
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
    ...HOST_SCRIPTS.map((s) => ({ path: `${REMOTE.binDir}/${s}`, content: readTemplate(`scripts/${s}`), mode: 0o755 })),
    { path: REMOTE.unit, content: readTemplate("systemd/fastapi-edge-app@.service") },
    { path: REMOTE.envFile, content: renderAppEnv(c, forwarded) },
  ];
  if (c.frontend === "alb") return { nginx: [], system };

  system.push(
    { path: REMOTE.nginxDropIn, content: renderNginxDropIn(c) },
    { path: REMOTE.deployHook, content: readTemplate("scripts/certbot-deploy-hook.sh"), mode: 0o755 },
  );
  if (o.acmeCaBundlePem !== undefined) {
    system.push({ path: REMOTE.acmeCaBundle, content: o.acmeCaBundlePem }, { path: REMOTE.certbotDropIn, content: renderCertbotDropIn() });
  }
  const nginx = renderNginx(c, {
    phase: o.phase,
    layout: hostLayout(c, `${REMOTE.appDir}/${c.appStaticDir}`),
    listen: PUBLIC_LISTEN,
  });
  return { nginx, system };
}
