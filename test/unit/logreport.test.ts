// lib/logreport.ts (parse, window, report, text) with exact figures over a
// hand-made log in the format files/nginx/log-format.conf writes; lib/logsource.ts
// (a stack's SSH connection, ssh arguments, validation); files/scripts/log-window.sh
// run by real bash against temp logs.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { dateSpec, goaccessArgs } from "../../lib/goaccess";
import { buildReport, formatReport, inWindow, p95, parseLog, parseLogLine, parseSince } from "../../lib/logreport";
import { knownHostsLine, remoteWindowCommand, sshArgs, stackSshTarget, validateLogPath, validateTarget } from "../../lib/logsource";

const SITE = "api.example.com";
const T0 = 1795971600; // 2026-11-29T17:00:00Z

interface L {
  t: number;
  client?: string;
  server?: string;
  host?: string;
  scheme?: string;
  method?: string;
  path: string;
  query?: boolean;
  status: number;
  bytes?: number;
  rt?: string;
  ut?: string;
  us?: string;
  ua?: string;
}

/** A line exactly as nginx's escape=json log_format writes it. */
function line(l: L): string {
  const up = l.ut ?? "";
  return (
    `{"msec":${(T0 + l.t).toFixed(3)},"time":"${new Date((T0 + l.t) * 1000).toISOString().slice(0, 19)}+00:00",` +
    `"client":"${l.client ?? "198.51.100.7"}","server":"${l.server ?? SITE}","host":"${l.host ?? SITE}",` +
    `"scheme":"${l.scheme ?? "https"}","method":"${l.method ?? "GET"}","path":"${l.path}","query":"${l.query ? "?" : ""}",` +
    `"protocol":"HTTP/1.1","status":${l.status},"bytes":${l.bytes ?? 100},"request_time":${l.rt ?? "0.010"},` +
    `"upstream_time":"${up}","upstream_status":"${l.us ?? (up ? String(l.status) : "")}","upstream_addr":"${up ? "127.0.0.1:8000" : ""}",` +
    `"user_agent":"${l.ua ?? "curl/8.0"}"}`
  );
}

const LOG = [
  // 17:00 — normal traffic, one slow endpoint
  ...[0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1].map((ut, i) =>
    line({ t: i, path: "/api/hello", status: 200, ut: ut.toFixed(3) }),
  ),
  line({ t: 10, path: "/api/slow", status: 200, ut: "0.800", query: true }),
  line({ t: 11, path: "/api/slow", status: 200, ut: "1.200" }),
  line({ t: 12, method: "POST", path: "/auth/token", status: 200, ut: "0.004" }),
  // 17:01 — rate limited, scanner paths, an unknown Host, the app's 404s
  line({ t: 60, method: "POST", path: "/auth/token", status: 429 }),
  line({ t: 61, method: "POST", path: "/auth/token", status: 429 }),
  line({ t: 62, client: "203.0.113.9", path: "/wp-login.php", status: 444, bytes: 0 }),
  line({ t: 63, client: "203.0.113.9", path: "/wp-login.php", status: 444, bytes: 0 }),
  line({ t: 64, client: "203.0.113.9", path: "/xmlrpc.php", status: 444, bytes: 0 }),
  line({ t: 65, client: "192.0.2.1", server: "_", host: "203.0.113.50", scheme: "http", path: "/", status: 444, bytes: 0 }),
  line({ t: 66, path: "/api/missing", status: 404, ut: "0.002" }),
  line({ t: 67, client: "192.0.2.1", path: "/.env", status: 404, ut: "0.001" }),
  line({ t: 68, path: "/api/hello", status: 404, ut: "0.002" }), // a 404 on a path that also answers 200
  // 17:02 — app errors: a retried request, then the maintenance page
  line({ t: 120, path: "/api/hello", status: 200, ut: "0.000, 0.012", us: "502, 200" }),
  line({ t: 121, path: "/api/hello", status: 503, ut: "0.001, 0.000", us: "502, 502" }),
  line({ t: 122, path: "/healthz", status: 503, ut: "-" }),
  line({ t: 123, scheme: "http", path: "/api/hello", status: 301 }),
  // the old text format before an upgrade, and a torn line
  '127.0.0.1 - - [29/Nov/2026:16:59:59 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.0" rt=0.001 uct=0.000 urt=0.001 ups=127.0.0.1:8000',
  '{"msec":1795971',
].join("\n");

