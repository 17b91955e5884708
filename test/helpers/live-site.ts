// A live fastapi-edge site on 127.0.0.1: real nginx running the files the
// renderer produces (paths remapped under a temp prefix by makeNginxFixture,
// certificates from a throwaway local CA) in front of the sample FastAPI app
// under uvicorn, started through files/scripts/run-app.sh with the product's
// flags (FORWARDED_ALLOW_IPS=127.0.0.1).
//
//   const site = await startLiveSite({ config: { proxyReadTimeout: "2s" } });
//   try { ... await site.https("/api/hello") ... } finally { await site.stop(); }
//
// Every process is stopped by PID in stop() (nginx master, then any worker
// left behind; each uvicorn), and, as a last resort, with SIGTERM when the
// Node process exits. A failed start stops whatever it had started.
//
// The harness is shared: proxy, reload, TLS-scan tests, the benchmark and
// stress tests build on it. Options cover config overrides, the number of
// app processes, short timeouts, extra env, extra static files, reusing app
// processes of another site, and the seed guide's config (files/seed/) as a
// comparison variant rendered into the same tree.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import { EdgeConfig, parseConfig, RawConfig } from "../../lib/config";
import { readOriginPullCa } from "../../lib/hostfiles";
import { nginxVersionOf, SYSTEM_PATH } from "./chroot";
import { renderSite, StageFile } from "../../lib/nginx";
import { installFiles, makeNginxFixture, NginxFixture } from "./nginx-fixture";
import {
  APP_DIR,
  REPO_ROOT,
  SYSTEM_PYTHON,
  collectResponse,
  freePorts,
  freePortsInRange,
  isAlive,
  run,
  script,
  sleep,
  startProcess,
  stopPid,
  waitFor,
  waitForHttp,
  waitForPort,
  type HttpResponse,
  type RunResult,
  type StartedProcess,
} from "./proc";

/** Test domain: `.test` is reserved (RFC 2606), never resolves on the internet. */
export const LIVE_DOMAIN = "edge.fastapi-edge.test";
/** The seed guide's server_name, kept as written in files/seed/seed-site.conf. */
export const SEED_DOMAIN = "api.example.com";
export const SEED_DIR = path.join(REPO_ROOT, "files", "seed");
export const ARTIFACTS_DIR = path.join(REPO_ROOT, "test", "artifacts");

/** Timeouts short enough for tests that wait on them (overridable by `config`). */
export const SHORT_TIMEOUTS: RawConfig = {
  proxyConnectTimeout: "1s",
  proxyReadTimeout: "5s",
  proxySendTimeout: "5s",
  websocketReadTimeout: "30s",
  clientHeaderTimeout: "5s",
  clientBodyTimeout: "5s",
  sendTimeout: "5s",
  keepaliveTimeout: "10s",
  upstreamFailTimeout: "1s",
};

export interface LiveSiteOptions {
  /** Raw stack config merged over {domain, email} (and SHORT_TIMEOUTS when shortTimeouts). */
  config?: RawConfig;
  /** Apply SHORT_TIMEOUTS before `config`. Default false. */
  shortTimeouts?: boolean;
  /** uvicorn processes to start, one per free port. Default 1. */
  appProcesses?: number;
  /** Proxy to these already-running app ports instead of starting apps (e.g. another site's). */
  reuseAppPorts?: number[];
  /** Start the app processes (default true; false renders the upstream but leaves it down). */
  startApp?: boolean;
  /** Extra environment for every app process (over the product's). */
  appEnv?: Record<string, string>;
  /** FASTAPI_EDGE_STATS=1 (connection counter at /_stats). Default true. */
  stats?: boolean;
  /** Extra files in the static dir served at the static path (name -> content). */
  staticFiles?: Record<string, string | Buffer>;
  /** Retry-After seconds on the maintenance page (renderer default 30). */
  retryAfter?: number;
  /** nginx version the renderer targets (default: the local nginx's). */
  nginxVersion?: string;
  /**
   * "rendered" (default): lib/nginx output. "seed": files/seed/nginx.conf +
   * seed-site.conf (the seed guide's config as written, only paths/ports
   * adapted) installed into the same temp tree with the same certs and app.
   */
  variant?: "rendered" | "seed";
  /** Extra environment for nginx. */
  nginxEnv?: Record<string, string>;
  /** Wait this long for processes to listen. Default 30 s. */
  startTimeoutMs?: number;
  /** Listen on these ports (http, https, then one per app process) instead of kernel-chosen free ones. */
  ports?: number[];
  /**
   * Run the nginx of this chroot (a scripts/get-chroot.sh root, e.g. nginx 1.30
   * from Debian unstable) instead of the host's. The tree lives under
   * ROOT/tmp with paths as nginx in the chroot sees them; the app runs on the
   * host (the chroot shares its network, so nginx reaches it on 127.0.0.1);
   * nginx-apply.sh runs on the host with an NGINX_BIN that runs the chroot's
   * nginx on the same files. The tree is removed by stop().
   */
  chroot?: string;
  /** Take every port from [lo, hi] (default: any free port). */
  portRange?: [number, number];
  /**
   * Edit the installed nginx files before nginx starts: called with each
   * file's path relative to the config dir and its content, returns the new
   * content (the benchmark's levers: worker count, ssl_buffer_size, ...).
   */
  transformConf?: (relPath: string, content: string) => string;
}

