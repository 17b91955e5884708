// The manifest of host files: for each host step, the files it puts on the
// host, as a pure function of validated config. The components push exactly
// these (components/*.ts), and `npm run render` writes all of them
// (renderHostFiles). No Pulumi import.
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { ConfigError, EdgeConfig, PROJECT } from "./config";
import { NGINX_ORG_STABLE } from "./hostos";
import { HOST_PATHS, hostLayout, PUBLIC_LISTEN } from "./hostpaths";
import { durationSeconds, renderAcmeBootstrap, renderSite, StageFile } from "./nginx";
import { commandLine } from "./shell";
import { shipped } from "./shipped";
import { renderAppEnv, renderAppUnit, renderCertbotDropIn, renderContainerEnv, renderExpiryUnits, renderNginxDropIn } from "./units";

/**
 * Scripts from files/scripts/ that bootstrap-install puts into HOST_PATHS.binDir.
 * It runs before every other step, so any step may call them.
 */
export const HOST_SCRIPTS = [
  "install-packages.sh",
  "ensure-user.sh",
  "nginx-apply.sh",
  "run-app.sh",
  "app-rollout.sh",
  "app-remove.sh",
  "obtain-cert.sh",
  "cert-expiry-check.sh",
  "nginx-reload.sh",
  "app-deploy.sh",
  "cert-expiry-timer.sh",
  "acme-bootstrap.sh",
  "systemd-reload.sh",
  "nginx-remove.sh",
  "nginx-org-repo.sh",
  // appRuntime container (installed everywhere, inert without it)
  "container-lib.sh",
  "release-lib.sh",
  "container-network.sh",
  "container-load.sh",
  "container-pull.sh",
  "container-prune.sh",
  "container-deploy.sh",
  "container-remove.sh",
  "run-container.sh",
] as const;

export type HostScript = (typeof HOST_SCRIPTS)[number];

/** Where a host script is installed. */
export function installedScript(name: HostScript): string {
  return `${HOST_PATHS.binDir}/${name}`;
}

export interface HostFile {
  /** Absolute path on the host, or stage-relative for nginx files. */
  path: string;
  content: string;
  mode?: number;
}

// ------------------------------------------------------------- the steps

/**
 * bootstrap-wait-ssh: the script it runs, sent as its stdin. It runs before
 * bootstrap-install, so it cannot be one of the installed host scripts.
 */
export function waitForBootShell(): string {
  return shipped("scripts/wait-for-boot.sh");
}

/** bootstrap-install: the host scripts. */
export function hostInstallFiles(): HostFile[] {
  return HOST_SCRIPTS.map((s) => ({ path: installedScript(s), content: shipped(`scripts/${s}`), mode: 0o755 }));
}

/** nginx from nginx.org's repository: only where the front end is nginx. */
function fromNginxOrg(c: Pick<EdgeConfig, "nginxSource" | "frontend">): boolean {
  return c.frontend === "nginx" && c.nginxSource === "nginx.org";
}

/** The signing keys of nginx.org's repository, shipped in files/apt/ (never downloaded at deploy time). */
export const NGINX_ORG_KEYS_FILE = "apt/nginx-org-signing-keys.asc";

/** bootstrap-install, nginxSource nginx.org: nginx.org's signing keys for nginx-org-repo.sh. */
export function nginxSourceFiles(c: Pick<EdgeConfig, "nginxSource" | "frontend">): HostFile[] {
  return fromNginxOrg(c) ? [{ path: HOST_PATHS.nginxOrgKeys, content: shipped(NGINX_ORG_KEYS_FILE) }] : [];
}

/**
 * bootstrap-install's commands after the files are written: with nginxSource
 * nginx.org, nginx.org's repository and nginx from it first (so the
 * distribution's nginx is never installed, or is replaced), then every other
 * package, then the app's user.
 */
export function bootstrapCommands(
  c: Pick<EdgeConfig, "nginxSource" | "frontend">,
  packages: string[],
  withoutRecommends: string[] = [],
): string[] {
  return [
    `install -d -m 0755 ${HOST_PATHS.base} ${HOST_PATHS.etcDir} ${HOST_PATHS.stateDir}`,
    ...(fromNginxOrg(c) ? [commandLine(installedScript("nginx-org-repo.sh"), NGINX_ORG_STABLE, HOST_PATHS.nginxOrgKeys)] : []),
    commandLine(installedScript("install-packages.sh"), ...packages),
    ...(withoutRecommends.length > 0
      ? [commandLine(installedScript("install-packages.sh"), "--no-install-recommends", ...withoutRecommends)]
      : []),
    `${installedScript("ensure-user.sh")} fastapi-edge`,
  ];
}

