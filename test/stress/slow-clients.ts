// Child process for the slow-client stress test: an attack by clients that
// hold connections open as cheaply as possible for themselves and as
// expensively as possible for the server.
//   - header senders: a request whose header arrives one byte per interval
//   - body senders:   a POST whose headers arrive at once, then its body one
//                     byte per interval
//   - slow readers:   GET a large response, then take readBytes per interval
//                     from a paused socket (Node stops reading the socket once
//                     its buffer is full, the kernel's receive window fills,
//                     and the server's writes block)
// A client whose connection the server closes reconnects (an attacker would),
// until the phase ends. Everything stops by itself after durationMs.
//
// Run by test/stress/kit.ts (startJsonChild) with the open-file limit raised.
// Self-contained (node: imports only): Node runs it with type stripping.
//
// Protocol (JSON lines): stdout {"event":"ramped"} once every client has
// started, {"event":"stats",...} per {"cmd":"stats"}, and {"event":"done",...}
// when the phase ends; stdin {"cmd":"exit"} stops early.
import { readFileSync } from "node:fs";
import net from "node:net";
import readline from "node:readline";
import tls from "node:tls";

/** How many clients of each kind attack, and how slowly they go. */
export interface SlowClients {
  headerSenders: number;
  bodySenders: number;
  slowReaders: number;
  /** Header and body senders: one byte per interval. */
  byteIntervalMs: number;
  /** Slow readers: readBytes per interval. */
  readIntervalMs: number;
  readBytes: number;
}

interface SlowConfig extends SlowClients {
  port: number;
  /** TLS to nginx (with SNI and CA), or null for plain HTTP straight to uvicorn. */
  tls: { servername: string; caFile: string } | null;
  hostHeader: string;
  headerPath: string;
  bodyPath: string;
  /** Content-Length the body senders announce (never reached within a phase). */
  bodyBytes: number;
  readerPath: string;
  /** Client starts are spread over this long. */
  rampMs: number;
  /** The phase: every client stops this long after the start. */
  durationMs: number;
}

type Kind = "header" | "body" | "reader";

export interface KindStats {
  clients: number;
  connects: number;
  connectErrors: number;
  /** Connections the server closed (FIN or reset) while the client was active. */
  closedByServer: number;
  /** Complete responses, by status code. */
  responses: Record<string, number>;
  bytesSent: number;
  bytesRead: number;
  /** Connections open right now. */
  open: number;
}

const cfg = JSON.parse(process.argv[2] ?? "{}") as SlowConfig;
const ca = cfg.tls ? readFileSync(cfg.tls.caFile) : null;
const t0 = Date.now();
const endAt = t0 + cfg.durationMs;
let stopping = false;
let session: Buffer | undefined;
const sockets = new Set<net.Socket>();
const timers = new Set<NodeJS.Timeout>();

const stats: Record<Kind, KindStats> = {
  header: blank(cfg.headerSenders),
  body: blank(cfg.bodySenders),
  reader: blank(cfg.slowReaders),
};

function blank(clients: number): KindStats {
  return { clients, connects: 0, connectErrors: 0, closedByServer: 0, responses: {}, bytesSent: 0, bytesRead: 0, open: 0 };
}

function send(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function later(ms: number, fn: () => void): void {
  const t = setTimeout(() => {
    timers.delete(t);
    fn();
  }, ms);
  timers.add(t);
}

function every(ms: number, fn: () => void): () => void {
  const t = setInterval(fn, ms);
  timers.add(t);
  return () => {
    clearInterval(t);
    timers.delete(t);
  };
}

function connect(onReady: (s: net.Socket) => void): net.Socket {
  if (cfg.tls) {
    const s = tls.connect({ host: "127.0.0.1", port: cfg.port, servername: cfg.tls.servername, ca: ca!, ...(session ? { session } : {}) });
    s.on("session", (x: Buffer) => {
      session ??= x;
    });
    s.once("secureConnect", () => onReady(s));
    return s;
  }
  const s = net.connect({ host: "127.0.0.1", port: cfg.port });
  s.once("connect", () => onReady(s));
  return s;
}

/** Counts complete HTTP/1.1 responses in a byte stream (Content-Length framing). */
class ResponseCounter {
  private head = "";
  private remaining = -1;
  private status = "";
  private readonly onResponse: (status: string) => void;
  constructor(onResponse: (status: string) => void) {
    this.onResponse = onResponse;
  }
  feed(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      if (this.remaining < 0) {
        // Reading a header (small: keep it as text).
        const need = chunk.subarray(off).toString("latin1");
        const joined = this.head + need;
        const end = joined.indexOf("\r\n\r\n");
        if (end < 0) {
          this.head = joined.slice(-8192);
          return;
        }
        const head = joined.slice(0, end);
        this.status = /^HTTP\/1\.[01] ([0-9]{3})/.exec(head)?.[1] ?? "???";
        const cl = /\r\ncontent-length:\s*([0-9]+)/i.exec(head);
        this.remaining = cl ? Number(cl[1]) : 0;
        off += end + 4 - this.head.length;
        this.head = "";
      }
      const take = Math.min(this.remaining, chunk.length - off);
      this.remaining -= take;
      off += take;
      if (this.remaining === 0) {
        this.remaining = -1;
        this.onResponse(this.status);
      }
    }
  }
}

