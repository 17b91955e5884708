// Child process for the connection stress test: opens COUNT TLS connections to
// nginx, sends one keep-alive request on each (so nginx moves it to its
// keep-alive state, governed by keepalive_timeout rather than
// client_header_timeout), then holds them idle until told otherwise.
//
// Run by test/stress/kit.ts as `node conn-holder.ts CONFIG_JSON` inside
// `bash -c 'ulimit -n <hard limit>; exec ...'`, so it can hold more sockets
// than the test runner. Self-contained (node: imports only) because Node runs
// it with its built-in type stripping.
//
// Protocol: one JSON object per line. stdout: {"event":"ramped",...} once the
// opening phase ends, then one reply per command. stdin commands:
//   {"cmd":"status"}                       -> {"event":"status", open, closedByServer, ...}
//   {"cmd":"probe","n":200,"path":"/x"}    -> {"event":"probe", ok, failed, statuses, errors}
//   {"cmd":"exit"}                         -> closes every socket and exits 0
import { readFileSync } from "node:fs";
import readline from "node:readline";
import tls from "node:tls";

interface HolderConfig {
  port: number;
  servername: string;
  hostHeader: string;
  caFile: string;
  count: number;
  /** TLS handshakes in flight at once while opening. */
  concurrency: number;
  /** Per connection: handshake plus first response. */
  openTimeoutMs: number;
  /** Stop opening new connections after this long (the rest count as not attempted). */
  deadlineMs: number;
  /** Path of the request sent on each new connection. */
  openPath: string;
}

interface Reply {
  status: number;
  bytes: number;
}

class Held {
  readonly sock: tls.TLSSocket;
  private buf: Buffer = Buffer.alloc(0);
  private waiter: ((r: Reply | Error) => void) | null = null;
  open = false;
  closed = false;

  constructor(sock: tls.TLSSocket) {
    this.sock = sock;
    sock.on("data", (chunk: Buffer) => {
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      this.tryParse();
    });
  }

  /** Complete the pending request when a whole response is buffered. */
  private tryParse(): void {
    if (this.waiter === null) return;
    const end = this.buf.indexOf("\r\n\r\n");
    if (end < 0) return;
    const head = this.buf.subarray(0, end).toString("latin1");
    const status = Number(/^HTTP\/1\.[01] ([0-9]{3})/.exec(head)?.[1] ?? "0");
    const cl = /\r\ncontent-length:\s*([0-9]+)/i.exec(head);
    let total: number;
    if (cl) {
      total = end + 4 + Number(cl[1]);
      if (this.buf.length < total) return;
    } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
      const term = this.buf.indexOf("\r\n0\r\n\r\n", end);
      if (term < 0) return;
      total = term + 7;
    } else {
      total = end + 4;
    }
    const w = this.waiter;
    this.waiter = null;
    this.buf = this.buf.subarray(total);
    w({ status, bytes: total });
  }

  request(path: string, host: string, timeoutMs: number): Promise<Reply> {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new Error("closed"));
        return;
      }
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error("timeout"));
      }, timeoutMs);
      this.waiter = (r) => {
        clearTimeout(timer);
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
      this.sock.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: fastapi-edge-stress\r\n\r\n`);
      this.tryParse();
    });
  }

  fail(err: Error): void {
    const w = this.waiter;
    this.waiter = null;
    if (w) w(err);
  }
}

const cfg = JSON.parse(process.argv[2] ?? "{}") as HolderConfig;
const ca = readFileSync(cfg.caFile);
const held: Held[] = [];
const openErrors = new Map<string, number>();
let closedByServer = 0;
const lateErrors = new Map<string, number>();
let session: Buffer | undefined;

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

function send(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function openOne(): Promise<boolean> {
  return new Promise((resolve) => {
    let settled = false;
    const sock = tls.connect({
      host: "127.0.0.1",
      port: cfg.port,
      servername: cfg.servername,
      ca,
      ...(session ? { session } : {}),
    });
    const h = new Held(sock);
    const done = (ok: boolean, why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (ok) {
        h.open = true;
        held.push(h);
      } else {
        bump(openErrors, why);
        sock.destroy();
      }
      resolve(ok);
    };
    const timer = setTimeout(() => done(false, "open timeout"), cfg.openTimeoutMs);
    sock.on("session", (s: Buffer) => {
      session ??= s;
    });
    sock.on("error", (e: NodeJS.ErrnoException) => {
      const why = e.code ?? e.message;
      if (!settled) done(false, why);
      else if (h.open) bump(lateErrors, why);
      h.fail(e);
    });
    sock.on("close", () => {
      h.fail(new Error("closed"));
      if (!settled) done(false, "closed before response");
      else if (h.open && !h.closed) closedByServer++;
      h.closed = true;
    });
    sock.once("secureConnect", () => {
      h.request(cfg.openPath, cfg.hostHeader, cfg.openTimeoutMs).then(
        (r) => done(r.status === 200, `HTTP ${r.status}`),
        (e: Error) => done(false, `first request: ${e.message}`),
      );
    });
  });
}

async function ramp(): Promise<void> {
  const t0 = Date.now();
  let next = 0;
  let opened = 0;
  let failed = 0;
  const worker = async (): Promise<void> => {
    while (next < cfg.count && Date.now() - t0 < cfg.deadlineMs) {
      next++;
      if (await openOne()) opened++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: cfg.concurrency }, worker));
  send({
    event: "ramped",
    attempted: next,
    opened,
    failed,
    stillOpen: held.filter((h) => !h.closed).length,
    errors: Object.fromEntries(openErrors),
    ms: Date.now() - t0,
    resumed: held.filter((h) => h.sock.isSessionReused()).length,
  });
}

async function probe(n: number, path: string): Promise<void> {
  const alive = held.filter((h) => !h.closed);
  const step = Math.max(1, Math.floor(alive.length / Math.max(1, n)));
  const sample: Held[] = [];
  for (let i = 0; i < alive.length && sample.length < n; i += step) sample.push(alive[i]!);
  const statuses = new Map<string, number>();
  const errors = new Map<string, number>();
  let ok = 0;
  const t0 = Date.now();
  // 20 at a time: the probe measures liveness, not throughput.
  let idx = 0;
  const worker = async (): Promise<void> => {
    while (idx < sample.length) {
      const h = sample[idx++]!;
      try {
        const r = await h.request(path, cfg.hostHeader, 10_000);
        bump(statuses, String(r.status));
        if (r.status === 200) ok++;
      } catch (e) {
        bump(errors, (e as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: 20 }, worker));
  send({
    event: "probe",
    sampled: sample.length,
    ok,
    failed: sample.length - ok,
    statuses: Object.fromEntries(statuses),
    errors: Object.fromEntries(errors),
    ms: Date.now() - t0,
  });
}

function status(): void {
  send({
    event: "status",
    held: held.length,
    open: held.filter((h) => !h.closed).length,
    closedByServer,
    lateErrors: Object.fromEntries(lateErrors),
    rssKb: Math.round(process.memoryUsage().rss / 1024),
  });
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const m = JSON.parse(line) as { cmd: string; n?: number; path?: string };
  if (m.cmd === "status") status();
  else if (m.cmd === "probe") void probe(m.n ?? 100, m.path ?? cfg.openPath);
  else if (m.cmd === "exit") {
    for (const h of held) h.sock.destroy();
    process.exit(0);
  }
});
// The parent going away closes stdin: never outlive it.
rl.on("close", () => process.exit(0));

void ramp();