/** app-deploy: the systemd template unit and the app's environment. */
export function appDeployFiles(c: EdgeConfig, forwardedAllowIps: string, venv = false, bindAddress?: string): HostFile[] {
  return [
    { path: HOST_PATHS.appUnit, content: renderAppUnit(c) },
    { path: HOST_PATHS.envFile, content: renderAppEnv(c, forwardedAllowIps, venv, bindAddress) },
  ];
}

/** The container deploy step's files: the unit template and the containers' environment, as a candidate container-deploy.sh switches in. */
export function containerDeployFiles(c: EdgeConfig): HostFile[] {
  return [
    { path: HOST_PATHS.containerUnit, content: shipped("systemd/fastapi-edge-container@.service") },
    { path: `${HOST_PATHS.containerEnvFile}.candidate`, content: renderContainerEnv(c) },
  ];
}

/**
 * nginx-acme-bootstrap: the HTTP-only nginx stage, from the domain alone, so
 * no setting re-runs the step.
 */
export function acmeBootstrapStage(c: EdgeConfig): StageFile[] {
  return renderAcmeBootstrap({ domain: c.domain, layout: hostLayout(c), listen: PUBLIC_LISTEN, forwardedHeaders: c.proxyForwardedHeaders });
}

/**
 * The configured ACME CA bundle's text (read from the project), or undefined
 * when config names none. Refuses a file that holds no PEM certificate.
 */
export function readAcmeCaBundle(c: EdgeConfig, projectDir: string): string | undefined {
  if (!c.acmeCaBundle) return undefined;
  const pem = readFileSync(path.resolve(projectDir, c.acmeCaBundle), "utf8");
  if (!/^-----BEGIN CERTIFICATE-----/m.test(pem)) {
    throw new ConfigError([`${PROJECT}:acmeCaBundle must be a PEM file of certificates (got ${c.acmeCaBundle})`]);
  }
  return pem;
}

/**
 * nginx-certificate: certbot's deploy hook, and with a private ACME CA its
 * bundle and the certbot.service drop-in that makes renewals trust it.
 */
export function certificateFiles(acmeCaBundlePem: string | undefined): HostFile[] {
  return [
    { path: HOST_PATHS.deployHook, content: shipped("scripts/certbot-deploy-hook.sh"), mode: 0o755 },
    ...(acmeCaBundlePem !== undefined
      ? [
          { path: HOST_PATHS.acmeCaBundle, content: acmeCaBundlePem },
          { path: HOST_PATHS.certbotDropIn, content: renderCertbotDropIn() },
        ]
      : []),
  ];
}

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+\/=\r\n]+?-----END CERTIFICATE-----/g;

/**
 * The origin-pull CA (originPullCaFile, read from the project) as clean PEM,
 * or undefined when config names none. Every certificate in the file must
 * parse, at least one must be a CA, and the file must hold no private key
 * (it is shipped to the host). What is returned is the certificates alone,
 * re-encoded, so no other text of the file reaches the host.
 */
