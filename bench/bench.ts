// Benchmark of the rendered edge against direct uvicorn and the seed guide's
// config, all on 127.0.0.1 (`npm run bench`; `npm run bench -- --quick` in CI).
//
// One app process (files/app under uvicorn via run-app.sh, FASTAPI_EDGE_STATS=1)
// serves two nginx instances started by test/helpers/live-site.ts: the
// rendered config ("ours") and files/seed/ (the seed guide's config as
// written, paths and ports adapted). wrk runs the variants interleaved,
// round after round (A B C ... A B C ...), and the medians over rounds are
// compared:
//   - JSON /api/hello: nginx over TLS vs direct uvicorn (goal >= 0.95x req/s,
//     p99 added <= 1 ms), and the seed config vs ours;
//   - static 50 KB and 1 MB: nginx (TLS) vs FastAPI StaticFiles on direct
//     uvicorn (goal >= 10x at 50 KB, >= 4x at 1 MB);
//   - new upstream connections per 1,000 proxied requests, from the app's
//     /_stats (goal <= 2 for ours), ours vs the seed;
//   - the ceiling: the same rendered nginx proxying to a trivial upstream (a
//     one-worker nginx answering `return 200` with a JSON body like the
//     app's), i.e. what the proxy itself carries here, beside direct uvicorn
//     and the proxied app; HTTP/2 over TLS with h2load (nghttp2-client) next
//     to wrk's HTTP/1.1, through ours and through the ceiling (skipped, and
//     said so, when h2load is missing);
//   - with --levers, one site per lever, each compared with the plain
//     rendered site in the same round: the app on a unix socket (uvicorn
//     --uds), ssl_buffer_size 4k, worker_processes 1, worker_cpu_affinity auto.
// Full mode writes bench/RESULTS.md; quick mode (1 short round) writes
// bench/out/quick.md and exits non-zero only when a variant produced no
// requests or any error.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  startLiveSite,
  staticPayload,
  stopNginx,
  wrkFailures,
  type LiveSite,
  type LiveSiteOptions,
  type WrkResult,
} from "../test/helpers/live-site";
import { freePorts, run, sleep, startProcess, SYSTEM_PYTHON, waitForHttp } from "../test/helpers/proc";
import { replaceExact } from "../lib/shipped";

interface Args {
  quick: boolean;
  levers: boolean;
  rounds: number;
  durationS: number;
  threads: number;
  connections: number;
}

function parseArgs(argv: string[]): Args {
  const quick = argv.includes("--quick");
  const num = (flag: string, dflt: number): number => {
    const i = argv.indexOf(flag);
    if (i < 0) return dflt;
    const v = Number(argv[i + 1]);
    if (!Number.isFinite(v) || v <= 0) throw new Error(`${flag} needs a positive number`);
    return v;
  };
  return {
    quick,
    levers: argv.includes("--levers"),
    rounds: num("--rounds", quick ? 1 : 5),
    durationS: num("--duration", quick ? 2 : 10),
    threads: num("--threads", 2),
    connections: num("--connections", 50),
  };
}

interface Variant {
  key: string;
  label: string;
  url: (s: Sites) => string;
  /** Load generator: wrk (HTTP/1.1, default) or h2load (HTTP/2 over TLS). */
  tool?: "wrk" | "h2load";
  /** A lever: compared round by round with the variant `base` (plain ours). */
  lever?: { base: string; change: string };
  /** wrk connections (and threads) override: 1 for the unsaturated latency pair. */
  connections?: number;
  /** Extra request headers (wrk -H). */
  headers?: Record<string, string>;
  /** Site whose nginx proxies to the app (counts upstream connections). */
  proxiedBy?: (s: Sites) => LiveSite;
}

interface Sites {
  ours: LiveSite;
  seed: LiveSite;
  /** The rendered site proxying to the trivial upstream. */
  ceiling: LiveSite;
  /** Lever sites (--levers), by lever key. */
  levers: Map<string, LiveSite>;
}

interface Sample {
  /** wrk's result, or h2load's in the same shape (latencyMs null). */
  wrk: WrkResult;
  /** h2load's mean time per request in ms (null for wrk). */
  meanMs: number | null;
  /** App connections seen during the run (stats reset just before it). */
  newConns: number | null;
  proxied: number | null;
  /** The same, counted only after the first quarter of the run (pool formed). */
  steadyConns: number | null;
  steadyProxied: number | null;
  /** Where the machine's CPU went during the run, in cores (see cpuSnapshot). */
  cpu: CpuUse;
}

/** CPU in cores (1 = one CPU busy for the whole run): the app (python3), nginx, the rest (load generator, kernel, other). */
interface CpuUse {
  app: number;
  nginx: number;
  rest: number;
  idle: number;
}

interface CpuSnapshot {
  at: number;
  busy: number;
  idle: number;
  byComm: Map<string, number>;
}

/** Clock ticks per second of /proc's CPU times (USER_HZ; 100 on Linux/x86). */
const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;

/**
 * Machine CPU (/proc/stat) and the CPU time so far of every nginx and python3
 * process (/proc/PID/stat utime+stime). nginx and the app live through a run,
 * so their deltas are exact; wrk and h2load start and end inside it, so they
 * are in "rest" (busy minus app minus nginx).
 */
