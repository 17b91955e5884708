// The access log turned into answers: parse the JSON lines nginx writes
// (files/nginx/log-format.conf), keep a time window, and sum them up into a
// report (per-minute status mix, 4xx/5xx rates, hot and slow endpoints, the
// addresses closed with 444, paths the app never answers), with a text
// formatter. Pure: no I/O, no Pulumi import; `npm run logs` (scripts/logs.ts)
// feeds it the lines it read.

/** One access-log line. */
export interface LogEntry {
  /** Seconds since the epoch, millisecond resolution (nginx $msec, the time the line was written). */
  msec: number;
  client: string;
  /** The server that handled the request: "_" for the catch-all (unknown Host) servers. */
  server: string;
  host: string;
  scheme: string;
  method: string;
  /** The path as sent, without the query string. */
  path: string;
  /** The request had a query string (its content is never logged). */
  query: boolean;
  status: number;
  bytes: number;
  /** Seconds from the first byte read to the last byte sent. */
  requestTime: number;
  /**
   * Seconds spent waiting on app processes: the sum over every attempt (nginx
   * lists one time per process tried); null when no upstream was tried.
   */
  upstreamTime: number | null;
  /** The status of each upstream attempt ("502, 200": the first process failed, the second answered). */
  upstreamStatuses: number[];
  upstreamAddrs: string[];
  userAgent: string;
}

export interface ParsedLog {
  entries: LogEntry[];
  /** With keepLines: each entry's line as it was read (for GoAccess). */
  lines: string[];
  /** Lines that are not one of our JSON objects (the old text format before an upgrade, torn lines). */
  skipped: number;
}

function str(o: Record<string, unknown>, k: string): string {
  const v = o[k];
  return typeof v === "string" ? v : "";
}

function num(o: Record<string, unknown>, k: string): number | null {
  const v = o[k];
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** nginx joins the values of several upstream attempts with ", " (retries) and " : " (internal redirects). */
function upstreamList(v: string): string[] {
  if (v === "") return [];
  // One attempt, the common case: no split (a day of lines goes through here).
  if (!v.includes(",") && !v.includes(" : ")) return [v];
  return v.split(/, | : /).map((s) => s.trim());
}

/** One line, or null when it is not an access-log object of ours. */
export function parseLogLine(line: string): LogEntry | null {
  const text = line.trim();
  if (!text.startsWith("{")) return null;
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof o !== "object" || o === null || Array.isArray(o)) return null;
  const r = o as Record<string, unknown>;
  const msec = num(r, "msec");
  const status = num(r, "status");
  if (msec === null || status === null) return null;
  let upstreamTime: number | null = null;
  for (const t of upstreamList(str(r, "upstream_time"))) {
    const x = Number(t);
    // "-": an attempt without a response time.
    if (t !== "-" && x === x) upstreamTime = (upstreamTime ?? 0) + x;
  }
  return {
    msec,
    client: str(r, "client"),
    server: str(r, "server"),
    host: str(r, "host"),
    scheme: str(r, "scheme"),
    method: str(r, "method"),
    path: str(r, "path"),
    query: str(r, "query") === "?",
    status,
    bytes: num(r, "bytes") ?? 0,
    requestTime: num(r, "request_time") ?? 0,
    upstreamTime: upstreamTime === null ? null : Math.round(upstreamTime * 1000) / 1000,
    upstreamStatuses: upstreamList(str(r, "upstream_status"))
      .map((s) => Number(s))
      .filter((s) => Number.isInteger(s)),
    upstreamAddrs: upstreamList(str(r, "upstream_addr")),
    userAgent: str(r, "user_agent"),
  };
}

export function parseLog(text: string, opts: { keepLines?: boolean } = {}): ParsedLog {
  const entries: LogEntry[] = [];
  const lines: string[] = [];
  let skipped = 0;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const e = parseLogLine(line);
    if (e) {
      entries.push(e);
      if (opts.keepLines) lines.push(line);
    } else skipped++;
  }
  return { entries, lines, skipped };
}