export type Response = HttpResponse;

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Host header (default: the site's domain). */
  host?: string;
  /** TLS SNI (default: the site's domain). */
  servername?: string;
  /** Source address of the client socket (a loopback alias such as 127.0.0.2). */
  localAddress?: string;
  timeoutMs?: number;
}

/** What a raw exchange got back before the server closed (or the timeout). */
export interface RawExchange {
  bytes: Buffer;
  /** "end": orderly close (FIN / close_notify); "error": reset or TLS alert; "timeout": still open. */
  closed: "end" | "error" | "timeout";
  error: string | null;
}

export interface AppStats {
  connections: number;
  requests: number;
}

export interface WrkOptions {
  /** Full URL; for the site's HTTPS use site.httpsUrl(path). */
  url: string;
  threads?: number;
  connections?: number;
  durationS?: number;
  headers?: Record<string, string>;
  latency?: boolean;
  timeoutS?: number;
}

export interface WrkResult {
  requests: number;
  durationS: number;
  rps: number;
  bytesRead: string;
  errors: { connect: number; read: number; write: number; timeout: number; status: number };
  /** Latency percentiles in ms (with `latency: true`). */
  latencyMs: { p50: number; p75: number; p90: number; p99: number } | null;
  raw: string;
}

export interface RunningWrk {
  readonly pid: number;
  stop(): Promise<WrkResult>;
}

export interface LiveSite {
  readonly variant: "rendered" | "seed";
  readonly domain: string;
  readonly config: EdgeConfig;
  readonly fixture: NginxFixture;
  readonly root: string;
  readonly httpPort: number;
  readonly httpsPort: number;
  readonly appPorts: number[];
  readonly caCert: string;
  readonly staticDir: string;
  readonly acmeWebroot: string;
  readonly accessLog: string;
  readonly errorLog: string;
  readonly stateDir: string;
  /** nginx master PID. */
  nginxPid(): number;
  /** PIDs of the running app processes by port (0 when stopped). */
  appPids(): Map<number, number>;
  httpsUrl(p: string): string;
  httpUrl(p: string): string;
  appUrl(p: string, index?: number): string;
  /** HTTPS request to nginx with the site's SNI, Host and CA. */
  https(p: string, opts?: RequestOptions): Promise<Response>;
  /** Plain HTTP request to nginx's port 80 equivalent (Host: the domain). */
  http(p: string, opts?: RequestOptions): Promise<Response>;
  /** Write raw bytes over TLS (or plain HTTP) and collect everything until the server closes. */
  raw(data: string, opts?: { tls?: boolean; servername?: string | null; timeoutMs?: number }): Promise<RawExchange>;
  /** Sum of /_stats over the app processes (read directly from uvicorn). */
  stats(): Promise<AppStats>;
  resetStats(): Promise<void>;
  stopApp(index?: number): Promise<void>;
  startApp(index?: number): Promise<void>;
  /** Render this site's files for other config (same layout, ports, upstreams). */
  render(overrides?: RawConfig): StageFile[];
  /** Write a stage dir (conf/ + extra/) for nginx-apply.sh. */
  writeStage(files: StageFile[]): string;
  /** Run files/scripts/nginx-apply.sh on a stage against this nginx. */
  apply(stage: string, args?: string[]): Promise<RunResult>;
  /** Reload nginx (SIGHUP) and wait until a new worker generation serves. */
  reload(): Promise<void>;
  /** sha256 of every file under the live config dir. */
  snapshotConf(): Record<string, string>;
  /** Run wrk to completion. */
  wrk(o: WrkOptions): Promise<WrkResult>;
  /** Start wrk in the background; stop() sends SIGINT, wrk prints its totals, they are parsed. */
  startWrk(o: WrkOptions): Promise<RunningWrk>;
  stop(): Promise<void>;
}

// ---------------------------------------------------------------- cleanup

/** PIDs this module started and has not stopped: SIGTERM on process exit. */
const livePids = new Set<number>();
let exitHookInstalled = false;
function track(pid: number): void {
  livePids.add(pid);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const p of livePids) {
        try {
          process.kill(p, "SIGTERM");
        } catch {
          // already gone
        }
      }
    });
  }
}