function client(kind: Kind): void {
  if (stopping || Date.now() >= endAt) return;
  const st = stats[kind];
  let ready = false;
  let stopTimer: () => void = () => undefined;
  const counter = new ResponseCounter((status) => {
    st.responses[status] = (st.responses[status] ?? 0) + 1;
    if (kind === "reader" && !stopping) {
      // Keep-alive: ask for the next large response on the same connection.
      sock.write(readerRequest());
    }
  });
  const sock = connect((s) => {
    ready = true;
    st.connects++;
    st.open++;
    if (kind === "header") {
      const bytes = Buffer.from(headerRequest(), "latin1");
      let i = 0;
      stopTimer = every(cfg.byteIntervalMs, () => {
        if (i >= bytes.length) return stopTimer();
        s.write(bytes.subarray(i, i + 1));
        i++;
        st.bytesSent++;
      });
    } else if (kind === "body") {
      const head = bodyHead();
      s.write(head);
      st.bytesSent += head.length;
      let i = 0;
      stopTimer = every(cfg.byteIntervalMs, () => {
        if (i >= cfg.bodyBytes) return stopTimer();
        s.write("b");
        i++;
        st.bytesSent++;
      });
    } else {
      const req = readerRequest();
      s.write(req);
      st.bytesSent += req.length;
      // Paused mode: take readBytes per interval from the stream's buffer.
      // read(0) asks the stream to refill its buffer (up to its high-water mark).
      s.read(0);
      stopTimer = every(cfg.readIntervalMs, () => {
        const n = Math.min(cfg.readBytes, s.readableLength);
        const chunk = n > 0 ? (s.read(n) as Buffer | null) : null;
        if (chunk) {
          st.bytesRead += chunk.length;
          counter.feed(chunk);
        }
        s.read(0);
      });
    }
  });
  sockets.add(sock);
  if (kind === "reader") sock.pause();
  else {
    sock.on("data", (chunk: Buffer) => {
      st.bytesRead += chunk.length;
      counter.feed(chunk);
    });
  }
  sock.on("error", () => undefined);
  sock.on("close", () => {
    sockets.delete(sock);
    stopTimer();
    if (!ready) st.connectErrors++;
    else {
      st.open--;
      if (!stopping) st.closedByServer++;
    }
    // An attacker reconnects.
    if (!stopping) later(ready ? 100 : 500, () => client(kind));
  });
}

function headerRequest(): string {
  // Long enough that it never completes within a phase at one byte per interval.
  return `GET ${cfg.headerPath} HTTP/1.1\r\nHost: ${cfg.hostHeader}\r\nUser-Agent: fastapi-edge-stress-slow-header\r\nX-Pad: ${"p".repeat(4000)}\r\n\r\n`;
}

function bodyHead(): string {
  return `POST ${cfg.bodyPath} HTTP/1.1\r\nHost: ${cfg.hostHeader}\r\nUser-Agent: fastapi-edge-stress-slow-body\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${cfg.bodyBytes}\r\n\r\n`;
}

function readerRequest(): string {
  return `GET ${cfg.readerPath} HTTP/1.1\r\nHost: ${cfg.hostHeader}\r\nUser-Agent: fastapi-edge-stress-slow-reader\r\n\r\n`;
}

function snapshot(event: string): void {
  send({ event, elapsedMs: Date.now() - t0, stats });
}

function finish(): void {
  if (stopping) return;
  stopping = true;
  snapshot("done");
  for (const t of timers) clearTimeout(t);
  for (const s of sockets) s.destroy();
  // Give stdout a moment to flush.
  setTimeout(() => process.exit(0), 100).unref();
}

// Interleave the kinds so each ramps evenly.
const order: Kind[] = [];
for (let i = 0; order.length < cfg.headerSenders + cfg.bodySenders + cfg.slowReaders; i++) {
  if (i < cfg.headerSenders) order.push("header");
  if (i < cfg.bodySenders) order.push("body");
  if (i < cfg.slowReaders) order.push("reader");
}
order.forEach((kind, i) => later(Math.floor((i * cfg.rampMs) / Math.max(1, order.length)), () => client(kind)));
later(cfg.rampMs + 50, () => snapshot("ramped"));
later(cfg.durationMs, finish);

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const m = JSON.parse(line) as { cmd: string };
  if (m.cmd === "stats") snapshot("stats");
  else if (m.cmd === "exit") finish();
});
rl.on("close", finish);