describe("the test's lines", () => {
  it("have the keys of files/nginx/log-format.conf, in its order (msec first, for log-window.sh)", () => {
    const conf = readFileSync(path.resolve(__dirname, "../../files/nginx/log-format.conf"), "utf8");
    const format = conf.slice(conf.indexOf("log_format fastapi_edge"));
    const keys = [...format.matchAll(/"([a-z_]+)":/g)].map((m) => m[1]);
    expect(keys[0]).toBe("msec");
    expect(Object.keys(JSON.parse(line({ t: 0, path: "/", status: 200 })) as object)).toEqual(keys);
  });
});

describe("parseLogLine", () => {
  it("reads every field; upstream lists are split and their times summed", () => {
    const e = parseLogLine(line({ t: 120, path: "/api/hello", status: 200, ut: "0.000, 0.012", us: "502, 200", query: true }))!;
    expect(e).toEqual({
      msec: T0 + 120,
      client: "198.51.100.7",
      server: SITE,
      host: SITE,
      scheme: "https",
      method: "GET",
      path: "/api/hello",
      query: true,
      status: 200,
      bytes: 100,
      requestTime: 0.01,
      upstreamTime: 0.012,
      upstreamStatuses: [502, 200],
      upstreamAddrs: ["127.0.0.1:8000"],
      userAgent: "curl/8.0",
    });
    // No upstream: null; an internal redirect's " : " separator; "-" (no response) is not a time.
    expect(parseLogLine(line({ t: 0, path: "/", status: 444 }))!.upstreamTime).toBeNull();
    expect(parseLogLine(line({ t: 0, path: "/", status: 503, ut: "0.002 : 0.001", us: "502 : 503" }))!).toMatchObject({
      upstreamTime: 0.003,
      upstreamStatuses: [502, 503],
    });
    expect(parseLogLine(line({ t: 0, path: "/", status: 503, ut: "-" }))!.upstreamTime).toBeNull();
  });

  it("decodes what escape=json escaped (quotes, backslashes, control bytes)", () => {
    const l = line({ t: 0, path: "/a", status: 200, ua: 'x\\"y\\\\z\\u0007' });
    expect(parseLogLine(l)!.userAgent).toBe('x"y\\z\u0007');
  });

  it("refuses what is not one of our lines", () => {
    for (const bad of ["", "not json", "[1,2]", '{"msec":"x","status":200}', '{"status":200}', '{"msec":1', "null"])
      expect(parseLogLine(bad), bad).toBeNull();
  });
});

describe("parseSince and inWindow", () => {
  it("parses durations and names the flag on bad input", () => {
    expect([parseSince("90s"), parseSince("30m"), parseSince("1h"), parseSince("7d")]).toEqual([90, 1800, 3600, 604800]);
    for (const bad of ["", "1", "0h", "1w", "-1h", "1.5h", "1h;rm"])
      expect(() => parseSince(bad), bad).toThrow(/--since must be a duration/);
  });

  it("keeps lines at or after the start", () => {
    const { entries } = parseLog(LOG);
    expect(inWindow(entries, T0 + 120).map((e) => e.path)).toEqual(["/api/hello", "/api/hello", "/healthz", "/api/hello"]);
    expect(inWindow(entries, null)).toHaveLength(entries.length);
  });
});

describe("p95", () => {
  it("is the nearest rank", () => {
    expect(p95([5])).toBe(5);
    expect(p95([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])).toBe(10);
    expect(p95(Array.from({ length: 20 }, (_, i) => i + 1))).toBe(19);
    expect(p95(Array.from({ length: 100 }, (_, i) => 100 - i))).toBe(95);
  });
});

