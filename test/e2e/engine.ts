// The real Pulumi engine for the end-to-end scenario and the engine benchmark: the CLI, the
// Node.js language host and the command provider from scripts/get-pulumi.sh, a local file
// backend, and a private copy of the project (so a test can change an app file or an nginx
// snippet the way a user edits them, without touching the checkout).
import { ChildProcess, spawn } from "node:child_process";
import { appendFileSync, cpSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import * as path from "node:path";

export const REPO = path.resolve(__dirname, "../..");
export const MIN = 60_000;

export interface Run {
  code: number;
  out: string;
  seconds: number;
}

export interface ShOptions {
  input?: string;
  timeoutMs?: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Called with every chunk of output as it arrives. */
  onData?: (chunk: string) => void;
  /** Where the command and its output are appended. */
  logFile?: string;
  /** Called with the pid (and process group id) right after the start. */
  onSpawn?: (pid: number | undefined) => void;
}

/**
 * Run a command without blocking the event loop (a synchronous wait of minutes starves
 * vitest's worker RPC), capturing stdout+stderr, bounded in time. The command runs in its
 * own process group, killed as a whole on timeout.
 */
export function sh(cmd: string, args: string[], opts: ShOptions = {}): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd: opts.cwd ?? REPO, env: opts.env ?? process.env, stdio: ["pipe", "pipe", "pipe"], detached: true });
    opts.onSpawn?.(p.pid);
    let out = "";
    const take = (d: Buffer) => {
      const s = d.toString();
      out += s;
      opts.onData?.(s);
    };
    p.stdout.on("data", take);
    p.stderr.on("data", take);
    const timer = setTimeout(() => killGroup(p.pid), opts.timeoutMs ?? 20 * MIN);
    p.on("close", (code, signal) => {
      clearTimeout(timer);
      if (opts.logFile)
        appendFileSync(opts.logFile, `\n===== ${new Date().toISOString()} ${`${cmd} ${args.join(" ")}`.slice(0, 300)}\n${out}\n`);
      resolve({ code: code ?? (signal ? 128 : -1), out, seconds: (Date.now() - t0) / 1000 });
    });
    p.stdin.on("error", () => undefined);
    p.stdin.end(opts.input ?? "");
  });
}

/** SIGKILL a process group started by sh() (its pid is the group id). */
export function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** The engine's bin directory (building it on a fresh machine: minutes). */
export async function getEngine(logFile?: string): Promise<string> {
  const r = await sh("bash", [path.join(REPO, "scripts/get-pulumi.sh")], { timeoutMs: 60 * MIN, ...(logFile ? { logFile } : {}) });
  if (r.code !== 0) throw new Error(`scripts/get-pulumi.sh failed:\n${r.out}`);
  return r.out.trim().split("\n").pop()!;
}

// scripts/: the program runs scripts/build-app-image.sh (appRuntime container) where pulumi runs.
const PROJECT_FILES = ["index.ts", "Pulumi.yaml", "package.json", "tsconfig.json", "components", "lib", "files", "policy", "scripts"];

/** A private copy of the program in DIR; node_modules is the checkout's. */
export function copyProject(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const f of PROJECT_FILES) cpSync(path.join(REPO, f), path.join(dir, f), { recursive: true });
  symlinkSync(path.join(REPO, "node_modules"), path.join(dir, "node_modules"));
}

export interface Engine {
  dir: string;
  env: NodeJS.ProcessEnv;
  /** `pulumi ARGS --stack STACK --non-interactive --color never` in the project copy. */
  pulumi(args: string[], opts?: ShOptions & { stack?: string }): Promise<Run>;
}

/**
 * The environment of scripts/pulumi-env.sh, with the state in STATE_DIR: the engine never
 * downloads anything, and the plugin cache is get-pulumi.sh's.
 */
/** The cache every harness script shares (vps.sh, pebble.sh, get-pulumi.sh: the same default). */
export function cacheRoot(): string {
  return (
    process.env["FASTAPI_EDGE_CACHE"] ??
    path.join(process.env["XDG_CACHE_HOME"] ?? path.join(process.env["HOME"] ?? "/root", ".cache"), "fastapi-edge")
  );
}

