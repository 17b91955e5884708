// Shared pieces of the stress tests and bench/stress.ts: child processes with
// a raised open-file limit speaking JSON lines, nginx memory from /proc,
// ESTABLISHED socket counts from ss, and small statistics.
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { childPids } from "../helpers/live-site";
import { isAlive, run, stopPid } from "../helpers/proc";

export const STRESS_DIR = __dirname;

// ------------------------------------------------------------ child processes

export interface ChildEvent {
  event: string;
  [k: string]: unknown;
}

export interface JsonChild {
  readonly pid: number;
  /** Send one command line. */
  send(cmd: Record<string, unknown>): void;
  /** The next line whose `event` is `event` (lines already received count). */
  next<T extends ChildEvent>(event: string, timeoutMs: number): Promise<T>;
  /** stderr so far (diagnostics). */
  stderr(): string;
  /** Ask it to exit, then stop it by PID. */
  stop(): Promise<void>;
}

/**
 * Run a self-contained TypeScript file from test/stress/ under this Node (its
 * built-in type stripping) with the open-file soft limit raised to the hard
 * limit: `bash -c 'ulimit -n HARD; exec [nice -n N] node FILE CONFIG'`. bash
 * and nice exec, so the PID is node's. `nice` lowers its CPU priority: a
 * client that stands in for remote machines should not take the server's CPU.
 */
export function startJsonChild(file: string, config: unknown, opts: { nice?: number } = {}): JsonChild {
  const script = path.join(STRESS_DIR, file);
  const nice = opts.nice ? `nice -n ${Math.trunc(opts.nice)} ` : "";
  const child: ChildProcess = spawn(
    "bash",
    [
      "-c",
      `ulimit -n "$(ulimit -Hn)" && exec ${nice}"$0" --disable-warning=ExperimentalWarning --disable-warning=MODULE_TYPELESS_PACKAGE_JSON "$@"`,
      process.execPath,
      script,
      JSON.stringify(config),
    ],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  if (child.pid === undefined) throw new Error(`failed to start ${file}`);
  const pid = child.pid;
  const lines: ChildEvent[] = [];
  const waiters: { event: string; resolve: (e: ChildEvent) => void }[] = [];
  let err = "";
  child.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  child.stdin?.on("error", () => undefined);
  const rl = readline.createInterface({ input: child.stdout! });
  rl.on("line", (line) => {
    let ev: ChildEvent;
    try {
      ev = JSON.parse(line) as ChildEvent;
    } catch {
      err += `(stdout) ${line}\n`;
      return;
    }
    const i = waiters.findIndex((w) => w.event === ev.event);
    if (i >= 0) waiters.splice(i, 1)[0]!.resolve(ev);
    else lines.push(ev);
  });
  let exitCode: number | null | undefined;
  const exited = new Promise<void>((resolve) => {
    child.on("exit", (code) => {
      exitCode = code;
      resolve();
    });
  });
  return {
    pid,
    send(cmd) {
      child.stdin?.write(JSON.stringify(cmd) + "\n");
    },
    next<T extends ChildEvent>(event: string, timeoutMs: number): Promise<T> {
      const i = lines.findIndex((l) => l.event === event);
      if (i >= 0) return Promise.resolve(lines.splice(i, 1)[0] as T);
      return new Promise<T>((resolve, reject) => {
        const w = {
          event,
          resolve: (e: ChildEvent) => {
            clearTimeout(timer);
            resolve(e as T);
          },
        };
        const timer = setTimeout(() => {
          const j = waiters.indexOf(w);
          if (j >= 0) waiters.splice(j, 1);
          reject(new Error(`${file}: no "${event}" within ${timeoutMs}ms (exit ${String(exitCode)}); stderr:\n${err.slice(-2000)}`));
        }, timeoutMs);
        waiters.push(w);
      });
    },
    stderr: () => err,
    async stop() {
      if (isAlive(pid)) {
        child.stdin?.write(JSON.stringify({ cmd: "exit" }) + "\n");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      }
      await stopPid(pid, 5000);
    },
  };
}

// ------------------------------------------------------------ nginx memory

export interface NginxMemory {
  masterKb: number;
  workerKb: number[];
  totalKb: number;
}

/** Resident set size of a process in KiB (VmRSS), 0 when it is gone. */
export function rssKb(pid: number): number {
  try {
    const m = /^VmRSS:\s+([0-9]+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** RSS of the nginx master and its workers from /proc/PID/status (VmRSS). */
export function nginxMemory(masterPid: number): NginxMemory {
  const masterKb = rssKb(masterPid);
  const workerKb = childPids(masterPid).map(rssKb);
  return { masterKb, workerKb, totalKb: masterKb + workerKb.reduce((a, b) => a + b, 0) };
}

/** Open descriptors per nginx worker (sockets included). */
export function nginxWorkerFds(masterPid: number): number[] {
  return childPids(masterPid).map((p) => {
    try {
      return readdirSync(`/proc/${p}/fd`).length;
    } catch {
      return 0;
    }
  });
}

/** The open-file soft limit of a running process. */
export function nofileLimit(pid: number): number {
  const m = /^Max open files\s+([0-9]+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
  return m ? (m[1] === "unlimited" ? Infinity : Number(m[1])) : 0;
}

// ------------------------------------------------------------ sockets

/** ESTABLISHED TCP sockets whose local port is `port` (server side of each connection). */
export async function establishedOn(port: number): Promise<number> {
  const r = await run("ss", ["-Htn", "state", "established", `( sport = :${port} )`], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`ss failed: ${r.stderr}`);
  return r.stdout.split("\n").filter((l) => l.trim() !== "").length;
}

// ------------------------------------------------------------ statistics

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function fmtMiB(kb: number): string {
  return `${(kb / 1024).toFixed(1)} MiB`;
}

// ------------------------------------------------------------ CPU

/** CPU time (user + system) of a process in clock ticks (USER_HZ, 100/s on Linux). */
export function cpuTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields 14 and 15 of /proc/PID/stat (utime, stime); f[0] is field 3.
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
}