// ------------------------------------------------------------------ window

const DURATION_RE = /^([1-9][0-9]{0,5})(s|m|h|d)$/;
const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** `--since` as seconds: 90s, 30m, 1h, 7d. Throws naming the flag and the accepted form. */
export function parseSince(v: string): number {
  const m = DURATION_RE.exec(v);
  if (!m) throw new Error(`--since must be a duration such as 90s, 30m, 1h or 7d (got ${JSON.stringify(v)})`);
  return Number(m[1]) * UNIT_SECONDS[m[2]!]!;
}

/** Entries written at or after `fromMsec` (seconds since the epoch). */
export function inWindow(entries: LogEntry[], fromMsec: number | null): LogEntry[] {
  return fromMsec === null ? entries : entries.filter((e) => e.msec >= fromMsec);
}

// ------------------------------------------------------------------ report

export type StatusClass = "1xx" | "2xx" | "3xx" | "4xx" | "5xx";
export const STATUS_CLASSES: readonly StatusClass[] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

export type StatusMix = Record<StatusClass, number>;

export interface MinuteRow {
  /** The minute, UTC, as 2026-11-29T17:04Z. */
  minute: string;
  total: number;
  mix: StatusMix;
  /** Of the 4xx: rate-limited (429) and closed without a response (444). */
  s429: number;
  s444: number;
}

export interface EndpointCount {
  method: string;
  path: string;
  count: number;
  /** Requests answered with 5xx. */
  errors5xx: number;
}

export interface EndpointTiming {
  method: string;
  path: string;
  /** Requests that reached the app (they have an upstream time). */
  count: number;
  /** 95th percentile of the upstream time in seconds (nearest rank). */
  p95: number;
  max: number;
}

export interface ClosedClient {
  client: string;
  count: number;
  /** What it asked for: Host header and path, with counts. */
  requests: { host: string; path: string; count: number }[];
}

export interface UnansweredPath {
  path: string;
  count: number;
  /** Of count: 404s (the app's, or nginx's for a static file) and 444s (closed by nginx, the app never saw them). */
  s404: number;
  s444: number;
  clients: number;
}

export interface LogReport {
  /** First and last line's time (seconds since the epoch), null for an empty window. */
  from: number | null;
  to: number | null;
  total: number;
  skipped: number;
  mix: StatusMix;
  /** Fractions of total (0 when total is 0). */
  rate4xx: number;
  rate5xx: number;
  s429: number;
  s444: number;
  perMinute: MinuteRow[];
  topByCount: EndpointCount[];
  topByP95: EndpointTiming[];
  closed444: ClosedClient[];
  unanswered: UnansweredPath[];
}

export interface ReportOptions {
  /** Rows in each top list (default 10). */
  top?: number;
}

function emptyMix(): StatusMix {
  return { "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0 };
}

export function statusClass(status: number): StatusClass | null {
  const c = `${Math.floor(status / 100)}xx`;
  return (STATUS_CLASSES as readonly string[]).includes(c) ? (c as StatusClass) : null;
}

/** 95th percentile by nearest rank: the smallest value with at least 95% of values at or below it. */
export function p95(values: number[]): number {
  if (!values.length) throw new Error("p95 of nothing");
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.ceil(0.95 * sorted.length) - 1]!;
}

function minuteKey(msec: number): string {
  return new Date(Math.floor(msec / 60) * 60_000).toISOString().slice(0, 16) + "Z";
}

const round4 = (x: number): number => Math.round(x * 10_000) / 10_000;

/**
 * The report over `entries` (already windowed).
 *
 * Endpoints (top lists) are METHOD + path of requests the site's server
 * handled and did not close with 444: the catch-all server's requests and the
 * scanner paths are in closed444 instead. A path the app never answers is one
 * whose every request in the window ended in 404 or 444.
 */