/** Children of a PID (by scanning /proc: nginx workers of a master). */
export function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const ent of readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(ent)) continue;
    try {
      const stat = readFileSync(`/proc/${ent}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === ppid) out.push(Number(ent));
    } catch {
      // raced with exit
    }
  }
  return out;
}

/** Stop an nginx master by PID, then any worker it left behind. */
export async function stopNginx(pid: number): Promise<void> {
  const workers = childPids(pid);
  await stopPid(pid, 10_000);
  await Promise.all(workers.filter(isAlive).map((w) => stopPid(w, 5_000)));
  livePids.delete(pid);
}

// ---------------------------------------------------------------- HTTP

export function httpsRequest(
  port: number,
  p: string,
  ca: string | Buffer,
  opts: RequestOptions & { servername: string; host: string },
): Promise<Response> {
  return send(https.request, { servername: opts.servername, ca }, port, p, opts, "https");
}

export function plainRequest(port: number, p: string, opts: RequestOptions & { host: string }): Promise<Response> {
  return send(http.request, {}, port, p, opts, "http");
}

/** One HTTP request over a unix socket (an app started with APP_UDS). */
export function unixRequest(socketPath: string, p: string, opts: RequestOptions & { host: string }): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath, path: p, method: opts.method ?? "GET", agent: false, headers: { Host: opts.host, ...(opts.headers ?? {}) } },
      (res) => collectResponse(res, resolve, reject),
    );
    req.setTimeout(opts.timeoutMs ?? 15_000, () => req.destroy(new Error(`timeout: unix ${socketPath} ${p}`)));
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** One request to 127.0.0.1:port with a fresh connection (no agent). */
function send(
  request: typeof https.request,
  tlsOptions: https.RequestOptions,
  port: number,
  p: string,
  opts: RequestOptions & { host: string },
  scheme: string,
): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path: p,
        method: opts.method ?? "GET",
        ...tlsOptions,
        agent: false,
        ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
        headers: { Host: opts.host, ...(opts.headers ?? {}) },
      },
      (res) => collectResponse(res, resolve, reject),
    );
    req.setTimeout(opts.timeoutMs ?? 15_000, () => req.destroy(new Error(`timeout: ${scheme} ${p}`)));
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** Raw bytes to 127.0.0.1:port (TLS with SNI when servername is given), collected until close. */
export function rawExchange(
  port: number,
  data: string,
  opts: { tls?: { servername: string | null; ca: string | Buffer }; timeoutMs?: number },
): Promise<RawExchange> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (closed: RawExchange["closed"], error: string | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ bytes: Buffer.concat(chunks), closed, error });
    };
    const sock: net.Socket = opts.tls
      ? tls.connect({ host: "127.0.0.1", port, ca: opts.tls.ca, ...(opts.tls.servername ? { servername: opts.tls.servername } : {}) }, () =>
          sock.write(data),
        )
      : net.connect({ host: "127.0.0.1", port }, () => sock.write(data));
    const timer = setTimeout(() => finish("timeout", null), opts.timeoutMs ?? 5_000);
    sock.on("data", (c: Buffer) => chunks.push(c));
    sock.on("end", () => finish("end", null));
    sock.on("close", () => finish("end", null));
    sock.on("error", (e: NodeJS.ErrnoException) => finish("error", `${e.code ?? ""} ${e.message}`.trim()));
  });
}

// ---------------------------------------------------------------- wrk

/** Does `name` resolve to 127.0.0.1 here (e.g. an /etc/hosts line in CI)? */
export async function resolvesToLoopback(name: string): Promise<boolean> {
  const res = await run("getent", ["ahostsv4", name], { timeoutMs: 10_000 });
  return res.code === 0 && /^127\.0\.0\.1\s/m.test(res.stdout);
}

/**
 * wrk sends the URL's host as TLS SNI and must resolve it, so HTTPS runs use
 * the site's domain. When that name does not resolve to 127.0.0.1, wrk runs in
 * a private mount namespace with a hosts file mapping it (unshare -m, root
 * only); nothing outside that one process changes.
 */
export async function wrkCommand(o: WrkOptions, workDir: string): Promise<{ cmd: string; args: string[] }> {
  const args = [
    "-t",
    String(o.threads ?? 2),
    "-c",
    String(o.connections ?? 50),
    "-d",
    `${o.durationS ?? 5}s`,
    "--timeout",
    `${o.timeoutS ?? 10}s`,
    ...(o.latency ? ["--latency"] : []),
    ...Object.entries(o.headers ?? {}).flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
    o.url,
  ];
  const host = new URL(o.url).hostname;
  if (net.isIP(host) || host === "localhost" || (await resolvesToLoopback(host))) return { cmd: "wrk", args };
  if (process.getuid?.() !== 0) {
    throw new Error(`${host} does not resolve to 127.0.0.1 and unshare needs root: add "127.0.0.1 ${host}" to /etc/hosts`);
  }
  mkdirSync(workDir, { recursive: true });
  const hosts = path.join(workDir, `hosts-${host}`);
  writeFileSync(hosts, `127.0.0.1 localhost\n127.0.0.1 ${host}\n`);
  // unshare and sh both exec: the PID we get is wrk's.
  return { cmd: "unshare", args: ["-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec wrk "$@"', hosts, ...args] };
}

function parseDurationMs(s: string): number {
  const m = /^([0-9.]+)(us|ms|s|m|h)$/.exec(s.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  const unit = m[2];
  return unit === "us" ? n / 1000 : unit === "ms" ? n : unit === "s" ? n * 1000 : unit === "m" ? n * 60_000 : n * 3_600_000;
}

export function parseWrk(out: string): WrkResult {
  const total = /([0-9]+) requests in ([0-9.]+[a-z]+), ([0-9.]+[A-Za-z]+) read/.exec(out);
  if (!total) throw new Error(`cannot parse wrk output:\n${out}`);
  const sock = /Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)/.exec(out);
  const status = /Non-2xx or 3xx responses: ([0-9]+)/.exec(out);
  const rps = /Requests\/sec:\s+([0-9.]+)/.exec(out);
  const pct = (p: string): number => {
    const m = new RegExp(`^\\s+${p}%\\s+([0-9.]+[a-z]+)`, "m").exec(out);
    return m ? parseDurationMs(m[1]!) : NaN;
  };
  const latency = /Latency Distribution/.test(out) ? { p50: pct("50"), p75: pct("75"), p90: pct("90"), p99: pct("99") } : null;
  return {
    requests: Number(total[1]),
    durationS: parseDurationMs(total[2]!) / 1000,
    rps: rps ? Number(rps[1]) : NaN,
    bytesRead: total[3]!,
    errors: {
      connect: sock ? Number(sock[1]) : 0,
      read: sock ? Number(sock[2]) : 0,
      write: sock ? Number(sock[3]) : 0,
      timeout: sock ? Number(sock[4]) : 0,
      status: status ? Number(status[1]) : 0,
    },
    latencyMs: latency,
    raw: out,
  };
}

export function wrkFailures(r: WrkResult): number {
  const e = r.errors;
  return e.connect + e.read + e.write + e.timeout + e.status;
}

// ---------------------------------------------------------------- seed

/** The seed guide's config (files/seed/) with paths and ports filled in. */
function renderSeed(fx: NginxFixture, httpPort: number, httpsPort: number, upstreamPorts: number[]): StageFile[] {
  const L = fx.layout;
  const vars: Record<string, string> = {
    ROOT: fx.root,
    CONF_DIR: L.nginxConfDir,
    PID_FILE: L.pidFile,
    LOG_DIR: L.logDir,
    TEMP_DIR: L.tempDir!,
    HTTP_PORT: String(httpPort),
    HTTPS_PORT: String(httpsPort),
    UPSTREAM_PORT: String(upstreamPorts[0]),
    CERT_DIR: L.certDir,
    ACME_WEBROOT: L.acmeWebroot,
    STATIC_DIR: L.staticDir,
  };
  const fill = (text: string): string =>
    text.replace(/@([A-Z_]+)@/g, (m: string, k: string) => {
      const v = vars[k];
      if (v === undefined) throw new Error(`files/seed: unknown placeholder ${m}`);
      return v;
    });
  return [
    { path: "conf/nginx.conf", content: fill(readFileSync(path.join(SEED_DIR, "nginx.conf"), "utf8")) },
    { path: "conf/sites-enabled/seed-site.conf", content: fill(readFileSync(path.join(SEED_DIR, "seed-site.conf"), "utf8")) },
  ];
}

// ---------------------------------------------------------------- start

/** nginx version of a chroot's /usr/sbin/nginx. */
function chrootNginxVersion(chroot: string): string {
  const out = spawnSync("chroot", [chroot, "/usr/bin/env", "-i", `PATH=${SYSTEM_PATH}`, "/usr/sbin/nginx", "-v"], { encoding: "utf8" });
  return nginxVersionOf(`${out.stdout}${out.stderr}`);
}

/**
 * An NGINX_BIN for nginx-apply.sh and nginx-reload.sh that runs the chroot's
 * nginx: arguments naming a path under the chroot (the candidate tree, the
 * live nginx.conf) are given as the chroot sees them.
 */
function chrootNginxWrapper(chroot: string, dir: string): string {
  const file = path.join(dir, "nginx-in-chroot");
  writeFileSync(
    file,
    [
      "#!/usr/bin/env bash",
      "# nginx of a chroot, for nginx-apply.sh: paths under the chroot translated to its view.",
      "set -euo pipefail",
      `root=${JSON.stringify(chroot)}`,
      "args=()",
      'for a in "$@"; do',
      '  if [[ $a == "$root"/* ]]; then args+=("${a#"$root"}"); else args+=("$a"); fi',
      "done",
      `exec chroot "$root" /usr/bin/env -i PATH=${SYSTEM_PATH} /usr/sbin/nginx "\${args[@]}"`,
      "",
    ].join("\n"),
  );
  chmodSync(file, 0o755);
  return file;
}

function localNginxVersion(): string {
  // `nginx -v` prints to stderr: "nginx version: nginx/1.22.1"
  const out = spawnSync("nginx", ["-v"], { encoding: "utf8" });
  const m = /nginx\/([0-9.]+)/.exec(out.stderr);
  return m ? m[1]! : "1.22.1";
}

/** OpenSSL the local nginx (or a chroot's) runs with (`nginx -V`): it decides the TLS groups nginx accepts. */
export function localNginxOpenSsl(chroot?: string): string {
  const out = chroot
    ? spawnSync("chroot", [chroot, "/usr/bin/env", "-i", `PATH=${SYSTEM_PATH}`, "/usr/sbin/nginx", "-V"], { encoding: "utf8" })
    : spawnSync("nginx", ["-V"], { encoding: "utf8" });
  const m = /running with OpenSSL ([0-9.]+)/.exec(out.stderr) ?? /built with OpenSSL ([0-9.]+)/.exec(out.stderr);
  if (!m) throw new Error(`cannot read the OpenSSL version from nginx -V:\n${out.stderr}`);
  return m[1]!;
}

/** The origin-pull CA's PEM as the program reads it, when config names one (an absolute or repo-relative path). */
function withOriginPullCa(c: EdgeConfig): { originPullCaPem?: string } {
  const pem = readOriginPullCa(c, REPO_ROOT);
  return pem === undefined ? {} : { originPullCaPem: pem };
}

export async function startLiveSite(opts: LiveSiteOptions = {}): Promise<LiveSite> {
  const variant = opts.variant ?? "rendered";
  const domain = variant === "seed" ? SEED_DOMAIN : LIVE_DOMAIN;
  const raw: RawConfig = {
    domain,
    email: "ops@fastapi-edge.test",
    hostMode: "existing",
    hostAddress: "127.0.0.1",
    ...(opts.shortTimeouts ? SHORT_TIMEOUTS : {}),
    ...(opts.config ?? {}),
  };
  const config = parseConfig(raw);
  const chroot = opts.chroot;
  if (chroot && variant === "seed") throw new Error("the seed variant runs on the host's nginx only");
  const nginxVersion = opts.nginxVersion ?? (chroot ? chrootNginxVersion(chroot) : localNginxVersion());
  const opensslVersion = localNginxOpenSsl(chroot);
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  const nApps = opts.reuseAppPorts ? opts.reuseAppPorts.length : (opts.appProcesses ?? 1);
  const nPorts = 2 + (opts.reuseAppPorts ? 0 : nApps);
  if (opts.ports && opts.ports.length < nPorts) throw new Error(`ports: need ${nPorts}, got ${opts.ports.length}`);
  const ports = opts.ports ?? (opts.portRange ? await freePortsInRange(nPorts, ...opts.portRange) : await freePorts(nPorts));
  const httpPort = ports[0]!;
  const httpsPort = ports[1]!;
  const appPorts = opts.reuseAppPorts ?? ports.slice(2);
  const listen = { address: "127.0.0.1", http: httpPort, https: httpsPort };

  const fixture = makeNginxFixture(config, {
    listen,
    nginxVersion,
    opensslVersion,
    upstreamPorts: appPorts,
    ...(opts.retryAfter ? { retryAfter: opts.retryAfter } : {}),
    ...withOriginPullCa(config),
    ...(chroot ? { chroot } : {}),
  });
  const root = fixture.root;
  const L = fixture.layout;
  /** A layout path as this machine sees it. */
  const at = fixture.at;
  // mkdtemp makes the prefix 0700; nginx workers (user nobody when the master
  // is root) must traverse it to read static files and the maintenance page.
  chmodSync(root, 0o755);
  const stateDir = path.join(root, "var/lib/fastapi-edge");
  const workDir = path.join(root, "work");
  const pycache = path.join(root, "pycache");
  mkdirSync(stateDir, { recursive: true });
  mkdirSync(workDir, { recursive: true });

  // Static files: the app's own, plus extras; the app's StaticFiles mount
  // (STATIC_DIR) serves the same directory, for direct comparisons.
  cpSync(path.join(APP_DIR, "static"), at(L.staticDir), { recursive: true });
  for (const [name, content] of Object.entries(opts.staticFiles ?? {})) {
    const dest = path.join(at(L.staticDir), name);
    mkdirSync(path.dirname(dest), { recursive: true });
    writeFileSync(dest, content);
  }

  if (variant === "seed") {
    // Replace the rendered tree by the seed's (same paths, certs, ports).
    rmSync(path.join(L.nginxConfDir, "fastapi-edge"), { recursive: true, force: true });
    installFiles(L, renderSeed(fixture, httpPort, httpsPort, appPorts));
  }

  // Config appUpstream unix: the rendered upstream names app-PORT.sock in the layout's
  // appSocketDir (under the tree, short enough for sun_path), and the apps find them as the
  // product's do (run-app.sh APP_UDS_DIR). Stats and health checks go over the sockets.
  const uds = config.appUpstream === "unix";
  const udsDir = at(L.appSocketDir);
  const socketOf = (port: number): string | null => (uds ? path.join(udsDir, `app-${port}.sock`) : null);
  if (uds) {
    if (chroot) throw new Error("appUpstream unix runs on the host's nginx only");
    mkdirSync(udsDir, { recursive: true });
  }
  const transforms: ((relPath: string, content: string) => string)[] = [];
  // transformConf must change something: a lever whose text is not there would silently be plain ours.
  let confTransformed = false;
  if (opts.transformConf) {
    const t = opts.transformConf;
    transforms.push((rel, content) => {
      const out = t(rel, content);
      if (out !== content) confTransformed = true;
      return out;
    });
  }
  if (transforms.length) {
    const confRoot = at(L.nginxConfDir);
    const walk = (d: string): void => {
      for (const ent of readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, ent.name);
        if (ent.isDirectory()) walk(p);
        else if (ent.isFile() && ent.name !== "mime.types") {
          const before = readFileSync(p, "utf8");
          const after = transforms.reduce((c, t) => t(path.relative(confRoot, p), c), before);
          if (after !== before) writeFileSync(p, after);
        }
      }
    };
    walk(confRoot);
    if (opts.transformConf && !confTransformed) throw new Error("transformConf changed no file of the rendered config");
  }

  const confFile = path.join(L.nginxConfDir, "nginx.conf");
  const accessLog = at(variant === "seed" ? path.join(L.logDir, "access.log") : path.join(L.logDir, "fastapi-edge.access.log"));
  const errorLog = at(path.join(L.logDir, "error.log"));
  const apps = new Map<number, StartedProcess | null>(appPorts.map((p) => [p, null]));
  let nginx: StartedProcess | null = null;

  const appEnv = (port: number): NodeJS.ProcessEnv => ({
    ...process.env,
    // As in /etc/fastapi-edge/app.env (lib/hostfiles.ts renderAppEnv).
    APP_MODULE: config.appModule,
    APP_DIR,
    STATIC_DIR: at(L.staticDir),
    PYTHON: SYSTEM_PYTHON,
    APP_HOST: "127.0.0.1",
    // appUpstream unix: "*", as renderAppEnv writes it (a socket's peer has no address).
    FORWARDED_ALLOW_IPS: uds ? "*" : "127.0.0.1",
    APP_VERSION: config.appVersion,
    // As in fastapi-edge-app@.service, with bytecode kept out of the repo.
    APP_PORT: String(port),
    PYTHONUNBUFFERED: "1",
    PYTHONDONTWRITEBYTECODE: "1",
    PYTHONPYCACHEPREFIX: pycache,
    ...(opts.stats === false ? {} : { FASTAPI_EDGE_STATS: "1" }),
    // appUpstream unix: run-app.sh picks APP_UDS_DIR/app-PORT.sock, as on a host.
    ...(uds ? { APP_UDS_DIR: udsDir } : {}),
    ...(opts.appEnv ?? {}),
  });
  /** A request straight to app process `port` (its socket with appUpstream unix). */
  const appRequest = (port: number, p: string, o: RequestOptions = {}): Promise<Response> => {
    const sock = socketOf(port);
    const host = o.host ?? `127.0.0.1:${port}`;
    return sock ? unixRequest(sock, p, { ...o, host }) : plainRequest(port, p, { ...o, host });
  };

  const startOneApp = async (port: number): Promise<void> => {
    const proc = startProcess(script("run-app.sh"), [String(port)], { env: appEnv(port) });
    track(proc.pid);
    apps.set(port, proc);
    if (!uds) {
      await waitForHttp(`http://127.0.0.1:${port}/healthz`, startTimeoutMs, 200, proc);
      return;
    }
    await waitFor(
      async () => {
        if (!isAlive(proc.pid)) throw new Error(`app ${port} exited before its socket answered:\n${proc.output()}`);
        try {
          return (await appRequest(port, "/healthz", { timeoutMs: 2000 })).status === 200;
        } catch {
          return false;
        }
      },
      `app ${port} to answer on ${socketOf(port)!}`,
      startTimeoutMs,
    );
  };
  const stopOneApp = async (port: number): Promise<void> => {
    const proc = apps.get(port);
    if (!proc) return;
    await stopPid(proc.pid);
    livePids.delete(proc.pid);
    apps.set(port, null);
  };
  const portAt = (index: number): number => {
    const p = appPorts[index];
    if (p === undefined) throw new Error(`no app process #${index} (have ${appPorts.length})`);
    return p;
  };
  const ownsApps = opts.reuseAppPorts === undefined;

  const stopEverything = async (): Promise<void> => {
    if (nginx) {
      await stopNginx(nginx.pid);
      nginx = null;
    }
    if (ownsApps) await Promise.all(appPorts.map(stopOneApp));
    // A chroot's tree is in a shared cache entry: never leave it behind.
    if (chroot) rmSync(root, { recursive: true, force: true });
  };

  try {
    if (ownsApps && opts.startApp !== false) await Promise.all(appPorts.map(startOneApp));
    const nginxArgs = ["-e", "stderr", "-c", confFile, "-g", "daemon off;"];
    // chroot and env exec: the PID is nginx's master.
    nginx = chroot
      ? startProcess("chroot", [
          chroot,
          "/usr/bin/env",
          "-i",
          `PATH=${SYSTEM_PATH}`,
          ...Object.entries(opts.nginxEnv ?? {}).map(([k, v]) => `${k}=${v}`),
          "/usr/sbin/nginx",
          ...nginxArgs,
        ])
      : startProcess("nginx", nginxArgs, { env: { ...process.env, ...(opts.nginxEnv ?? {}) } });
    track(nginx.pid);
    await waitForPort(httpsPort, startTimeoutMs, "127.0.0.1", nginx);
    await waitForPort(httpPort, startTimeoutMs, "127.0.0.1", nginx);
  } catch (e) {
    const out = nginx ? `\nnginx output:\n${nginx.output()}` : "";
    await stopEverything();
    throw new Error(`live site failed to start: ${(e as Error).message}${out}`);
  }

  const ca = readFileSync(fixture.ca.caCert);
  const requireNginx = (): StartedProcess => {
    if (!nginx) throw new Error("nginx is stopped");
    return nginx;
  };

  // With a chroot: the candidate tree (in TMPDIR) must lie inside it too, and
  // the pid file named in nginx.conf is read where this machine sees it.
  const applyTmp = path.join(root, "apply-tmp");
  const nginxBin = chroot ? (mkdirSync(applyTmp, { recursive: true }), chrootNginxWrapper(chroot, workDir)) : "nginx";
  const applyEnv = (): NodeJS.ProcessEnv => ({
    ...process.env,
    NGINX_CONF_DIR: at(L.nginxConfDir),
    EXTRA_ROOT: chroot ?? "/",
    STATE_DIR: stateDir,
    NGINX_BIN: nginxBin,
    ...(chroot ? { TMPDIR: applyTmp, NGINX_PID_FILE: at(L.pidFile) } : {}),
    NGINX_RELOAD_CMD: `kill -HUP ${requireNginx().pid}`,
    NGINX_APPLY_LOCK_TIMEOUT: "60",
  });

  const site: LiveSite = {
    variant,
    domain,
    config,
    fixture,
    root,
    httpPort,
    httpsPort,
    appPorts,
    caCert: fixture.ca.caCert,
    staticDir: at(L.staticDir),
    acmeWebroot: at(L.acmeWebroot),
    accessLog,
    errorLog,
    stateDir,
    nginxPid: () => requireNginx().pid,
    appPids: () => new Map(appPorts.map((p) => [p, apps.get(p)?.pid ?? 0])),
    httpsUrl: (p) => `https://${domain}:${httpsPort}${p}`,
    httpUrl: (p) => `http://127.0.0.1:${httpPort}${p}`,
    appUrl: (p, index = 0) => `http://127.0.0.1:${portAt(index)}${p}`,
    https: (p, o = {}) => httpsRequest(httpsPort, p, ca, { ...o, servername: o.servername ?? domain, host: o.host ?? domain }),
    http: (p, o = {}) => plainRequest(httpPort, p, { ...o, host: o.host ?? domain }),
    raw: (data, o = {}) =>
      rawExchange(o.tls === false ? httpPort : httpsPort, data, {
        ...(o.tls === false ? {} : { tls: { servername: o.servername === undefined ? domain : o.servername, ca } }),
        ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}),
      }),
    async stats() {
      let connections = 0;
      let requests = 0;
      for (const p of appPorts) {
        const r = await appRequest(p, "/_stats");
        if (r.status !== 200) throw new Error(`app ${p} /_stats: ${r.status} (is FASTAPI_EDGE_STATS=1?)`);
        const s = JSON.parse(r.text) as AppStats;
        connections += s.connections;
        requests += s.requests;
      }
      return { connections, requests };
    },
    async resetStats() {
      for (const p of appPorts) await appRequest(p, "/_stats", { method: "DELETE" });
    },
    async stopApp(index) {
      if (!ownsApps) throw new Error("this site reuses another site's app processes");
      await Promise.all((index === undefined ? appPorts : [portAt(index)]).map(stopOneApp));
    },
    async startApp(index) {
      if (!ownsApps) throw new Error("this site reuses another site's app processes");
      const todo = (index === undefined ? appPorts : [portAt(index)]).filter((p) => !apps.get(p));
      await Promise.all(todo.map(startOneApp));
    },
    render(overrides = {}) {
      if (variant === "seed") throw new Error("the seed variant is not rendered");
      const c = parseConfig({ ...raw, ...overrides });
      return renderSite(c, {
        layout: L,
        listen,
        nginxVersion,
        opensslVersion,
        upstreamPorts: appPorts,
        ...(opts.retryAfter ? { retryAfter: opts.retryAfter } : {}),
        ...withOriginPullCa(c),
      });
    },
    writeStage: (files) => fixture.writeStage(files),
    apply: (stage, args = []) => run(script("nginx-apply.sh"), [...args, stage], { env: applyEnv(), timeoutMs: 120_000 }),
    async reload() {
      const master = requireNginx().pid;
      const before = new Set(childPids(master));
      process.kill(master, "SIGHUP");
      await waitFor(() => childPids(master).some((p) => !before.has(p)), "a new nginx worker generation", 15_000);
    },
    snapshotConf() {
      const out: Record<string, string> = {};
      const walk = (d: string): void => {
        for (const ent of readdirSync(d, { withFileTypes: true })) {
          const p = path.join(d, ent.name);
          if (ent.isDirectory()) walk(p);
          else if (ent.isFile()) out[path.relative(at(L.nginxConfDir), p)] = createHash("sha256").update(readFileSync(p)).digest("hex");
        }
      };
      walk(at(L.nginxConfDir));
      return out;
    },
    async wrk(o) {
      const { cmd, args } = await wrkCommand(o, workDir);
      const res = await run(cmd, args, { timeoutMs: ((o.durationS ?? 5) + 60) * 1000 });
      if (res.code !== 0) throw new Error(`wrk exited ${res.code}:\n${res.stdout}\n${res.stderr}`);
      return parseWrk(res.stdout);
    },
    async startWrk(o) {
      const { cmd, args } = await wrkCommand(o, workDir);
      const p = startProcess(cmd, args);
      track(p.pid);
      return {
        pid: p.pid,
        async stop(): Promise<WrkResult> {
          if (isAlive(p.pid)) process.kill(p.pid, "SIGINT");
          const code = await Promise.race([p.exited, sleep(30_000).then(() => "timeout" as const)]);
          livePids.delete(p.pid);
          if (code === "timeout") {
            await stopPid(p.pid);
            throw new Error(`wrk did not stop on SIGINT:\n${p.output()}`);
          }
          return parseWrk(p.output());
        },
      };
    },
    async stop() {
      await stopEverything();
    },
  };
  return site;
}

/** Deterministic filler for static test files (incompressible enough). */
export function staticPayload(bytes: number, seed = "fastapi-edge"): Buffer {
  const out = Buffer.alloc(bytes);
  let block = createHash("sha256").update(seed).digest();
  for (let off = 0; off < bytes; off += block.length) {
    block.copy(out, off);
    block = createHash("sha256").update(block).digest();
  }
  return out;
}

/** Grep the access log for a request line. */
export function accessLogLines(site: LiveSite, needle: string): string[] {
  if (!existsSync(site.accessLog)) return [];
  return readFileSync(site.accessLog, "utf8")
    .split("\n")
    .filter((l) => l.includes(needle));
}

/** A scratch dir under test/artifacts for a test's outputs (git-ignored). */
export function artifactPath(name: string): string {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  return path.join(ARTIFACTS_DIR, name);
}