export function engine(binDir: string, projectDir: string, stateDir: string, stack: string, logFile?: string): Engine {
  mkdirSync(stateDir, { recursive: true });
  const cache = cacheRoot();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${path.join(REPO, "node_modules/.bin")}:${binDir}:${process.env["PATH"] ?? ""}`,
    PULUMI_HOME: process.env["PULUMI_HOME"] ?? path.join(cache, "pulumi-home"),
    PULUMI_BACKEND_URL: `file://${stateDir}`,
    PULUMI_CONFIG_PASSPHRASE: "",
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
  };
  return {
    dir: projectDir,
    env,
    pulumi: (args, opts = {}) =>
      sh("pulumi", [...args, "--stack", opts.stack ?? stack, "--non-interactive", "--color", "never"], {
        cwd: projectDir,
        env,
        ...(logFile ? { logFile } : {}),
        ...opts,
      }),
  };
}

/** A harness script's KEY=VALUE lines (vps.sh, pebble.sh print nothing else on stdout). */
export function parseEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) env[m[1]!] = m[2]!;
  }
  return env;
}

/** Resources an up's progress lines report with an operation ("created", "updated", "replaced", "deleted"). */
export function touched(out: string, op: string): string[] {
  const re = new RegExp(`^\\s*[-+~]*\\s*command:remote:(?:Command|CopyToRemote)\\s+(\\S+)\\s+${op}\\b`, "gm");
  return [...out.matchAll(re)].map((m) => m[1]!).sort();
}

export interface WrkLoad {
  proc: ChildProcess;
  result: Promise<string>;
}

/**
 * wrk against https://DOMAIN:PORT/PATH until stopped (at most SECONDS), 8 connections, every
 * request on a new connection: on a reload, nginx's old workers close idle keep-alive
 * connections, and a request written onto one at that instant is lost (the keep-alive race
 * real clients answer by retrying idempotent requests; wrk does not retry). New connections
 * go to the listening socket, which a reload never closes. DOMAIN resolves to 127.0.0.1 in a
 * private mount namespace (HOSTS_FILE bind-mounted over /etc/hosts: no global edit).
 */
export function startWrk(o: {
  domain: string;
  port: string;
  path: string;
  seconds: number;
  hostsFile: string;
  latency?: boolean;
}): WrkLoad {
  writeFileSync(o.hostsFile, `127.0.0.1 localhost ${o.domain}\n`);
  const latency = o.latency ? " --latency" : "";
  const script = `mount --bind ${o.hostsFile} /etc/hosts && exec wrk -t1 -c8 -d${o.seconds}s --timeout 15s${latency} -H 'Connection: close' https://${o.domain}:${o.port}${o.path}`;
  const proc = spawn("unshare", ["-m", "sh", "-c", script], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  return { proc, result: new Promise<string>((res) => proc.on("exit", () => res(out))) };
}

export interface WrkFigures {
  requests: number;
  /** Socket errors: connect + read + write + timeout. */
  errors: number;
  non2xx: number;
  /** The 99th percentile and the maximum latency as wrk prints them (with --latency), e.g. "12.5ms". */
  p99: string;
  max: string;
  raw: string;
}

/** Stop wrk (SIGINT: it prints its summary) and read the summary. */
export async function stopWrk(load: WrkLoad): Promise<WrkFigures> {
  load.proc.kill("SIGINT");
  const raw = await load.result;
  const requests = Number(/(\d+) requests in/.exec(raw)?.[1] ?? "0");
  const e = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(raw);
  const errors = e ? e.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(raw)?.[1] ?? "0");
  const p99 = /^\s*99%\s+(\S+)/m.exec(raw)?.[1] ?? "?";
  const max = /Latency\s+\S+\s+\S+\s+(\S+)/.exec(raw)?.[1] ?? "?";
  return { requests, errors, non2xx, p99, max, raw };
}

/**
 * The stack settings every test stack on a local guest shares: the guest as an existing host
 * (hostMode existing on 127.0.0.1:SSH_PORT, root, its host key pinned), Pebble as the ACME
 * server, two app processes, and a start timeout for software emulation.
 */
export function guestStack(o: {
  domain: string;
  vps: Record<string, string>;
  hostKey: string;
  pebble: Record<string, string>;
}): Record<string, string> {
  return {
    domain: o.domain,
    email: "ops@example.test",
    hostMode: "existing",
    hostOs: o.vps["VPS_HOST_OS"]!,
    hostAddress: "127.0.0.1",
    hostPort: o.vps["VPS_SSH_PORT"]!,
    hostUser: "root",
    hostKey: o.hostKey,
    acme: "custom",
    acmeDirectoryUrl: o.pebble["ACME_DIRECTORY_URL_FOR_GUEST"]!,
    acmeCaBundle: o.pebble["ACME_CA_BUNDLE"]!,
    appProcesses: "2",
    // A guest under software emulation, sharing 2 cores: uvicorn with Debian 13's FastAPI takes 30 s and more to start.
    appStartTimeout: "300",
  };
}