export function buildReport(entries: LogEntry[], skipped = 0, opts: ReportOptions = {}): LogReport {
  const top = opts.top ?? 10;
  const mix = emptyMix();
  const minutes = new Map<string, MinuteRow>();
  const counts = new Map<string, EndpointCount>();
  const times = new Map<string, number[]>();
  const closed = new Map<string, Map<string, { host: string; path: string; count: number }>>();
  const byPath = new Map<string, { count: number; s404: number; s444: number; other: number; clients: Set<string> }>();
  let s429 = 0;
  let s444 = 0;

  for (const e of entries) {
    const cls = statusClass(e.status);
    if (cls) mix[cls]++;
    if (e.status === 429) s429++;
    if (e.status === 444) s444++;

    const mk = minuteKey(e.msec);
    let row = minutes.get(mk);
    if (!row) minutes.set(mk, (row = { minute: mk, total: 0, mix: emptyMix(), s429: 0, s444: 0 }));
    row.total++;
    if (cls) row.mix[cls]++;
    if (e.status === 429) row.s429++;
    if (e.status === 444) row.s444++;

    if (e.status === 444) {
      let asked = closed.get(e.client);
      if (!asked) closed.set(e.client, (asked = new Map()));
      const k = `${e.host}\u0000${e.path}`;
      const a = asked.get(k);
      if (a) a.count++;
      else asked.set(k, { host: e.host, path: e.path, count: 1 });
    } else if (e.server !== "_") {
      const k = `${e.method} ${e.path}`;
      let c = counts.get(k);
      if (!c) counts.set(k, (c = { method: e.method, path: e.path, count: 0, errors5xx: 0 }));
      c.count++;
      if (e.status >= 500) c.errors5xx++;
      if (e.upstreamTime !== null) {
        const t = times.get(k);
        if (t) t.push(e.upstreamTime);
        else times.set(k, [e.upstreamTime]);
      }
    }

    let p = byPath.get(e.path);
    if (!p) byPath.set(e.path, (p = { count: 0, s404: 0, s444: 0, other: 0, clients: new Set() }));
    p.count++;
    p.clients.add(e.client);
    if (e.status === 404) p.s404++;
    else if (e.status === 444) p.s444++;
    else p.other++;
  }

  const byCountThenName =
    <T extends { count: number }>(name: (x: T) => string) =>
    (a: T, b: T) =>
      b.count - a.count || (name(a) < name(b) ? -1 : name(a) > name(b) ? 1 : 0);

  const topByCount = [...counts.values()].sort(byCountThenName((x) => `${x.path} ${x.method}`)).slice(0, top);
  const topByP95 = [...times.entries()]
    .map(([k, t]): EndpointTiming => {
      const c = counts.get(k)!;
      return { method: c.method, path: c.path, count: t.length, p95: p95(t), max: t.reduce((m, x) => (x > m ? x : m), -Infinity) };
    })
    .sort((a, b) => b.p95 - a.p95 || b.count - a.count || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
    .slice(0, top);
  const closed444 = [...closed.entries()]
    .map(([client, asked]): ClosedClient => {
      const requests = [...asked.values()].sort(byCountThenName((x) => `${x.host} ${x.path}`));
      return { client, count: requests.reduce((n, r) => n + r.count, 0), requests };
    })
    .sort(byCountThenName((x) => x.client));
  const unanswered = [...byPath.entries()]
    .filter(([, p]) => p.other === 0)
    .map(([path, p]): UnansweredPath => ({ path, count: p.count, s404: p.s404, s444: p.s444, clients: p.clients.size }))
    .sort(byCountThenName((x) => x.path));

  const total = entries.length;
  return {
    // Loops, not Math.min(...xs): spreading a day of lines overflows the call stack.
    from: total ? entries.reduce((m, e) => (e.msec < m ? e.msec : m), Infinity) : null,
    to: total ? entries.reduce((m, e) => (e.msec > m ? e.msec : m), -Infinity) : null,
    total,
    skipped,
    mix,
    rate4xx: total ? round4(mix["4xx"] / total) : 0,
    rate5xx: total ? round4(mix["5xx"] / total) : 0,
    s429,
    s444,
    perMinute: [...minutes.values()].sort((a, b) => (a.minute < b.minute ? -1 : 1)),
    topByCount,
    topByP95,
    closed444,
    unanswered: unanswered.slice(0, Math.max(top, 20)),
  };
}

// --------------------------------------------------------------- text form

function table(head: string[], rows: string[][], rightAlign: boolean[]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (rightAlign[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(head), ...rows.map(line)];
}

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
const secs = (x: number): string => x.toFixed(3);
const iso = (msec: number): string => new Date(Math.round(msec * 1000)).toISOString();

/** The report as text for a terminal. */
export function formatReport(r: LogReport, source: string): string {
  const out: string[] = [];
  out.push(`Access log: ${source}`);
  if (r.from === null || r.to === null) {
    out.push(`No requests in the window${r.skipped ? ` (${r.skipped} lines skipped: not JSON access-log lines)` : ""}.`);
    return out.join("\n") + "\n";
  }
  out.push(`Window: ${iso(r.from)} .. ${iso(r.to)} UTC`);
  out.push(
    `Requests: ${r.total}  ` +
      STATUS_CLASSES.filter((c) => c !== "1xx" || r.mix[c])
        .map((c) => `${c} ${r.mix[c]}`)
        .join("  ") +
      `  (429 rate-limited ${r.s429}, 444 closed ${r.s444})`,
  );
  out.push(`4xx rate: ${pct(r.rate4xx)}   5xx rate: ${pct(r.rate5xx)}`);
  if (r.skipped) out.push(`Skipped ${r.skipped} lines that are not JSON access-log lines (the old format before an upgrade?).`);

  out.push("", "Per minute (UTC)");
  out.push(
    ...table(
      ["minute", "total", "2xx", "3xx", "4xx", "5xx", "429", "444"],
      r.perMinute.map((m) => [
        m.minute,
        String(m.total),
        String(m.mix["2xx"]),
        String(m.mix["3xx"]),
        String(m.mix["4xx"]),
        String(m.mix["5xx"]),
        String(m.s429),
        String(m.s444),
      ]),
      [false, true, true, true, true, true, true, true],
    ).map((l) => `  ${l}`),
  );

  out.push("", "Top endpoints by requests");
  out.push(
    ...table(
      ["requests", "5xx", "endpoint"],
      r.topByCount.map((e) => [String(e.count), String(e.errors5xx), `${e.method} ${e.path}`]),
      [true, true, false],
    ).map((l) => `  ${l}`),
  );

  out.push("", "Slowest endpoints by p95 upstream time (seconds; requests that reached the app)");
  out.push(
    ...(r.topByP95.length
      ? table(
          ["p95", "max", "requests", "endpoint"],
          r.topByP95.map((e) => [secs(e.p95), secs(e.max), String(e.count), `${e.method} ${e.path}`]),
          [true, true, true, false],
        ).map((l) => `  ${l}`)
      : ["  (no request reached the app)"]),
  );

  out.push("", "Closed with 444 (no response): address, then what it asked for");
  if (!r.closed444.length) out.push("  (none)");
  for (const c of r.closed444) {
    out.push(`  ${c.client}  ${c.count}`);
    for (const q of c.requests) out.push(`      ${String(q.count).padStart(4)}  ${q.host} ${q.path}`);
  }

  out.push("", "Paths the app never answers (every request ended in 404 or 444)");
  out.push(
    ...(r.unanswered.length
      ? table(
          ["requests", "404", "444", "clients", "path"],
          r.unanswered.map((u) => [String(u.count), String(u.s404), String(u.s444), String(u.clients), u.path]),
          [true, true, true, true, false],
        ).map((l) => `  ${l}`)
      : ["  (none)"]),
  );
  return out.join("\n") + "\n";
}
