// Shared helpers for live tests: start/stop real processes by PID, free
// ports, waiting for ports/HTTP, running scripts, and small HTTP requests.
//
// Every process started with startProcess() is remembered; call stopAll()
// from afterAll() so processes die even when a test fails.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";

export const REPO_ROOT = path.resolve(__dirname, "..", "..");
export const SCRIPTS_DIR = path.join(REPO_ROOT, "files", "scripts");
export const APP_DIR = path.join(REPO_ROOT, "files", "app");
/** Debian's FastAPI/uvicorn import only under the system interpreter. */
export const SYSTEM_PYTHON = "/usr/bin/python3";

export function script(name: string): string {
  return path.join(SCRIPTS_DIR, name);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ------------------------------------------------------------ processes

export interface StartedProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Combined stdout+stderr captured so far. */
  output(): string;
  /** Resolves with the exit code (or null when killed by a signal). */
  readonly exited: Promise<number | null>;
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

const started = new Map<number, StartedProcess>();

export function startProcess(cmd: string, args: readonly string[], opts: StartOptions = {}): StartedProcess {
  const child = spawn(cmd, [...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    env: opts.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (child.pid === undefined) {
    throw new Error(`failed to start ${cmd}`);
  }
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => {
    child.on("exit", (code) => resolve(code));
    child.on("error", () => resolve(-1));
  });
  const proc: StartedProcess = { pid: child.pid, child, output: () => out, exited };
  started.set(child.pid, proc);
  void exited.then(() => started.delete(proc.pid));
  return proc;
}

/** True when the PID exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** SIGTERM the PID, wait for it to go, SIGKILL after timeoutMs. */
export async function stopPid(pid: number, timeoutMs = 5000): Promise<void> {
  if (!isAlive(pid)) return;
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return;
    await sleep(50);
  }
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  const killDeadline = Date.now() + 2000;
  while (Date.now() < killDeadline && isAlive(pid)) {
    await sleep(50);
  }
}

export async function stopProcess(proc: StartedProcess, timeoutMs = 5000): Promise<void> {
  await stopPid(proc.pid, timeoutMs);
  started.delete(proc.pid);
}

/** Stop every process started with startProcess() (use in afterAll). */
export async function stopAll(): Promise<void> {
  await Promise.all([...started.values()].map((p) => stopPid(p.pid)));
  started.clear();
}

/** Stop every PID recorded in DIR/*.pid (processes started by fakes). */
export async function stopPidFiles(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  const pids = readdirSync(dir)
    .filter((f) => f.endsWith(".pid"))
    .map((f) => Number.parseInt(readFileSync(path.join(dir, f), "utf8").trim(), 10))
    .filter((n) => Number.isInteger(n) && n > 1);
  await Promise.all(pids.map((pid) => stopPid(pid)));
}

// ------------------------------------------------------------ commands

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunOptions extends StartOptions {
  input?: string;
  timeoutMs?: number;
}

/** Run a command to completion; never throws on non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, [...args], {
      cwd: opts.cwd ?? REPO_ROOT,
      env: opts.env ?? process.env,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${cmd} ${args.join(" ")} timed out after ${opts.timeoutMs}ms\n${stdout}\n${stderr}`));
    }, opts.timeoutMs ?? 120_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    });
    // The command may exit without reading stdin: ignore EPIPE.
    child.stdin.on("error", () => undefined);
    child.stdin.end(opts.input ?? "");
  });
}

// ------------------------------------------------------------ ports

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      if (addr === null || typeof addr === "string") {
        srv.close();
        reject(new Error("no port"));
        return;
      }
      const { port } = addr;
      srv.close(() => resolve(port));
    });
  });
}

/** Can 127.0.0.1:port be bound right now? */
function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/** n TCP ports on 127.0.0.1 inside [lo, hi] that were free a moment ago (lowest first). */
export async function freePortsInRange(n: number, lo: number, hi: number): Promise<number[]> {
  const out: number[] = [];
  for (let p = lo; p <= hi && out.length < n; p++) if (await canBind(p)) out.push(p);
  if (out.length < n) throw new Error(`only ${out.length} of ${n} free ports in ${lo}-${hi}`);
  return out;
}

export async function freePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

function canConnect(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    sock.setTimeout(1000);
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("timeout", () => {
      sock.destroy();
      resolve(false);
    });
    sock.once("error", () => resolve(false));
  });
}

/** Poll until cond() is true; throws with `what` on timeout. */
export async function waitFor(cond: () => Promise<boolean> | boolean, what: string, timeoutMs = 15_000, intervalMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

export async function waitForPort(port: number, timeoutMs = 15_000, host = "127.0.0.1", proc?: StartedProcess): Promise<void> {
  await waitFor(
    async () => {
      if (proc !== undefined && !isAlive(proc.pid)) {
        throw new Error(`process ${proc.pid} exited before listening on ${port}:\n${proc.output()}`);
      }
      return canConnect(port, host);
    },
    `${host}:${port} to accept connections`,
    timeoutMs,
  );
}

export async function waitForPortClosed(port: number, timeoutMs = 15_000, host = "127.0.0.1"): Promise<void> {
  await waitFor(async () => !(await canConnect(port, host)), `${host}:${port} to close`, timeoutMs);
}

// ------------------------------------------------------------ HTTP

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

export interface HttpOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  agent?: http.Agent | false;
  timeoutMs?: number;
}

/** Read a whole response (status, headers, body) and hand it to resolve. */
export function collectResponse(res: http.IncomingMessage, resolve: (r: HttpResponse) => void, reject: (e: Error) => void): void {
  const chunks: Buffer[] = [];
  res.on("data", (c: Buffer) => chunks.push(c));
  res.on("end", () => {
    const body = Buffer.concat(chunks);
    resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString("utf8") });
  });
  res.on("error", reject);
}

export function httpRequest(url: string, opts: HttpOptions = {}): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? "GET", headers: opts.headers ?? {}, agent: opts.agent ?? false }, (res) =>
      collectResponse(res, resolve, reject),
    );
    req.setTimeout(opts.timeoutMs ?? 15_000, () => req.destroy(new Error(`timeout: ${url}`)));
    req.on("error", reject);
    req.end(opts.body);
  });
}

export async function httpJson<T>(url: string, opts: HttpOptions = {}): Promise<{ status: number; json: T }> {
  const res = await httpRequest(url, opts);
  return { status: res.status, json: JSON.parse(res.text) as T };
}

/** Wait until GET url answers `status` (default 200). */
export async function waitForHttp(url: string, timeoutMs = 15_000, status = 200, proc?: StartedProcess): Promise<void> {
  await waitFor(
    async () => {
      if (proc !== undefined && !isAlive(proc.pid)) {
        throw new Error(`process ${proc.pid} exited before ${url} answered:\n${proc.output()}`);
      }
      try {
        return (await httpRequest(url, { timeoutMs: 2000 })).status === status;
      } catch {
        return false;
      }
    },
    `${url} to answer ${status}`,
    timeoutMs,
  );
}