function cpuSnapshot(): CpuSnapshot {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const busy = f.reduce((x, y) => x + y, 0) - idle - (f[8] ?? 0) - (f[9] ?? 0); // minus guest time (counted in user)
  const byComm = new Map<string, number>();
  for (const ent of readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(ent)) continue;
    let st = "";
    try {
      st = readFileSync(`/proc/${ent}/stat`, "utf8");
    } catch {
      continue;
    }
    const close = st.lastIndexOf(")");
    const comm = st.slice(st.indexOf("(") + 1, close);
    if (comm !== "nginx" && comm !== "python3") continue;
    const fields = st.slice(close + 2).split(" ");
    byComm.set(comm, (byComm.get(comm) ?? 0) + Number(fields[11]) + Number(fields[12]));
  }
  return { at: Date.now(), busy, idle, byComm };
}

function cpuUse(a: CpuSnapshot, b: CpuSnapshot): CpuUse {
  const secs = (b.at - a.at) / 1000;
  const cores = (ticks: number): number => ticks / CLK_TCK / secs;
  const d = (comm: string): number => Math.max(0, (b.byComm.get(comm) ?? 0) - (a.byComm.get(comm) ?? 0));
  const app = cores(d("python3"));
  const nginx = cores(d("nginx"));
  return { app, nginx, rest: Math.max(0, cores(b.busy - a.busy) - app - nginx), idle: cores(b.idle - a.idle) };
}

/** Levers (--levers): one rendered site each, the app's processes shared except for the unix socket's. */
interface Lever {
  key: string;
  label: string;
  change: string;
  site: LiveSiteOptions;
}

/** Edit one rendered file, failing loudly when the text to replace is not there (a lever must not silently be a no-op). */
function edit(file: string, from: string, to: string): (rel: string, content: string) => string {
  return (rel, content) => (rel === file ? replaceExact(rel, content, from, to) : content);
}

const LEVERS: Lever[] = [
  {
    key: "lever-uds",
    label: "JSON /api/hello, nginx rendered (TLS), app on a unix socket",
    change: "upstream `server unix:…` to uvicorn --uds (its own process) instead of 127.0.0.1:PORT",
    // appUpstream unix as the program renders it (FORWARDED_ALLOW_IPS=*: a socket's peer has no address).
    site: { config: { appUpstream: "unix" } },
  },
  {
    key: "lever-buf4k",
    label: "JSON /api/hello, nginx rendered (TLS), ssl_buffer_size 4k",
    change: "`ssl_buffer_size 4k` (default 16k)",
    site: {
      transformConf: edit("fastapi-edge/snippets/tls.conf", "ssl_session_timeout 1d;", "ssl_session_timeout 1d;\nssl_buffer_size 4k;"),
    },
  },
  {
    key: "lever-logbuf",
    label: "JSON /api/hello, nginx rendered (TLS), buffered access log",
    change: "`access_log … buffer=64k flush=1s` (rendered: one write(2) per request)",
    site: {
      transformConf: (rel, content) => {
        if (rel !== "fastapi-edge/http.conf") return content;
        const re = /access_log (\S+) fastapi_edge;/;
        if (!re.test(content)) throw new Error(`lever: no access_log line in ${rel}`);
        return content.replace(re, "access_log $1 fastapi_edge buffer=64k flush=1s;");
      },
    },
  },
  {
    key: "lever-hdrext",
    label: "JSON /api/hello, nginx rendered (TLS), proxyForwardedHeaders extended",
    change:
      "`proxyForwardedHeaders: extended`: X-Real-IP, X-Forwarded-Host, X-Forwarded-Port sent too (the rendered default until 2026-11-30; minimal clears them)",
    site: { config: { proxyForwardedHeaders: "extended" } },
  },
  {
    key: "lever-w1",
    label: "JSON /api/hello, nginx rendered (TLS), worker_processes 1",
    change: `\`worker_processes 1\` (rendered: auto = ${os.cpus().length} here)`,
    site: { transformConf: edit("nginx.conf", "worker_processes auto;", "worker_processes 1;") },
  },
  {
    key: "lever-affinity",
    label: "JSON /api/hello, nginx rendered (TLS), worker_cpu_affinity auto",
    change: "`worker_cpu_affinity auto` (workers pinned one per CPU; rendered: no affinity)",
    site: { transformConf: edit("nginx.conf", "worker_processes auto;", "worker_processes auto;\nworker_cpu_affinity auto;") },
  },
];

function lever(s: Sites, key: string): LiveSite {
  const site = s.levers.get(key);
  if (!site) throw new Error(`lever site ${key} is not running`);
  return site;
}

/** Rounds a lever needs before the report calls it a win or a loss (one busy round swung every lever both ways). */
const MIN_VERDICT_ROUNDS = 3;

/** A JSON body the size of the app's /api/hello answer, for the trivial upstream. */
const CEILING_BODY = '{"message":"hello, world","version":"0.1.0","time":1764460968.1234567}';