export function readOriginPullCa(c: EdgeConfig, projectDir: string): string | undefined {
  if (!c.originPullCaFile) return undefined;
  const file = c.originPullCaFile;
  const refuse = (why: string): never => {
    throw new ConfigError([`${PROJECT}:originPullCaFile must be a PEM file of CA certificates: ${why} (got ${file})`]);
  };
  let text: string;
  try {
    text = readFileSync(path.resolve(projectDir, file), "utf8");
  } catch (e) {
    return refuse(`cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (/PRIVATE KEY-----/.test(text)) refuse("it holds a private key, which must never be shipped to the host");
  const blocks = text.match(PEM_CERT_RE) ?? [];
  if (!blocks.length) refuse("no -----BEGIN CERTIFICATE----- block");
  const certs = blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (e) {
      return refuse(`certificate ${i + 1} does not parse (${(e as Error).message})`);
    }
  });
  if (!certs.some((x) => x.ca)) refuse("no certificate in it is a CA (basicConstraints CA:TRUE)");
  return certs.map((x) => x.toString().replace(/\r\n/g, "\n").replace(/\n?$/, "\n")).join("");
}

/** nginx-site: the nginx.service drop-in, and the full nginx stage (with the origin-pull CA when configured). */
export function siteFiles(c: EdgeConfig, originPullCaPem?: string, upstreamHosts?: string[]): { dropIn: HostFile; stage: StageFile[] } {
  return {
    dropIn: { path: HOST_PATHS.nginxDropIn, content: renderNginxDropIn(c) },
    stage: renderSite(c, {
      layout: hostLayout(c),
      listen: PUBLIC_LISTEN,
      ...(originPullCaPem !== undefined ? { originPullCaPem } : {}),
      ...(upstreamHosts?.length ? { upstreamHosts } : {}),
    }),
  };
}

/** cert-expiry-timer: the daily check's service and timer. */
export function expiryTimerFiles(c: EdgeConfig, region: string): HostFile[] {
  const units = renderExpiryUnits(c, region);
  return [
    { path: HOST_PATHS.expiryService, content: units.service },
    { path: HOST_PATHS.expiryTimer, content: units.timer },
  ];
}

// ------------------------------------------------------- all of them at once

export interface HostFileSet {
  /** The nginx stage (conf/ and extra/), pushed with nginx-apply.sh. */
  nginx: StageFile[];
  /** Scripts, units and env files, keyed by absolute path. */
  system: HostFile[];
}

export interface HostFileOptions {
  /** AWS region the cert-expiry check publishes to (when alertEmail is set). */
  region?: string;
  /** The nginx stage to write: the full site, or the ACME bootstrap's HTTP-only config. */
  phase: "acme-bootstrap" | "full";
  /** Addresses uvicorn trusts forwarded headers from (nginx: 127.0.0.1; ALB: the VPC range). */
  forwardedAllowIps?: string;
  /** The ACME CA bundle's PEM text, when config names one (readAcmeCaBundle). */
  acmeCaBundlePem?: string;
  /** The origin-pull CA's PEM text, when config names one (readOriginPullCa). */
  originPullCaPem?: string;
}

/** Every file the steps of this config put on a host (`npm run render`). */
export function renderHostFiles(c: EdgeConfig, o: HostFileOptions): HostFileSet {
  const system: HostFile[] = [...hostInstallFiles(), ...nginxSourceFiles(c), ...appDeployFiles(c, o.forwardedAllowIps ?? "127.0.0.1")];
  if (c.frontend === "alb") return { nginx: [], system };

  // appHosts' addresses are config; appHostCount's are known only once the instances exist.
  const site = siteFiles(
    c,
    o.originPullCaPem,
    c.appHosts.map((h) => h.address),
  );
  system.push(site.dropIn, ...certificateFiles(o.acmeCaBundlePem));
  if (c.alertEmail) system.push(...expiryTimerFiles(c, o.region ?? "us-east-1"));
  return { nginx: o.phase === "full" ? site.stage : acmeBootstrapStage(c), system };
}

/**
 * Pause between two app processes in a rolling restart. While a process
 * restarts nginx counts its refused connections and, after max_fails, keeps it
 * out for fail_timeout: restarting the next one before then leaves no live
 * upstream. +2 s: nginx's clock ticks in seconds and one request must succeed
 * to re-admit the process. Found by test/stress/rollout.test.ts.
 *
 * fail_timeout runs from the last failure, and a connection nginx opened while
 * the process was down can fail only later: to a container, the SYN is
 * forwarded to the stopped container's bridge address and fails with "No route
 * to host" once ARP gives up, about 3 s later, or at proxy_connect_timeout
 * (test/live/container-rollout.test.ts saw it 4 s after the restart, the new
 * container already healthy; the next restart then left no live upstream).
 * Across hosts a lost SYN waits the same way. So for containers and app hosts
 * the pause also covers proxy_connect_timeout. On loopback a refused connect
 * fails at once.
 */
export function rolloutSettleSeconds(c: EdgeConfig): number {
  if (c.frontend !== "nginx" || c.upstreamMaxFails === 0) return 0;
  const lateFailure = c.appRuntime === "container" || c.appHosts.length > 0 || c.appHostCount > 0;
  return Math.ceil(durationSeconds(c.upstreamFailTimeout)) + 2 + (lateFailure ? Math.ceil(durationSeconds(c.proxyConnectTimeout)) : 0);
}
