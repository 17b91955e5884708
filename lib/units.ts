// The systemd files and the app's environment file the program renders:
// text of config, written to the paths in hostpaths.ts. Pure: no Pulumi import.
import { appPorts, EdgeConfig } from "./config";
import { HOST_PATHS } from "./hostpaths";
import { workerNofile } from "./nginx";
import { replaceExact, shipped } from "./shipped";

/** The release's virtualenv, inside the release directory (app-deploy.sh --venv builds it there). */
export const APP_VENV_DIR = ".venv";

/** Behind nginx uvicorn listens on loopback only; behind an ALB on all addresses (the security group admits only the ALB). */
export function appBindAddress(c: EdgeConfig): string {
  return c.frontend === "alb" ? "0.0.0.0" : "127.0.0.1";
}

/**
 * The app's environment; venv: uvicorn runs from the release's own virtualenv (APP_VENV), not appPython.
 * bindAddress: an app host's private address (appHosts), which uvicorn binds; unset: appBindAddress's choice.
 */
export function renderAppEnv(c: EdgeConfig, forwardedAllowIps: string, venv = false, bindAddress?: string): string {
  if (!/^[0-9a-fA-F.:\/,]+$/.test(forwardedAllowIps)) {
    throw new Error(`forwarded-allow-ips must be addresses or CIDRs separated by commas (got ${JSON.stringify(forwardedAllowIps)})`);
  }
  if (bindAddress !== undefined && !/^[0-9.]+$/.test(bindAddress)) {
    throw new Error(`the app bind address must be an IPv4 address (got ${JSON.stringify(bindAddress)})`);
  }
  const unix = c.appUpstream === "unix";
  return [
    "# Rendered by fastapi-edge: environment of every fastapi-edge-app@PORT instance.",
    `APP_MODULE=${c.appModule}`,
    `APP_DIR=${HOST_PATHS.appDir}`,
    `STATIC_DIR=${HOST_PATHS.appDir}/${c.appStaticDir}`,
    `PYTHON=${c.appPython}`,
    ...(venv ? [`APP_VENV=${APP_VENV_DIR}`] : []),
    `UVICORN_HOST=${bindAddress ?? appBindAddress(c)}`,
    // appUpstream unix: run-app.sh serves APP_UDS_DIR/app-PORT.sock. A unix socket's peer has
    // no address for uvicorn to match, so only "*" makes it read X-Forwarded-*. Who may send
    // them is unchanged: a local process, as anything on the host could reach 127.0.0.1:PORT.
    ...(unix ? [`APP_UDS_DIR=${HOST_PATHS.appSocketDir}`] : []),
    `FORWARDED_ALLOW_IPS=${unix ? "*" : forwardedAllowIps}`,
    `APP_VERSION=${c.appVersion}`,
    `APP_PORTS=${appPorts(c).join(" ")}`,
    `HEALTH_PATH=${c.appHealthPath}`,
    "",
  ].join("\n");
}

/** The lines appUpstream unix adds to fastapi-edge-app@.service's [Service] section (renderAppUnit). */
export const APP_UNIT_SOCKET_LINES = [
  "# appUpstream unix: the instances' sockets, /run/fastapi-edge/app-PORT.sock (APP_UDS_DIR).",
  "# Every instance shares the directory: without Preserve, one instance stopping would",
  "# remove it, and the other instances' sockets with it. 0755: nginx's workers reach",
  "# the sockets, which uvicorn makes 0666.",
  "RuntimeDirectory=fastapi-edge",
  "RuntimeDirectoryMode=0755",
  "RuntimeDirectoryPreserve=yes",
] as const;

/**
 * fastapi-edge-app@.service: the shipped unit as it is, or with appUpstream unix its
 * RuntimeDirectory lines after LimitNOFILE (so the default's text, and existing
 * stacks' deploy step, stay unchanged).
 */
export function renderAppUnit(c: EdgeConfig): string {
  const unit = shipped("systemd/fastapi-edge-app@.service");
  if (c.appUpstream !== "unix") return unit;
  const anchor = "LimitNOFILE=65536\n";
  return replaceExact("systemd/fastapi-edge-app@.service", unit, anchor, `${anchor}${APP_UNIT_SOCKET_LINES.join("\n")}\n`);
}

/**
 * The containers' environment (appRuntime container), without IMAGE: container-deploy.sh adds
 * it once the image is loaded. FORWARDED_ALLOW_IPS stays unset: run-container.sh trusts the
 * podman network's gateway, the address every forwarded connection arrives from.
 * CONTAINER_PORT_GUARD=nft: the e2e's rolling switch to containers under load on the Debian 13
 * guest (podman 5.4) had 6 of 23,536 requests time out, stuck on conmon's port-reservation
 * socket while a container started; the guard resets such connections at once, so nginx
 * retries the next upstream (run-container.sh's header, docs/containers.md).
 */
export function renderContainerEnv(c: EdgeConfig): string {
  return [
    "# Rendered by fastapi-edge: environment of every fastapi-edge-container@PORT instance.",
    `APP_MODULE=${c.appModule}`,
    `APP_VERSION=${c.appVersion}`,
    "CONTAINER_NETWORK=fastapi-edge",
    "CONTAINER_PORT_GUARD=nft",
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
    `Environment=REQUESTS_CA_BUNDLE=${HOST_PATHS.acmeCaBundle}`,
    "",
  ].join("\n");
}

/**
 * systemd service + timer publishing the live certificate's lifetime left, in
 * percent (nginx mode, alertEmail set). Every 6 hours, so a 6-day certificate
 * is seen several times between certbot's renewal point (half its lifetime)
 * and expiry.
 */
/** When the expiry check runs: every 6 hours on the hour (UTC on EC2 images), one data point per alarm period. */
export const EXPIRY_CHECK_CALENDAR = "*-*-* 00/6:00:00";
/** Seconds between two expiry checks: the alarm's period. */
export const EXPIRY_CHECK_PERIOD_S = 6 * 3600;

export function renderExpiryUnits(c: EdgeConfig, region: string): { service: string; timer: string } {
  const service = [
    "# Rendered by fastapi-edge: publish the live certificate's lifetime left (percent) to CloudWatch.",
    "[Unit]",
    "Description=fastapi-edge certificate expiry check",
    "After=network-online.target nginx.service",
    "",
    "[Service]",
    "Type=oneshot",
    `Environment=AWS_REGION=${region}`,
    `Environment=WARN_PERCENT=${c.certExpiryAlarmPercent}`,
    // Exit 2 means "below the threshold": the alarm reports it, the unit should not fail.
    "SuccessExitStatus=2",
    `ExecStart=${HOST_PATHS.binDir}/cert-expiry-check.sh --host 127.0.0.1 --port 443 --servername ${c.domain} --publish`,
    "",
  ].join("\n");
  const timer = [
    "[Unit]",
    "Description=fastapi-edge certificate expiry check every 6 hours",
    "",
    "[Timer]",
    `OnCalendar=${EXPIRY_CHECK_CALENDAR}`,
    "RandomizedDelaySec=30min",
    "OnBootSec=5min",
    "Persistent=true",
    "",
    "[Install]",
    "WantedBy=timers.target",
    "",
  ].join("\n");
  return { service, timer };
}