/**
 * What nginx adds upstream to a wrk request with proxyForwardedHeaders minimal
 * (files/nginx/proxy-headers.conf; wrk itself sends only Host): the same headers sent straight
 * to uvicorn separate the app's cost of reading them (h11 parsing, --proxy-headers) from the
 * proxy's. Until 2026-11-30 nginx also sent X-Real-IP, X-Forwarded-Host and X-Forwarded-Port:
 * with those five, this variant ran at 0.91x of plain direct (bench/RESULTS.md of that day).
 */
const PROXIED_HEADERS: Record<string, string> = {
  "X-Forwarded-For": "127.0.0.1",
  "X-Forwarded-Proto": "https",
};

const JSON_VARIANTS: Variant[] = [
  { key: "json-direct", label: "JSON /api/hello, direct uvicorn (HTTP)", url: (s) => s.ours.appUrl("/api/hello") },
  {
    key: "json-direct-hdrs",
    label: "JSON /api/hello, direct uvicorn (HTTP) with the forwarded headers nginx adds",
    url: (s) => s.ours.appUrl("/api/hello"),
    headers: PROXIED_HEADERS,
  },
  { key: "json-ours", label: "JSON /api/hello, nginx rendered (TLS)", url: (s) => s.ours.httpsUrl("/api/hello"), proxiedBy: (s) => s.ours },
  {
    key: "json-ceiling",
    label: "JSON, nginx rendered (TLS) to a trivial nginx upstream (ceiling)",
    url: (s) => s.ceiling.httpsUrl("/api/hello"),
  },
];
const LEVER_VARIANTS: Variant[] = LEVERS.map((l) => ({
  key: l.key,
  label: l.label,
  url: (s: Sites) => lever(s, l.key).httpsUrl("/api/hello"),
  lever: { base: "json-ours", change: l.change },
}));
const H2_VARIANTS: Variant[] = [
  {
    key: "h2-ours",
    label: "JSON /api/hello, nginx rendered, HTTP/2 (TLS, h2load)",
    url: (s) => s.ours.httpsUrl("/api/hello"),
    tool: "h2load",
  },
  {
    key: "h2-ceiling",
    label: "JSON, nginx rendered to the trivial upstream, HTTP/2 (TLS, h2load)",
    url: (s) => s.ceiling.httpsUrl("/api/hello"),
    tool: "h2load",
  },
];
const OTHER_VARIANTS: Variant[] = [
  {
    key: "json-seed",
    label: "JSON /api/hello, nginx seed config (TLS)",
    url: (s) => s.seed.httpsUrl("/api/hello"),
    proxiedBy: (s) => s.seed,
  },
  {
    key: "json-direct-c1",
    label: "JSON /api/hello, direct uvicorn, 1 connection",
    url: (s) => s.ours.appUrl("/api/hello"),
    connections: 1,
  },
  {
    key: "json-ours-c1",
    label: "JSON /api/hello, nginx rendered (TLS), 1 connection",
    url: (s) => s.ours.httpsUrl("/api/hello"),
    connections: 1,
  },
  { key: "s50k-nginx", label: "static 50 KB, nginx rendered (TLS)", url: (s) => s.ours.httpsUrl("/static/bench-50k.bin") },
  { key: "s50k-app", label: "static 50 KB, StaticFiles direct uvicorn", url: (s) => s.ours.appUrl("/static/bench-50k.bin") },
  { key: "s1m-nginx", label: "static 1 MB, nginx rendered (TLS)", url: (s) => s.ours.httpsUrl("/static/bench-1m.bin") },
  { key: "s1m-app", label: "static 1 MB, StaticFiles direct uvicorn", url: (s) => s.ours.appUrl("/static/bench-1m.bin") },
];

/** The variants of this run, in the order each round runs them. */
function variantsFor(a: Args, haveH2load: boolean): Variant[] {
  return [...JSON_VARIANTS, ...(a.levers ? LEVER_VARIANTS : []), ...(haveH2load ? H2_VARIANTS : []), ...OTHER_VARIANTS];
}

function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return `${r.stdout ?? ""}${r.stderr ?? ""}`.trim();
}

function machine(): Record<string, string> {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  const py = sh(SYSTEM_PYTHON, [
    "-c",
    "import uvicorn, fastapi, starlette, h11; print(uvicorn.__version__, fastapi.__version__, starlette.__version__, h11.__version__)",
  ]).split(" ");
  let osName = "unknown";
  try {
    osName = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? osName;
  } catch {
    // no os-release
  }
  return {
    nproc: sh("nproc", []),
    cpu: model,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    os: osName,
    kernel: readFileSync("/proc/version", "utf8").trim(),
    nginx: sh("nginx", ["-v"]).replace(/^nginx version: /, ""),
    openssl: sh("openssl", ["version"]),
    uvicorn: `${py[0]} (FastAPI ${py[1]}, Starlette ${py[2]}, h11 ${py[3]}; 1 process, ${SYSTEM_PYTHON})`,
    wrk: sh("wrk", ["-v"])
      .split("\n")[0]!
      .replace(/ Copyright.*/, ""),
    h2load: haveH2load() ? sh("h2load", ["--version"]) : "not installed (Debian nghttp2-client): HTTP/2 variants skipped",
    node: process.version,
  };
}

function haveH2load(): boolean {
  return spawnSync("h2load", ["--version"], { encoding: "utf8" }).status === 0;
}

// ------------------------------------------------------------ h2load