describe("buildReport", () => {
  const { entries, skipped } = parseLog(LOG);
  const r = buildReport(entries, skipped);

  it("counts the status mix, the rates, 429 and 444", () => {
    expect(skipped).toBe(2);
    expect(r.total).toBe(26);
    expect(r.mix).toEqual({ "1xx": 0, "2xx": 14, "3xx": 1, "4xx": 9, "5xx": 2 });
    expect([r.s429, r.s444]).toEqual([2, 4]);
    expect(r.rate4xx).toBe(0.3462);
    expect(r.rate5xx).toBe(0.0769);
    expect([r.from, r.to]).toEqual([T0, T0 + 123]);
  });

  it("buckets per UTC minute", () => {
    expect(r.perMinute).toEqual([
      { minute: "2026-11-29T17:00Z", total: 13, mix: { "1xx": 0, "2xx": 13, "3xx": 0, "4xx": 0, "5xx": 0 }, s429: 0, s444: 0 },
      { minute: "2026-11-29T17:01Z", total: 9, mix: { "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 9, "5xx": 0 }, s429: 2, s444: 4 },
      { minute: "2026-11-29T17:02Z", total: 4, mix: { "1xx": 0, "2xx": 1, "3xx": 1, "4xx": 0, "5xx": 2 }, s429: 0, s444: 0 },
    ]);
  });

  it("ranks endpoints by requests (444s and unknown Host left out) and by p95 upstream time", () => {
    expect(r.topByCount).toEqual([
      { method: "GET", path: "/api/hello", count: 14, errors5xx: 1 },
      { method: "POST", path: "/auth/token", count: 3, errors5xx: 0 },
      { method: "GET", path: "/api/slow", count: 2, errors5xx: 0 },
      { method: "GET", path: "/.env", count: 1, errors5xx: 0 },
      { method: "GET", path: "/api/missing", count: 1, errors5xx: 0 },
      { method: "GET", path: "/healthz", count: 1, errors5xx: 1 },
    ]);
    // /api/hello: 13 upstream times (0.010..0.100, 0.002, 0.012, 0.001): p95 is the 13th smallest, 0.1.
    expect(r.topByP95).toEqual([
      { method: "GET", path: "/api/slow", count: 2, p95: 1.2, max: 1.2 },
      { method: "GET", path: "/api/hello", count: 13, p95: 0.1, max: 0.1 },
      { method: "POST", path: "/auth/token", count: 1, p95: 0.004, max: 0.004 },
      { method: "GET", path: "/api/missing", count: 1, p95: 0.002, max: 0.002 },
      { method: "GET", path: "/.env", count: 1, p95: 0.001, max: 0.001 },
    ]);
    expect(buildReport(entries, 0, { top: 2 }).topByCount.map((e) => e.path)).toEqual(["/api/hello", "/auth/token"]);
  });

  it("lists the addresses closed with 444 and what they asked for", () => {
    expect(r.closed444).toEqual([
      {
        client: "203.0.113.9",
        count: 3,
        requests: [
          { host: SITE, path: "/wp-login.php", count: 2 },
          { host: SITE, path: "/xmlrpc.php", count: 1 },
        ],
      },
      { client: "192.0.2.1", count: 1, requests: [{ host: "203.0.113.50", path: "/", count: 1 }] },
    ]);
  });

  it("lists the paths whose every request ended in 404 or 444", () => {
    // "/" is listed: here it was only asked of the unknown-Host server, and closed. /api/hello had a 404 but also 200s: not listed.
    expect(r.unanswered).toEqual([
      { path: "/wp-login.php", count: 2, s404: 0, s444: 2, clients: 1 },
      { path: "/", count: 1, s404: 0, s444: 1, clients: 1 },
      { path: "/.env", count: 1, s404: 1, s444: 0, clients: 1 },
      { path: "/api/missing", count: 1, s404: 1, s444: 0, clients: 1 },
      { path: "/xmlrpc.php", count: 1, s404: 0, s444: 1, clients: 1 },
    ]);
  });

  it("an empty window is a report of nothing", () => {
    const e = buildReport([], 3);
    expect(e).toMatchObject({ total: 0, from: null, to: null, rate4xx: 0, rate5xx: 0, perMinute: [], closed444: [], unanswered: [] });
    expect(formatReport(e, "x")).toBe("Access log: x\nNo requests in the window (3 lines skipped: not JSON access-log lines).\n");
  });
});

describe("formatReport", () => {
  it("prints every part with the figures", () => {
    const { entries, skipped } = parseLog(LOG);
    const text = formatReport(buildReport(entries, skipped), "test.log");
    expect(text).toContain("Window: 2026-11-29T17:00:00.000Z .. 2026-11-29T17:02:03.000Z UTC");
    expect(text).toContain("Requests: 26  2xx 14  3xx 1  4xx 9  5xx 2  (429 rate-limited 2, 444 closed 4)");
    expect(text).toContain("4xx rate: 34.6%   5xx rate: 7.7%");
    expect(text).toContain("Skipped 2 lines");
    expect(text).toContain(
      [
        "Per minute (UTC)",
        "  minute             total  2xx  3xx  4xx  5xx  429  444",
        "  2026-11-29T17:00Z     13   13    0    0    0    0    0",
        "  2026-11-29T17:01Z      9    0    0    9    0    2    4",
        "  2026-11-29T17:02Z      4    1    1    0    2    0    0",
      ].join("\n"),
    );
    expect(text).toContain("        14    1  GET /api/hello\n");
    expect(text).toContain("  1.200  1.200         2  GET /api/slow\n");
    expect(text).toContain("  203.0.113.9  3\n         2  api.example.com /wp-login.php\n         1  api.example.com /xmlrpc.php\n");
    expect(text).toContain("  192.0.2.1  1\n         1  203.0.113.50 /\n");
    expect(text).toContain("         2    0    2        1  /wp-login.php\n");
  });
});

describe("lib/logsource.ts", () => {
  const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n-----END OPENSSH PRIVATE KEY-----\n";
  const HOSTKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@vps";
  const cfg = (extra: Record<string, string>) =>
    Object.fromEntries(
      Object.entries({ domain: SITE, email: "ops@example.com", ...extra }).map(([k, v]) => [
        `fastapi-edge:${k}`,
        { value: v, secret: false },
      ]),
    );

  it("an existing host: config address, port, user (root by default), the secret key and the pinned host key", () => {
    const t = stackSshTarget(
      {
        ...cfg({ hostMode: "existing", hostAddress: "203.0.113.4", hostPort: "2222", hostKey: HOSTKEY }),
        "fastapi-edge:hostPrivateKey": { value: KEY, secret: true },
        "aws:region": { value: "eu-west-1" },
      },
      null,
    );
    expect(t).toEqual({ host: "203.0.113.4", port: 2222, user: "root", privateKey: KEY, hostKey: HOSTKEY });
    expect(knownHostsLine(t)).toBe("[203.0.113.4]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n");
    expect(knownHostsLine({ ...t, port: 22 })).toMatch(/^203\.0\.113\.4 ssh-ed25519 /);
  });

  it("an EC2 host: sshCommand and sshPrivateKey from the outputs", () => {
    const t = stackSshTarget(cfg({}), { sshCommand: "ssh admin@198.51.100.20", sshPrivateKey: KEY, publicIp: "198.51.100.20" });
    expect(t).toEqual({ host: "198.51.100.20", port: 22, user: "admin", privateKey: KEY });
    // A key of the user's own (sshPublicKey): no private key in the outputs, ssh uses the agent.
    expect(stackSshTarget(cfg({}), { sshCommand: "ssh admin@198.51.100.20" })).toEqual({ host: "198.51.100.20", port: 22, user: "admin" });
    expect(() => stackSshTarget(cfg({}), {})).toThrow(/output sshCommand must read "ssh USER@ADDRESS".*deployed/);
    expect(() => stackSshTarget(cfg({}), { sshCommand: "ssh admin@1.2.3.4; rm -rf /" })).toThrow(/sshCommand/);
    expect(() => stackSshTarget(cfg({}), null)).toThrow(/outputs are needed/);
  });

  it("refuses ALB stacks and bad config, naming the key", () => {
    expect(() => stackSshTarget(cfg({ frontend: "alb" }), null)).toThrow(/frontend is alb: the ALB writes no nginx access log/);
    expect(() => stackSshTarget(cfg({ hostMode: "existing", hostAddress: "a b" }), null)).toThrow(/fastapi-edge:hostAddress/);
    expect(() => stackSshTarget(cfg({ hostMode: "existing", hostAddress: "1.2.3.4" }), null)).not.toThrow();
    expect(() =>
      stackSshTarget(
        { ...cfg({ hostMode: "existing", hostAddress: "1.2.3.4" }), "fastapi-edge:hostPrivateKey": { value: "hunter2" } },
        null,
      ),
    ).toThrow(/fastapi-edge:hostPrivateKey must be a PEM or OpenSSH private key/);
  });

  it("validates flags, naming each", () => {
    const names = { host: "--ssh-host", port: "--ssh-port", user: "--ssh-user", hostKey: "--ssh-host-key", key: "--ssh-key" };
    expect(() => validateTarget({ host: "-oProxyCommand=x", port: 22, user: "root" }, names)).toThrow(/--ssh-host must be/);
    expect(() => validateTarget({ host: "h.test", port: 0, user: "root" }, names)).toThrow(
      /--ssh-port must be a whole number from 1 to 65535/,
    );
    expect(() => validateTarget({ host: "h.test", port: 22, user: "Root;x" }, names)).toThrow(/--ssh-user must be a Unix user name/);
    expect(() => validateTarget({ host: "h.test", port: 22, user: "root", hostKey: "AAAA" }, names)).toThrow(/--ssh-host-key must be/);
    expect(() => validateLogPath("var/log/x")).toThrow(/--log must be an absolute path/);
    expect(() => validateLogPath("/var/log/../../etc/shadow")).toThrow(/--log must be an absolute path/);
    expect(() => validateLogPath("/var/log/x'; rm -rf /")).toThrow(/--log/);
  });

  it("ssh arguments: the key, the pinned known_hosts, batch mode; the remote command as root", () => {
    const t = { host: "h.test", port: 2222, user: "admin", hostKey: HOSTKEY };
    const cmd = remoteWindowCommand("admin", "/var/log/nginx/fastapi-edge.access.log", 3600);
    expect(cmd).toBe("sudo -n bash -s -- '/var/log/nginx/fastapi-edge.access.log' '3600'");
    expect(remoteWindowCommand("root", "/l", null)).toBe("bash -s -- '/l'");
    expect(sshArgs(t, { keyFile: "/tmp/k", knownHosts: "/tmp/kh" }, cmd)).toEqual([
      ...["-p", "2222", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR"],
      ...["-i", "/tmp/k", "-o", "IdentitiesOnly=yes"],
      ...["-o", "UserKnownHostsFile=/tmp/kh", "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null"],
      ...["--", "admin@h.test", cmd],
    ]);
    const { hostKey: _, ...unpinned } = t;
    expect(sshArgs(unpinned, {}, cmd).join(" ")).toContain("-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -- admin@h.test");
    expect(() => sshArgs(t, {}, cmd)).toThrow(/known_hosts/);
  });

  it("goaccess reads our keys", () => {
    const a = goaccessArgs("/in.log", "/out.html", "t");
    expect(a).toContain(
      '--log-format={"time":"%x","client":"%h","host":"%v","method":"%m","path":"%U","protocol":"%H","status":"%s","bytes":"%b","request_time":"%T","user_agent":"%u"}',
    );
    expect(a).toContain("--datetime-format=%Y-%m-%dT%H:%M:%S%z");
    expect(a).toContain("--date-spec=min");
    expect([dateSpec(3 * 3600), dateSpec(3 * 3600 + 1), dateSpec(3 * 86400), dateSpec(3 * 86400 + 1)]).toEqual(["min", "hr", "hr", "date"]);
  });
});

describe("files/scripts/log-window.sh (real bash, awk, tail)", () => {
  const SCRIPT = path.resolve(__dirname, "../../files/scripts/log-window.sh");
  const now = Math.floor(Date.now() / 1000);
  const at = (ago: number, p: string): string => line({ t: now - T0 - ago, path: p, status: 200 });
  const run = (args: string[]) => spawnSync("bash", [SCRIPT, ...args], { encoding: "utf8" });

  it("prints the lines of the window, from LOG.1 too when the window reaches back past the rotation", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "fe-logwin-"));
    const log = path.join(dir, "access.log");
    writeFileSync(`${log}.1`, [at(7200, "/rotated-old"), at(600, "/rotated-recent")].join("\n") + "\n");
    writeFileSync(log, ["old text format line", at(3000, "/current-old"), at(60, "/current-recent")].join("\n") + "\n");
    const paths = (out: string) => parseLog(out).entries.map((e) => e.path);
    expect(paths(run([log, "1800"]).stdout)).toEqual(["/rotated-recent", "/current-recent"]);
    expect(paths(run([log, "120"]).stdout)).toEqual(["/current-recent"]);
    expect(paths(run([log, "86400"]).stdout)).toEqual(["/rotated-old", "/rotated-recent", "/current-old", "/current-recent"]);
    // No window: the current file as it is (the old line included; the report skips it).
    const all = run([log]);
    expect(all.stdout.split("\n")[0]).toBe("old text format line");
    expect(parseLog(all.stdout).skipped).toBe(1);
    // The previous file's last line is older than the window: it is not read at all.
    writeFileSync(`${log}.1`, at(7200, "/rotated-old") + "\n");
    expect(paths(run([log, "1800"]).stdout)).toEqual(["/current-recent"]);
    // A missing log prints nothing.
    expect(run([path.join(dir, "none.log"), "60"])).toMatchObject({ status: 0, stdout: "" });
  });

  it("refuses bad arguments with 64", () => {
    for (const args of [[], ["rel.log"], ["/x", "1h"], ["/x", "0"], ["/x", "1", "2"]]) expect(run(args).status, args.join(" ")).toBe(64);
  });
});
