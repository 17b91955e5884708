// A throwaway nginx tree for tests: the renderer's output with every path
// remapped under a temp prefix, listening on 127.0.0.1 ports, certificates
// from a local CA. `nginx -t` and a live nginx both run against it.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { EdgeConfig } from "../../lib/config";
import { readOriginPullCa } from "../../lib/hostfiles";
import { HostLayout, Listen, renderAcmeBootstrap, renderSite, SiteOptions, StageFile } from "../../lib/nginx";

export interface LocalCa {
  dir: string;
  caCert: string;
  cert: string;
  key: string;
}

/**
 * `openssl req` arguments for a new unencrypted P-256 key: with `days`, a
 * self-signed certificate valid that long, else a certificate request.
 */
export function ecKeyReqArgs(o: { keyout: string; out: string; subj: string; days?: number }): string[] {
  const selfSigned = o.days !== undefined;
  return [
    "req",
    ...(selfSigned ? ["-x509"] : []),
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    o.keyout,
    "-out",
    o.out,
    ...(selfSigned ? ["-days", String(o.days)] : []),
    "-subj",
    o.subj,
  ];
}

/** A local CA and a server certificate for `names` (first is the CN). */
export function makeCa(dir: string, names: string[], days = 30): LocalCa {
  mkdirSync(dir, { recursive: true });
  const run = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  run(ecKeyReqArgs({ keyout: "ca.key", out: "ca.pem", days: 30, subj: "/CN=fastapi-edge test CA" }));
  run(ecKeyReqArgs({ keyout: "privkey.pem", out: "server.csr", subj: `/CN=${names[0]}` }));
  const san = names.map((n) => (/^[0-9.]+$/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(",");
  writeFileSync(
    path.join(dir, "ext.cnf"),
    `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n`,
  );
  run([
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "cert.pem",
    "-days",
    String(days),
    "-extfile",
    "ext.cnf",
  ]);
  const chain = execFileSync("cat", [path.join(dir, "cert.pem"), path.join(dir, "ca.pem")]);
  writeFileSync(path.join(dir, "fullchain.pem"), chain);
  return { dir, caCert: path.join(dir, "ca.pem"), cert: path.join(dir, "fullchain.pem"), key: path.join(dir, "privkey.pem") };
}

/** Which nginx step's stage: the full site, or the HTTP-only config pushed before the first certificate. */
export type Phase = "full" | "acme-bootstrap";

/** The stage a phase's step pushes, rendered for a test layout. */
export function renderStage(c: EdgeConfig, phase: Phase, o: SiteOptions): StageFile[] {
  // The origin-pull CA, read as the program reads it, when config names one (repo-relative or absolute).
  const pem = o.originPullCaPem ?? readOriginPullCa(c, path.resolve(__dirname, "..", ".."));
  const site: SiteOptions = pem === undefined ? o : { ...o, originPullCaPem: pem };
  return phase === "full" ? renderSite(c, site) : renderAcmeBootstrap({ domain: c.domain, layout: o.layout, listen: o.listen });
}

export interface NginxFixture {
  /** The tree's directory as this machine sees it. */
  root: string;
  /** nginx's config dir as this machine sees it. */
  confDir: string;
  /** Where a layout path lies on this machine (under the chroot, for a chroot fixture). */
  at(p: string): string;
  layout: HostLayout;
  listen: Listen;
  ca: LocalCa;
  files: StageFile[];
  /** Write a stage dir (conf/ + extra/) for nginx-apply.sh; returns its path. */
  writeStage(files: StageFile[]): string;
}

export function testLayout(root: string): HostLayout {
  return {
    nginxConfDir: path.join(root, "etc/nginx"),
    acmeWebroot: path.join(root, "var/www/letsencrypt"),
    maintenanceDir: path.join(root, "var/www/fastapi-edge"),
    staticDir: path.join(root, "opt/fastapi-edge/app/static"),
    logDir: path.join(root, "var/log/nginx"),
    pidFile: path.join(root, "run/nginx.pid"),
    certDir: path.join(root, "etc/letsencrypt/live/site"),
    workerUser: null,
    loadDistroModules: false,
    tempDir: path.join(root, "var/lib/nginx"),
    appSocketDir: path.join(root, "run/fastapi-edge"),
  };
}

/** Write rendered files into the tree: conf/ under confDir, extra/ under root; `at` maps layout paths to this machine's. */
export function installFiles(layout: HostLayout, files: StageFile[], at: (p: string) => string = (p) => p): void {
  for (const f of files) {
    const dest = at(f.path.startsWith("conf/") ? path.join(layout.nginxConfDir, f.path.slice(5)) : f.path.slice(5));
    mkdirSync(path.dirname(dest), { recursive: true });
    writeFileSync(dest, f.content);
  }
}

/**
 * Make a layout's directories, copy in nginx's mime.types, and install a new
 * local CA's server certificate (for `domain`, localhost and 127.0.0.1) as
 * the site's. `at` maps a layout path to where it lies on this machine (under
 * a chroot's root, say; by default the path itself); mime.types comes from
 * the same place's /etc/nginx.
 */
export function prepareLayout(layout: HostLayout, domain: string, caDir: string, at: (p: string) => string = (p) => p): LocalCa {
  const dirs = [
    layout.nginxConfDir,
    layout.acmeWebroot,
    layout.maintenanceDir,
    layout.staticDir,
    layout.logDir,
    path.dirname(layout.pidFile),
    layout.certDir,
    ...(layout.tempDir ? [layout.tempDir] : []),
    layout.appSocketDir,
  ];
  for (const d of dirs) mkdirSync(at(d), { recursive: true });
  copyFileSync(at("/etc/nginx/mime.types"), at(path.join(layout.nginxConfDir, "mime.types")));
  const ca = makeCa(caDir, [domain, "localhost", "127.0.0.1"]);
  copyFileSync(ca.cert, at(path.join(layout.certDir, "fullchain.pem")));
  copyFileSync(ca.key, at(path.join(layout.certDir, "privkey.pem")));
  return ca;
}

export function makeNginxFixture(
  c: EdgeConfig,
  opts: {
    listen: Listen;
    phase?: Phase;
    nginxVersion?: string;
    opensslVersion?: string;
    upstreamPorts?: number[];
    /** App hosts' addresses (appHosts): the upstream lists every host:port. */
    upstreamHosts?: string[];
    retryAfter?: number;
    /** Build the tree under this chroot's /tmp, with paths as nginx inside the chroot sees them. */
    chroot?: string;
    originPullCaPem?: string;
  },
): NginxFixture {
  const chroot = opts.chroot;
  const root = mkdtempSync(chroot ? path.join(chroot, "tmp", "fe-live-") : path.join(tmpdir(), "fe-nginx-"));
  const at = (p: string): string => (chroot ? path.join(chroot, p) : p);
  const layout = testLayout(chroot ? `/${path.relative(chroot, root)}` : root);
  const ca = prepareLayout(layout, c.domain, path.join(root, "ca"), at);
  const files = renderStage(c, opts.phase ?? "full", {
    layout,
    listen: opts.listen,
    ...(opts.nginxVersion ? { nginxVersion: opts.nginxVersion } : {}),
    ...(opts.opensslVersion ? { opensslVersion: opts.opensslVersion } : {}),
    ...(opts.upstreamPorts ? { upstreamPorts: opts.upstreamPorts } : {}),
    ...(opts.upstreamHosts ? { upstreamHosts: opts.upstreamHosts } : {}),
    ...(opts.retryAfter ? { retryAfter: opts.retryAfter } : {}),
    ...(opts.originPullCaPem !== undefined ? { originPullCaPem: opts.originPullCaPem } : {}),
  });
  installFiles(layout, files, at);
  const confDir = at(layout.nginxConfDir);
  return {
    root,
    confDir,
    at,
    layout,
    listen: opts.listen,
    ca,
    files,
    writeStage(stageFiles: StageFile[]): string {
      const stage = mkdtempSync(path.join(tmpdir(), "fe-stage-"));
      for (const f of stageFiles) {
        const dest = path.join(stage, f.path);
        mkdirSync(path.dirname(dest), { recursive: true });
        writeFileSync(dest, f.content);
      }
      return stage;
    },
  };
}

/** `nginx -t` of a fixture; returns nginx's combined output, throws on failure. */
export function nginxTest(confDir: string, nginxBin = "nginx"): string {
  try {
    return execFileSync(nginxBin, ["-t", "-c", path.join(confDir, "nginx.conf")], { stdio: "pipe", encoding: "utf8" });
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string };
    throw new Error(`nginx -t failed:\n${err.stderr ?? ""}${err.stdout ?? ""}`);
  }
}

/** Config variants every renderer check runs through real nginx (1.22 on the host, 1.26 in a chroot). */
export const RENDER_VARIANTS: Record<string, Record<string, unknown>> = {
  defaults: {},
  "single process, no keepalive": { appProcesses: 1, upstreamKeepalive: 0 },
  "many processes, conn limit, no access log": { appProcesses: 8, limitConnPerIp: 50, accessLog: false },
  "no rate limits, no scanner paths": { rateLimits: [], scannerPaths: [] },
  "several rate limits and websocket paths": {
    rateLimits: ["/auth/token:5r/m:10", "/api/signup:10r/s:0"],
    websocketPaths: ["/ws/", "/live/"],
  },
  "maintenance mode": { maintenanceMode: true },
  "no buffering, short timeouts": { proxyBuffering: false, proxyReadTimeout: "500ms", clientHeaderTimeout: "2s" },
  "hsts off": { hstsMaxAge: 0 },
  "extended forwarded headers": { proxyForwardedHeaders: "extended" },
  "behind cloudflare (every shipped range)": { frontedBy: "cloudflare" },
  "behind a custom proxy, X-Forwarded-For chain, IPv4 and IPv6 blocks": {
    frontedBy: "custom",
    trustedProxyCidrs: ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"],
  },
  "behind a custom proxy, True-Client-IP, origin pulls": {
    frontedBy: "custom",
    trustedProxyCidrs: ["198.51.100.0/24"],
    realIpHeader: "True-Client-IP",
    originPullCaFile: "test/unit/fixtures/origin-pull-ca.pem",
  },
};