function parseH2Duration(s: string): number {
  const m = /^([0-9.]+)(us|ms|s)$/.exec(s);
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === "us" ? n / 1000 : m[2] === "ms" ? n : n * 1000;
}

/** h2load's summary in wrk's shape: succeeded requests, failed ones as read errors, non-2xx as status errors. */
export function parseH2load(out: string): { result: WrkResult; meanMs: number } {
  const fin = /finished in ([0-9.]+)(s|ms), ([0-9.]+) req\/s, ([0-9.]+[A-Za-z]+)\/s/.exec(out);
  const req =
    /requests: ([0-9]+) total, ([0-9]+) started, ([0-9]+) done, ([0-9]+) succeeded, ([0-9]+) failed, ([0-9]+) errored, ([0-9]+) timeout/.exec(
      out,
    );
  const status = /status codes: ([0-9]+) 2xx, ([0-9]+) 3xx, ([0-9]+) 4xx, ([0-9]+) 5xx/.exec(out);
  if (!fin || !req || !status) throw new Error(`cannot parse h2load output:\n${out}`);
  // h2load falls back to HTTP/1.1 when ALPN does not offer h2: that would not be an HTTP/2 figure.
  if (!/Application protocol: h2\b/.test(out)) throw new Error(`h2load did not negotiate HTTP/2:\n${out}`);
  const time = /time for request:\s+([0-9.]+(?:us|ms|s))\s+([0-9.]+(?:us|ms|s))\s+([0-9.]+(?:us|ms|s))/.exec(out);
  const durationS = fin[2] === "ms" ? Number(fin[1]) / 1000 : Number(fin[1]);
  return {
    result: {
      requests: Number(req[4]),
      durationS,
      rps: Number(fin[3]),
      bytesRead: fin[4]!,
      errors: {
        connect: 0,
        read: Number(req[5]),
        write: 0,
        timeout: Number(req[7]),
        status: Number(status[2]) + Number(status[3]) + Number(status[4]),
      },
      latencyMs: null,
      raw: out,
    },
    meanMs: time ? parseH2Duration(time[3]!) : NaN,
  };
}

/**
 * HTTP/2 over TLS with h2load: one stream per connection at a time (-m 1, as
 * wrk's one request per connection), for a duration. The URL keeps the
 * site's name (SNI, :authority); --connect-to sends it to 127.0.0.1.
 */
async function h2load(
  url: string,
  o: { threads: number; connections: number; durationS: number },
): Promise<{ result: WrkResult; meanMs: number }> {
  const u = new URL(url);
  // A count, not a duration: nginx ends an HTTP/2 connection after keepalive_requests (1000)
  // requests and h2load never reconnects, so with -D the trivial upstream's 50 connections
  // were done after 50,000 requests, about 1 s into a 10 s run, and the rate came out as
  // exactly 50,000 / 10 = 5000 req/s. 90 requests per connection per second of the run, at most
  // 900 each: about the run's length through the app, under the cap everywhere.
  const perConnection = Math.min(900, Math.max(20, Math.round(o.durationS * 90)));
  const args = [
    "-n",
    String(perConnection * o.connections),
    "-c",
    String(o.connections),
    "-m",
    "1",
    "-t",
    String(o.threads),
    `--connect-to=127.0.0.1:${u.port}`,
    url,
  ];
  const res = await run("h2load", args, { timeoutMs: (o.durationS + 60) * 1000 });
  if (res.code !== 0) throw new Error(`h2load exited ${res.code}:\n${res.stdout}\n${res.stderr}`);
  return parseH2load(res.stdout);
}

// ------------------------------------------------------------ ceiling

/**
 * The trivial upstream of the ceiling variant: a one-worker nginx on a free
 * 127.0.0.1 port answering every request with CEILING_BODY as
 * application/json, keepalive like uvicorn's (no closing after N requests).
 */
async function startTrivialUpstream(): Promise<{ port: number; stop: () => Promise<void> }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "fe-ceiling-"));
  const [port] = await freePorts(1);
  const conf = path.join(dir, "nginx.conf");
  const temp = (n: string): string => `${n}_temp_path ${path.join(dir, n)};`;
  writeFileSync(
    conf,
    [
      "worker_processes 1;",
      `pid ${path.join(dir, "nginx.pid")};`,
      `error_log ${path.join(dir, "error.log")} warn;`,
      "events { worker_connections 4096; }",
      "http {",
      "    access_log off;",
      `    ${temp("client_body")} ${temp("proxy")} ${temp("fastcgi")} ${temp("uwsgi")} ${temp("scgi")}`,
      "    keepalive_timeout 75s;",
      "    keepalive_requests 1000000;",
      "    server {",
      `        listen 127.0.0.1:${port!};`,
      `        location / { default_type application/json; return 200 '${CEILING_BODY}'; }`,
      "    }",
      "}",
      "",
    ].join("\n"),
  );
  const proc = startProcess("nginx", ["-e", "stderr", "-c", conf, "-g", "daemon off;"]);
  try {
    await waitForHttp(`http://127.0.0.1:${port!}/api/hello`, 15_000, 200, proc);
  } catch (e) {
    await stopNginx(proc.pid);
    throw e;
  }
  return {
    port: port!,
    stop: async () => {
      await stopNginx(proc.pid);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** 1-minute load average: other work on the machine skews every figure. */
function loadavg(): number {
  return Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
}

const fmt = (x: number, d = 0): string => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
const ratio = (a: number, b: number): number => a / b;

async function runVariant(v: Variant, sites: Sites, a: Args): Promise<Sample> {
  const before = cpuSnapshot();
  const sample = await measureVariant(v, sites, a);
  return { ...sample, cpu: cpuUse(before, cpuSnapshot()) };
}

async function measureVariant(v: Variant, sites: Sites, a: Args): Promise<Omit<Sample, "cpu">> {
  const proxiedBy = v.proxiedBy?.(sites);
  const connections = v.connections ?? a.connections;
  const threads = Math.min(a.threads, connections);
  const o = { url: v.url(sites), threads, connections, durationS: a.durationS, latency: true, timeoutS: 30, headers: v.headers };
  if (v.tool === "h2load") {
    const h = await h2load(o.url, o);
    return { wrk: h.result, meanMs: h.meanMs, newConns: null, proxied: null, steadyConns: null, steadyProxied: null };
  }
  if (!proxiedBy) {
    const wrk = await sites.ours.wrk(o);
    return { wrk, meanMs: null, newConns: null, proxied: null, steadyConns: null, steadyProxied: null };
  }
  // Proxied JSON: reset the app's counters, run wrk for the duration, and
  // read the counters after the first quarter (pool formed) and at the end.
  await sites.ours.resetStats();
  const running = await proxiedBy.startWrk({ ...o, durationS: a.durationS + 120 });
  const warm = (a.durationS * 1000) / 4;
  await sleep(warm);
  const s0 = await sites.ours.stats();
  await sleep(a.durationS * 1000 - warm);
  const s1 = await sites.ours.stats();
  const wrk = await running.stop();
  return {
    wrk,
    meanMs: null,
    newConns: s1.connections,
    proxied: s1.requests,
    steadyConns: s1.connections - s0.connections,
    steadyProxied: s1.requests - s0.requests,
  };
}

async function main(): Promise<number> {
  const a = parseArgs(process.argv.slice(2));
  const started = new Date();
  const m = machine();
  const h2 = haveH2load();
  const VARIANTS = variantsFor(a, h2);
  const cmd = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`;
  console.log(
    `fastapi-edge bench: ${a.rounds} round(s) x ${VARIANTS.length} variants x ${a.durationS} s, wrk -t${a.threads} -c${a.connections}` +
      (h2 ? `, h2load -t${a.threads} -c${a.connections} -m1` : ""),
  );
  if (!h2) console.log("  h2load not found (Debian package nghttp2-client): skipping the HTTP/2 variants");
  if (!a.levers) console.log("  levers not run (add --levers)");
  for (const [k, val] of Object.entries(m)) console.log(`  ${k}: ${val}`);
  const loadBefore = loadavg();
  console.log(`  load average (1 min) before: ${loadBefore}`);
  if (loadBefore > 0.5) console.log("  warning: the machine is busy; other processes share the CPUs and skew the figures");

  const sites: Partial<Sites> = {};
  const leverSites = new Map<string, LiveSite>();
  let trivial: { port: number; stop: () => Promise<void> } | null = null;
  const stopAll = async (): Promise<void> => {
    for (const l of leverSites.values()) await l.stop();
    leverSites.clear();
    await sites.ceiling?.stop();
    await trivial?.stop();
    trivial = null;
    await sites.seed?.stop();
    await sites.ours?.stop();
  };
  process.once("SIGINT", () => {
    void stopAll().then(() => process.exit(130));
  });

  const samples = new Map<string, Sample[]>(VARIANTS.map((v) => [v.key, []]));
  try {
    sites.ours = await startLiveSite({
      staticFiles: { "bench-50k.bin": staticPayload(50 * 1024, "50k"), "bench-1m.bin": staticPayload(1024 * 1024, "1m") },
    });
    sites.seed = await startLiveSite({ variant: "seed", reuseAppPorts: sites.ours.appPorts });
    trivial = await startTrivialUpstream();
    sites.ceiling = await startLiveSite({ reuseAppPorts: [trivial.port], stats: false });
    if (a.levers) {
      for (const l of LEVERS) {
        // The unix-socket lever starts its own app process (on its socket); the others proxy to ours.
        const own = l.site.config?.["appUpstream"] === "unix";
        leverSites.set(l.key, await startLiveSite({ ...l.site, ...(own ? {} : { reuseAppPorts: sites.ours.appPorts }) }));
      }
    }
    const s: Sites = { ours: sites.ours, seed: sites.seed, ceiling: sites.ceiling, levers: leverSites };
    for (let r = 1; r <= a.rounds; r++) {
      for (const v of VARIANTS) {
        const sample = await runVariant(v, s, a);
        samples.get(v.key)!.push(sample);
        const conn =
          sample.newConns === null
            ? ""
            : `, app connections ${sample.newConns} / ${sample.proxied} proxied (after the first quarter: ${sample.steadyConns} / ${sample.steadyProxied})`;
        console.log(
          `round ${r} ${v.key.padEnd(14)} ${fmt(sample.wrk.rps).padStart(7)} req/s  ${sample.meanMs === null ? `p50 ${fmt(sample.wrk.latencyMs?.p50 ?? NaN, 2)} ms  p99 ${fmt(sample.wrk.latencyMs?.p99 ?? NaN, 2)} ms` : `mean ${fmt(sample.meanMs, 2)} ms`}  errors ${wrkFailures(sample.wrk)}` +
            `  cpu app ${fmt(sample.cpu.app, 2)} nginx ${fmt(sample.cpu.nginx, 2)} rest ${fmt(sample.cpu.rest, 2)} idle ${fmt(sample.cpu.idle, 2)}${conn}`,
        );
      }
    }
  } finally {
    await stopAll();
  }

  const loadAfter = loadavg();

  // ------------------------------------------------------------ summary
  const med = (key: string, f: (x: Sample) => number): number => median(samples.get(key)!.map(f));
  const rps = (k: string): number => med(k, (x) => x.wrk.rps);
  const p50 = (k: string): number => med(k, (x) => x.wrk.latencyMs?.p50 ?? NaN);
  const p99 = (k: string): number => med(k, (x) => x.wrk.latencyMs?.p99 ?? NaN);
  const perK = (k: string): number => med(k, (x) => (x.newConns !== null && x.proxied ? (x.newConns * 1000) / x.proxied : NaN));
  const steadyK = (k: string): number =>
    med(k, (x) => (x.steadyConns !== null && x.steadyProxied ? (x.steadyConns * 1000) / x.steadyProxied : NaN));
  const goal = (ok: boolean): string => (ok ? "met" : "NOT met");
  // On a shared or small machine the tail is scheduling noise: flag it when
  // even one direct request's p99 is 10x its p50.
  const tailNoise = p99("json-direct-c1") > 10 * p50("json-direct-c1");
  const tail = (ok: boolean): string =>
    tailNoise
      ? `${goal(ok)}, unreliable: direct uvicorn's own p99 at 1 connection is ${fmt(p99("json-direct-c1"), 1)} ms for a p50 of ${fmt(p50("json-direct-c1"), 2)} ms`
      : goal(ok);

  const jsonRatio = ratio(rps("json-ours"), rps("json-direct"));
  const p99Added = p99("json-ours") - p99("json-direct");
  const p99AddedC1 = p99("json-ours-c1") - p99("json-direct-c1");
  const p50AddedC1 = p50("json-ours-c1") - p50("json-direct-c1");
  const s50 = ratio(rps("s50k-nginx"), rps("s50k-app"));
  const s1m = ratio(rps("s1m-nginx"), rps("s1m-app"));
  const seedVsOurs = ratio(rps("json-seed"), rps("json-ours"));
  const oursK = perK("json-ours");
  const seedK = perK("json-seed");
  const oursSteady = steadyK("json-ours");
  const seedSteady = steadyK("json-seed");

  const lines: string[] = [];
  lines.push(a.quick ? "# Benchmark (quick mode)" : "# Benchmark results", "");
  lines.push(
    `Run ${started.toISOString()} with \`${cmd}\`: ${a.rounds} round(s), variants interleaved within each round, ` +
      `wrk -t${a.threads} -c${a.connections} -d${a.durationS}s --latency per run, medians over rounds. All traffic on 127.0.0.1; ` +
      "wrk, nginx (2 workers) and uvicorn share the same machine.",
    "",
    "## Machine",
    "",
  );
  for (const [k, val] of Object.entries(m)) lines.push(`- ${k}: ${val}`);
  lines.push(
    `- load average (1 min): ${loadBefore} before, ${loadAfter} after the run (includes the benchmark's own processes at the end)`,
  );
  lines.push("", "## Comparisons (medians)", "", "| comparison | measured | goal | |", "| --- | --- | --- | --- |");
  lines.push(`| JSON through nginx (TLS) / direct uvicorn, req/s | ${fmt(jsonRatio, 2)}x | >= 0.95x | ${goal(jsonRatio >= 0.95)} |`);
  lines.push(
    `| JSON p99 added by nginx (TLS), -c${a.connections} (saturated) | ${fmt(p99Added, 2)} ms | <= 1 ms | ${tail(p99Added <= 1)} |`,
  );
  lines.push(
    `| JSON p99 added by nginx (TLS), 1 connection | ${fmt(p99AddedC1, 2)} ms (p50 ${fmt(p50AddedC1, 2)} ms) | <= 1 ms | ${tail(p99AddedC1 <= 1)} |`,
  );
  lines.push(`| static 50 KB: nginx (TLS) / StaticFiles, req/s | ${fmt(s50, 1)}x | >= 10x | ${goal(s50 >= 10)} |`);
  lines.push(`| static 1 MB: nginx (TLS) / StaticFiles, req/s | ${fmt(s1m, 1)}x | >= 4x | ${goal(s1m >= 4)} |`);
  lines.push(`| app connections per 1,000 requests, ours, whole run | ${fmt(oursK, 1)} | <= 2 | ${goal(oursK <= 2)} |`);
  lines.push(`| app connections per 1,000 requests, ours, after the first quarter | ${fmt(oursSteady, 2)} | (steady state) | |`);
  lines.push(`| app connections per 1,000 requests, seed config, whole run | ${fmt(seedK, 0)} | (comparison) | |`);
  lines.push(`| app connections per 1,000 requests, seed config, after the first quarter | ${fmt(seedSteady, 0)} | (comparison) | |`);
  lines.push(`| JSON req/s, seed config / ours | ${fmt(seedVsOurs, 2)}x | (comparison) | |`);

  // Ratios round by round (same round, so the same machine state), and their median.
  const has = (k: string): boolean => (samples.get(k)?.length ?? 0) > 0;
  const perRound = (k: string): number[] => (samples.get(k) ?? []).map((x) => x.wrk.rps);
  const roundRatios = (num: string, den: string): number[] => perRound(num).map((x, i) => ratio(x, perRound(den)[i] ?? NaN));
  const ratioRow = (what: string, num: string, den: string): string => {
    const rs = roundRatios(num, den);
    return `| ${what} | ${fmt(median(rs), 2)}x | ${rs.map((x) => `${fmt(x, 2)}x`).join(", ")} | ${fmt(rps(num))} / ${fmt(rps(den))} |`;
  };
  lines.push(
    "",
    "## The proxy's price: the ceiling and HTTP/2",
    "",
    "The ceiling is the same rendered nginx proxying to a trivial upstream (a one-worker nginx on 127.0.0.1 answering " +
      "`return 200` with a JSON body of the app's size): what the proxy itself carries on this machine. Ratios are " +
      "taken round by round, then the median.",
    "",
    "| comparison | median of per-round ratios | per round | median req/s |",
    "| --- | --- | --- | --- |",
  );
  lines.push(ratioRow("HTTP/1.1 (wrk): ours / direct uvicorn", "json-ours", "json-direct"));
  lines.push(ratioRow("HTTP/1.1 (wrk): direct uvicorn with nginx's forwarded headers / without", "json-direct-hdrs", "json-direct"));
  lines.push(ratioRow("HTTP/1.1 (wrk): ours / direct uvicorn with nginx's forwarded headers", "json-ours", "json-direct-hdrs"));
  lines.push(ratioRow("HTTP/1.1 (wrk): ceiling / direct uvicorn", "json-ceiling", "json-direct"));
  lines.push(ratioRow("HTTP/1.1 (wrk): ours / ceiling", "json-ours", "json-ceiling"));
  if (has("h2-ours")) {
    lines.push(ratioRow("HTTP/2 (h2load): ours / direct uvicorn (HTTP/1.1, wrk)", "h2-ours", "json-direct"));
    lines.push(ratioRow("HTTP/2 (h2load): ours / ceiling", "h2-ours", "h2-ceiling"));
    lines.push(ratioRow("ours: HTTP/2 (h2load) / HTTP/1.1 (wrk)", "h2-ours", "json-ours"));
  } else {
    lines.push("", "HTTP/2 variants skipped: h2load is not installed (Debian package nghttp2-client).");
  }

  lines.push("", "## Levers (each against the plain rendered site in the same round)", "");
  if (!a.levers) {
    lines.push("Not run in this run: add `--levers` (`npm run bench -- --levers`).");
  } else {
    lines.push(
      "Each lever is its own nginx (the rendered config with one change) proxying to the same app process as ours, " +
        "except the unix-socket lever, which has its own uvicorn on its socket. A lever wins when it is ahead of plain " +
        "ours in every round and by at least 2% in the median of the per-round ratios; it loses when behind in every round; " +
        `fewer than ${MIN_VERDICT_ROUNDS} rounds give no verdict.`,
      "",
      "| lever | change | req/s per round | ours req/s per round | lever / ours per round | median | verdict |",
      "| --- | --- | --- | --- | --- | --- | --- |",
    );
    for (const v of VARIANTS) {
      if (!v.lever) continue;
      const rs = roundRatios(v.key, v.lever.base);
      const mr = median(rs);
      const pct = `${mr >= 1 ? "+" : ""}${fmt((mr - 1) * 100, 1)}%`;
      const verdict =
        rs.length < MIN_VERDICT_ROUNDS
          ? `no verdict from ${rs.length} round(s) (${pct})`
          : rs.every((x) => x > 1) && mr >= 1.02
            ? `wins by ${fmt((mr - 1) * 100, 1)}%`
            : rs.every((x) => x < 1)
              ? `loses by ${fmt((1 - mr) * 100, 1)}%`
              : `no clear difference (${pct})`;
      lines.push(
        `| ${v.key} | ${v.lever.change} | ${perRound(v.key)
          .map((x) => fmt(x))
          .join(", ")} | ${perRound(v.lever.base)
          .map((x) => fmt(x))
          .join(", ")} | ${rs.map((x) => `${fmt(x, 2)}x`).join(", ")} | ${fmt(mr, 2)}x | ${verdict} |`,
      );
    }
    if (a.rounds < MIN_VERDICT_ROUNDS) {
      lines.push("", `Only ${a.rounds} round(s): a verdict needs at least ${MIN_VERDICT_ROUNDS} rounds, on a quiet machine.`);
    }
  }
  lines.push(
    "",
    `## Where the CPU went (cores of ${os.cpus().length}, medians over rounds)`,
    "",
    "Measured around each run from /proc: the app is every python3 process (uvicorn), nginx every nginx process " +
      "(the site's workers; the other sites idle), the rest is the machine's busy time minus both: the load generator " +
      "(wrk or h2load, with its own TLS), the kernel's softirq work, anything else. Requests per app CPU-second shows " +
      "whether the app itself does more or less work per request behind nginx; if it is the same, the proxied " +
      "variant's lower throughput is the CPU that nginx and the client's TLS take from it.",
    "",
    "| variant | req/s | app | nginx | rest | idle | requests per app CPU-second |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  );
  for (const v of VARIANTS) {
    if (!/^(json|h2|lever)-/.test(v.key) || v.connections === 1) continue;
    const c = (f: (u: CpuUse) => number): number => med(v.key, (x) => f(x.cpu));
    const perAppSecond = med(v.key, (x) => x.wrk.rps / x.cpu.app);
    lines.push(
      `| ${v.key} | ${fmt(rps(v.key))} | ${fmt(
        c((u) => u.app),
        2,
      )} | ${fmt(
        c((u) => u.nginx),
        2,
      )} | ${fmt(
        c((u) => u.rest),
        2,
      )} | ${fmt(
        c((u) => u.idle),
        2,
      )} | ${fmt(perAppSecond)} |`,
    );
  }
  lines.push(
    "",
    "## Per variant (medians over rounds)",
    "",
    "| variant | req/s | p50 ms | p99 ms | mean ms (h2load) | req/s per round | errors |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  );
  for (const v of VARIANTS) {
    const xs = samples.get(v.key)!;
    const mean =
      v.tool === "h2load"
        ? fmt(
            med(v.key, (x) => x.meanMs ?? NaN),
            2,
          )
        : "";
    lines.push(
      `| ${v.label} | ${fmt(rps(v.key))} | ${fmt(p50(v.key), 2)} | ${fmt(p99(v.key), 2)} | ${mean} | ${xs.map((x) => fmt(x.wrk.rps)).join(", ")} | ${xs.reduce((n, x) => n + wrkFailures(x.wrk), 0)} |`,
    );
  }
  lines.push(
    "",
    "## How to read it",
    "",
    "- App connections are counted by the app (`FASTAPI_EDGE_STATS=1`, `/_stats`, reset before each proxied run): " +
      "each TCP connection (transport) once, the first time a request arrives on it, so a connection that reuses a " +
      "closed one's loopback port still counts. The whole-run figure includes the pool nginx opens at the start of the run (up " +
      "to " +
      a.connections +
      " connections; idle upstream connections expire after 60 s) and the fresh connection " +
      "nginx opens after `keepalive_requests` requests on one (10,000 in our upstream, 1,000 by default); the second " +
      "figure starts counting once the first quarter of the run is over.",
    '- The seed config\'s nginx sends `Connection: close` upstream (no `proxy_set_header Connection ""`), so its ' +
      "`keepalive 32` never engages.",
    "- Static comparisons serve the same files from the same directory: nginx with sendfile over TLS, the app with " +
      "Starlette's StaticFiles over plain HTTP.",
    "- At -c" +
      a.connections +
      " every variant saturates the machine, so latency there is mostly queueing; the " +
      "1-connection pair measures what nginx adds to one request. All processes, wrk included, share the CPUs.",
    "- h2load (HTTP/2 over TLS) runs with the same connection count, one stream per connection at a time (-m 1), " +
      "so each connection has one request in flight as with wrk; it prints no percentiles, only the mean time per request. " +
      "It runs a request count (90 per connection per second of the run, at most 900), not a duration: nginx closes an " +
      "HTTP/2 connection after keepalive_requests (1000) and h2load does not reconnect, which capped a 10 s run of the " +
      "ceiling at 50,000 requests (reported as exactly 5000 req/s) before this was changed.",
    "- The ceiling's upstream is itself a process on the same CPUs, much cheaper than uvicorn: ours / ceiling is the " +
      "share of what the proxy could carry that the app leaves it.",
    "- Quick mode (`--quick`, CI) runs one 2 s round: the figures are noisy and only prove the harness works.",
    "",
  );
  const report = lines.join("\n");
  const out = a.quick ? path.join(__dirname, "out", "quick.md") : path.join(__dirname, "RESULTS.md");
  mkdirSync(path.join(__dirname, "out"), { recursive: true });
  writeFileSync(out, report);
  // Raw samples (wrk output included) for whoever wants to look closer; git-ignored.
  const raw = Object.fromEntries(VARIANTS.map((v) => [v.key, samples.get(v.key)!]));
  writeFileSync(
    path.join(__dirname, "out", a.quick ? "quick-samples.json" : "samples.json"),
    JSON.stringify({ started, args: a, machine: m, raw }, null, 2),
  );
  console.log(`\n${report}\nwritten to ${path.relative(process.cwd(), out)}`);

  // Report, not assert: fail only when the harness itself is broken.
  const broken = VARIANTS.filter((v) => samples.get(v.key)!.some((x) => x.wrk.requests === 0 || wrkFailures(x.wrk) > 0));
  if (broken.length) {
    console.error(`bench: variants with no requests or with errors: ${broken.map((v) => v.key).join(", ")}`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
