// Live proof of the access log and `npm run logs`: real nginx running the
// rendered files in front of two real uvicorn processes (test/helpers/live-site.ts),
// a mix of traffic driven through it (normal requests, a slow endpoint, the
// rendered /auth/token rate limit's 429s, scanner paths and unknown Host
// names closed with 444 from their own loopback addresses, the app's 404s,
// plain-HTTP redirects, static files, and app errors: one process stopped,
// then both, so nginx retries and then serves the maintenance page's 503),
// then the report:
//   - from the log file (--file), figures asserted exactly against what the
//     clients saw;
//   - over SSH through a real sshd on 127.0.0.1 (temp host key pinned with
//     --ssh-host-key, temp client key), the code path a stack's connection
//     takes, with --since; the same figures; a wrong pinned key is refused;
//   - as HTML from GoAccess, opened in headless Chromium, screenshot kept as
//     test/artifacts/logreport.png;
//   - after a forced rotation by the real logrotate with Debian's own
//     /etc/logrotate.d/nginx (directory and signal adapted), reading across
//     the rotation (.1 plus the new file).
// Ports: 21401-21404 (site), 21422 (sshd).
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LogReport } from "../../lib/logreport";
import { artifactPath, startLiveSite, type LiveSite, type RequestOptions } from "../helpers/live-site";
import { getEngine, MIN } from "../e2e/engine";
import { pngStats } from "../helpers/png";
import { REPO_ROOT, run, sleep, startProcess, stopPid, waitForPort, type StartedProcess } from "../helpers/proc";

const PORTS = [21401, 21402, 21403, 21404];
const SSH_PORT = 21422;
const SCANNER = "127.0.0.2";
const STRANGER = "127.0.0.3";
const PROBER = "127.0.0.4";
const VISITOR = "127.0.0.5";

let site: LiveSite;
/** When the last request failed for want of an app process (nginx then keeps both out for upstreamFailTimeout). */
let lastFailure = 0;
let work: string;
/** Status -> count of what the clients saw (444: the connection closed with no response). */
const seen = new Map<number, number>();

type Report = LogReport & { source: string };

async function logs(
  args: string[],
  env?: NodeJS.ProcessEnv,
  cwd?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return run(path.join(REPO_ROOT, "node_modules/.bin/tsx"), [path.join(REPO_ROOT, "scripts/logs.ts"), ...args], {
    timeoutMs: 120_000,
    ...(env ? { env } : {}),
    ...(cwd ? { cwd } : {}),
  });
}

async function logsJson(args: string[], env?: NodeJS.ProcessEnv, cwd?: string): Promise<Report> {
  const r = await logs([...args, "--json"], env, cwd);
  if (r.code !== 0) throw new Error(`npm run logs ${args.join(" ")} exited ${r.code}:\n${r.stderr}`);
  return JSON.parse(r.stdout) as Report;
}

async function hit(scheme: "https" | "http", p: string, opts: RequestOptions = {}): Promise<number> {
  let status = 444;
  try {
    status = (await (scheme === "https" ? site.https(p, opts) : site.http(p, opts))).status;
  } catch (e) {
    // 444: nginx closes the connection without a response.
    if (!/socket hang up|ECONNRESET/.test((e as Error).message)) throw e;
  }
  seen.set(status, (seen.get(status) ?? 0) + 1);
  return status;
}

async function times(n: number, f: () => Promise<number>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await f());
  return out;
}

beforeAll(async () => {
  work = mkdtempSync(path.join(tmpdir(), "fe-logreport-"));
  site = await startLiveSite({ ports: PORTS, appProcesses: 2 });

  expect(await times(20, () => hit("https", "/api/hello?name=n"))).toEqual(Array(20).fill(200));
  expect(await times(4, () => hit("https", "/api/slow?ms=300"))).toEqual(Array(4).fill(200));
  // (From another address: with Debian 12's uvicorn 0.17, a client whose address is itself a
  // trusted proxy address (127.0.0.1) reaches the app with no client address, and / fails on it.)
  expect(await times(3, () => hit("https", "/", { localAddress: VISITOR }))).toEqual(Array(3).fill(200));
  // The rendered limit: /auth/token 5r/m, burst 10, nodelay: 11 pass, then 429.
  const token = await times(15, () =>
    hit("https", "/auth/token", { method: "POST", body: "username=a", headers: { "Content-Type": "application/x-www-form-urlencoded" } }),
  );
  expect(token).toEqual([...Array(11).fill(200), ...Array(4).fill(429)]);
  // A scanner: the rendered scanner paths, closed with 444.
  for (const p of ["/wp-login.php", "/wp-login.php", "/xmlrpc.php", "/wp-admin/setup-config.php"])
    expect(await hit("https", p, { localAddress: SCANNER })).toBe(444);
  // Unknown Host names: port 80's catch-all, and the TLS catch-all behind the site's SNI.
  expect(await hit("http", "/", { host: "unknown.example.test", localAddress: STRANGER })).toBe(444);
  expect(await hit("https", "/admin", { host: "other.example.test", localAddress: STRANGER })).toBe(444);
  // Paths the app does not have.
  expect(await times(2, () => hit("https", "/api/missing"))).toEqual([404, 404]);
  expect(await hit("https", "/.env", { localAddress: PROBER })).toBe(404);
  // Plain HTTP: redirected. Static files: served, not logged.
  expect(await times(2, () => hit("http", "/api/hello"))).toEqual([301, 301]);
  expect(await times(2, () => hit("https", "/static/style.css"))).toEqual([200, 200]);
  // App errors: one process down (nginx retries the other), then both (maintenance page, 503).
  await site.stopApp(0);
  expect(await times(2, () => hit("https", "/api/hello"))).toEqual([200, 200]);
  await site.stopApp();
  expect(await times(3, () => hit("https", "/api/hello"))).toEqual([503, 503, 503]);
  lastFailure = Date.now();
  await sleep(300);
  // The log as the traffic left it, for the HTML report (the SSH tests rotate the live one).
  writeFileSync(path.join(work, "snapshot.log"), readFileSync(site.accessLog));
});

afterAll(async () => {
  await site?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** What the report must say about the traffic above (static files are not logged: 2 of the 200s). */
function expectFigures(r: Report, extra = 0): void {
  expect(seen.get(200)).toBe(42 + extra);
  expect(r.skipped).toBe(0);
  expect(r.total).toBe(58 + extra);
  expect(r.mix).toEqual({ "1xx": 0, "2xx": 40 + extra, "3xx": 2, "4xx": 13, "5xx": 3 });
  expect(r.mix["4xx"]).toBe((seen.get(429) ?? 0) + (seen.get(444) ?? 0) + (seen.get(404) ?? 0));
  expect([r.s429, r.s444]).toEqual([4, 6]);
  expect(r.rate4xx).toBe(Math.round((13 / (58 + extra)) * 10_000) / 10_000);
  expect(r.rate5xx).toBe(Math.round((3 / (58 + extra)) * 10_000) / 10_000);
  expect(r.perMinute.reduce((n, m) => n + m.total, 0)).toBe(58 + extra);
  expect(r.perMinute.reduce((n, m) => n + m.s444, 0)).toBe(6);
  expect(r.topByCount).toEqual([
    { method: "GET", path: "/api/hello", count: 27 + extra, errors5xx: 3 },
    { method: "POST", path: "/auth/token", count: 15, errors5xx: 0 },
    { method: "GET", path: "/api/slow", count: 4, errors5xx: 0 },
    { method: "GET", path: "/", count: 3, errors5xx: 0 },
    { method: "GET", path: "/api/missing", count: 2, errors5xx: 0 },
    { method: "GET", path: "/.env", count: 1, errors5xx: 0 },
  ]);
  // The slow endpoint sleeps 300 ms: first by p95 upstream time.
  expect(r.topByP95[0]).toMatchObject({ method: "GET", path: "/api/slow", count: 4 });
  expect(r.topByP95[0]!.p95).toBeGreaterThanOrEqual(0.3);
  expect(r.topByP95[0]!.p95).toBeLessThan(2);
  // /api/hello: 20 + 2 + 3 (503s reach both processes) + extra reached the app; the 301s did not.
  expect(r.topByP95.find((e) => e.path === "/api/hello")!.count).toBe(25 + extra);
  expect(r.topByP95.find((e) => e.path === "/auth/token")!.count).toBe(11);
  expect(r.closed444).toEqual([
    {
      client: SCANNER,
      count: 4,
      requests: [
        { host: site.domain, path: "/wp-login.php", count: 2 },
        { host: site.domain, path: "/wp-admin/setup-config.php", count: 1 },
        { host: site.domain, path: "/xmlrpc.php", count: 1 },
      ],
    },
    {
      client: STRANGER,
      count: 2,
      requests: [
        { host: "other.example.test", path: "/admin", count: 1 },
        { host: "unknown.example.test", path: "/", count: 1 },
      ],
    },
  ]);
  expect(r.unanswered).toEqual([
    { path: "/api/missing", count: 2, s404: 2, s444: 0, clients: 1 },
    { path: "/wp-login.php", count: 2, s404: 0, s444: 2, clients: 1 },
    { path: "/.env", count: 1, s404: 1, s444: 0, clients: 1 },
    { path: "/admin", count: 1, s404: 0, s444: 1, clients: 1 },
    { path: "/wp-admin/setup-config.php", count: 1, s404: 0, s444: 1, clients: 1 },
    { path: "/xmlrpc.php", count: 1, s404: 0, s444: 1, clients: 1 },
  ]);
}

describe("the access log nginx writes", () => {
  it("is one JSON object per request: no static files, no query strings, 444s included, retries as lists", () => {
    const lines = readFileSync(site.accessLog, "utf8").trimEnd().split("\n");
    expect(lines).toHaveLength(58);
    const objs = lines.map((l) => JSON.parse(l) as Record<string, string | number>);
    expect(objs.some((o) => String(o.path).startsWith("/static/"))).toBe(false);
    expect(lines.some((l) => l.includes("name=n") || l.includes("ms=300"))).toBe(false);
    expect(objs.filter((o) => o.query === "?")).toHaveLength(24);
    expect(objs.filter((o) => o.server === "_").map((o) => [o.client, o.host, o.status])).toEqual([
      [STRANGER, "unknown.example.test", 444],
      [STRANGER, "other.example.test", 444],
    ]);
    // Both processes down: two attempts, both failed, the maintenance page answered 503.
    const down = objs.filter((o) => o.status === 503);
    expect(down).toHaveLength(3);
    // Each attempt failed (502); once nginx has marked a process failed (max_fails) it
    // logs the upstream's name for the attempt it could not make ("no live upstreams").
    const names = [`127.0.0.1:${PORTS[2]}`, `127.0.0.1:${PORTS[3]}`, "fastapi_edge_app"];
    for (const o of down) {
      const statuses = String(o.upstream_status).split(", ");
      expect(statuses.length).toBeGreaterThanOrEqual(1);
      expect(statuses.every((x) => x === "502")).toBe(true);
      const addrs = String(o.upstream_addr).split(", ");
      expect(addrs).toHaveLength(statuses.length);
      expect(
        addrs.every((a) => names.includes(a)),
        String(o.upstream_addr),
      ).toBe(true);
    }
    const fmt = {
      msec: "number",
      status: "number",
      bytes: "number",
      request_time: "number",
      upstream_time: "string",
      user_agent: "string",
    };
    for (const o of objs) for (const [k, t] of Object.entries(fmt)) expect(typeof o[k], `${k} in ${JSON.stringify(o)}`).toBe(t);
  });
});

describe("npm run logs", () => {
  it("--file: the report's figures are exactly the traffic driven", async () => {
    const r = await logsJson(["--file", site.accessLog]);
    expect(r.source).toBe(site.accessLog);
    expectFigures(r);
    // The text form says the same.
    const text = await logs(["--file", site.accessLog]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain("Requests: 58  2xx 40  3xx 2  4xx 13  5xx 3  (429 rate-limited 4, 444 closed 6)");
    expect(text.stdout).toContain(`  ${SCANNER}  4\n         2  ${site.domain} /wp-login.php\n`);
    writeFileSync(artifactPath("logreport.txt"), text.stdout);
  });

  it("refuses bad flags with the flag's name and exit 2", async () => {
    const cases: [string[], RegExp][] = [
      [["--since", "1w", "--file", "x"], /--since must be a duration such as 90s, 30m, 1h or 7d/],
      [["--file", "x", "--ssh-host", "h"], /exactly one of --stack, --file, --ssh-host/],
      [["--ssh-host=-oProxyCommand=touch /tmp/x"], /--ssh-host must be an IPv4 address or DNS name/],
      [["--ssh-host", "h.test", "--log", "/var/log/x;id"], /--log must be an absolute path/],
      [["--stack", "a b"], /--stack must be a stack name/],
      [["--file", "x", "--top", "0"], /--top must be a whole number/],
    ];
    for (const [args, msg] of cases) {
      const r = await logs(args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr, args.join(" ")).toMatch(msg);
    }
  });
});

describe("over SSH (a real sshd on 127.0.0.1)", () => {
  let sshd: StartedProcess | null = null;
  let keyFile = "";
  let hostKeyLine = "";
  const user = userInfo().username;

  beforeAll(async () => {
    // --stack runs the real pulumi CLI: on a fresh machine, provide it first (a build of
    // several minutes, cached after), so the test's own timeout measures only the test.
    await getEngine();
    const dir = path.join(work, "sshd");
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const keygen = (file: string) => {
      const r = spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "fastapi-edge-test", "-f", file]);
      if (r.status !== 0) throw new Error(`ssh-keygen: ${r.stderr}`);
    };
    keygen(path.join(dir, "host_key"));
    keygen(path.join(dir, "client_key"));
    keyFile = path.join(dir, "client_key");
    hostKeyLine = readFileSync(path.join(dir, "host_key.pub"), "utf8").trim();
    writeFileSync(path.join(dir, "authorized_keys"), readFileSync(`${keyFile}.pub`), { mode: 0o600 });
    const conf = path.join(dir, "sshd_config");
    writeFileSync(
      conf,
      [
        `Port ${SSH_PORT}`,
        "ListenAddress 127.0.0.1",
        `HostKey ${path.join(dir, "host_key")}`,
        `AuthorizedKeysFile ${path.join(dir, "authorized_keys")}`,
        `PidFile ${path.join(dir, "sshd.pid")}`,
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "LogLevel VERBOSE",
        "",
      ].join("\n"),
    );
    // sshd refuses to start without its privilege separation directory (systemd makes it for the service).
    if (!existsSync("/run/sshd")) mkdirSync("/run/sshd", { mode: 0o755 });
    sshd = startProcess("/usr/sbin/sshd", ["-D", "-e", "-f", conf]);
    await waitForPort(SSH_PORT, 15_000, "127.0.0.1", sshd);
  }, 60 * MIN);

  afterAll(async () => {
    if (sshd) await stopPid(sshd.pid);
  });

  const sshFlags = (): string[] => [
    "--ssh-host",
    "127.0.0.1",
    "--ssh-port",
    String(SSH_PORT),
    "--ssh-user",
    user,
    "--ssh-key",
    keyFile,
    "--ssh-host-key",
    hostKeyLine,
    "--log",
    site.accessLog,
  ];

  it("reads the window through sshd with the host key pinned: the same figures", async () => {
    const r = await logsJson([...sshFlags(), "--since", "1h"]);
    expect(r.source).toBe(`${user}@127.0.0.1:${site.accessLog}`);
    expectFigures(r);
    // A window that ends before the traffic: nothing.
    const none = await logsJson([...sshFlags(), "--since", "1s"]);
    expect(none.total).toBe(0);
    // sshd saw the session: the same code path as --stack.
    expect(sshd!.output()).toMatch(new RegExp(`Accepted publickey for ${user} from 127\\.0\\.0\\.1`));
  });

  it("--stack: the stack's own connection, read by the real pulumi CLI (config, secret key, pinned host key)", async () => {
    // A throwaway stack in a throwaway backend, in a copy of the project (Pulumi.yaml):
    // the command runs pulumi in the current directory, as the e2e scenario's project copy.
    const stack = "logs-live-test";
    const project = path.join(work, "project");
    mkdirSync(project, { recursive: true });
    copyFileSync(path.join(REPO_ROOT, "Pulumi.yaml"), path.join(project, "Pulumi.yaml"));
    const stackFile = path.join(project, `Pulumi.${stack}.yaml`);
    const env = { ...process.env, FASTAPI_EDGE_BACKEND: `file://${path.join(work, "state")}`, PULUMI_CONFIG_PASSPHRASE: "" };
    mkdirSync(path.join(work, "state"), { recursive: true });
    const settings: [string, string][] = [
      ["domain", site.domain],
      ["email", "ops@fastapi-edge.test"],
      ["hostMode", "existing"],
      ["hostAddress", "127.0.0.1"],
      ["hostPort", String(SSH_PORT)],
      ["hostUser", user],
      ["hostKey", hostKeyLine],
    ];
    const setup = [
      `pulumi stack init ${stack} --non-interactive`,
      ...settings.map(([k, v]) => `pulumi config set --stack ${stack} ${k} '${v}'`),
      `pulumi config set --stack ${stack} --secret hostPrivateKey < '${keyFile}'`,
    ].join(" && ");
    const init = await run("bash", ["-c", `. '${REPO_ROOT}/scripts/pulumi-env.sh' >/dev/null && ${setup}`], {
      env,
      cwd: project,
      timeoutMs: 300_000,
    });
    expect(init.code, init.stderr).toBe(0);
    // The key is stored as a secret: encrypted in the stack file.
    expect(readFileSync(stackFile, "utf8")).toContain("hostPrivateKey:\n    secure: ");
    expect(readFileSync(stackFile, "utf8")).not.toContain("PRIVATE KEY");
    const r = await logsJson(["--stack", stack, "--log", site.accessLog, "--since", "1h"], env, project);
    expect(r.source).toBe(`stack ${stack}: ${user}@127.0.0.1:${site.accessLog}`);
    expectFigures(r);
  });

  it("refuses a host whose key is not the pinned one", async () => {
    const other = path.join(work, "other_host_key");
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", other]);
    const flags = sshFlags();
    flags[flags.indexOf("--ssh-host-key") + 1] = readFileSync(`${other}.pub`, "utf8").trim();
    const r = await logs(flags);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Host key verification failed/);
  });

  it("after a forced logrotate (Debian's /etc/logrotate.d/nginx), reads the rotated file and the new one", async () => {
    const debianConf = readFileSync("/etc/logrotate.d/nginx", "utf8");
    // Debian's file rotates every *.log in /var/log/nginx: ours is one of them.
    expect(debianConf).toMatch(/^\/var\/log\/nginx\/\*\.log \{/m);
    expect(path.basename(site.accessLog)).toMatch(/\.log$/);
    const logDir = path.dirname(site.accessLog);
    // The same file, pointed at the test's log dir, and told to signal this nginx rather than the system's.
    const conf = debianConf
      .replace("/var/log/nginx/*.log", `${logDir}/*.log`)
      .replace(/invoke-rc\.d nginx rotate[^\n]*/, `kill -USR1 ${site.nginxPid()}`);
    expect(conf).toContain(`kill -USR1 ${site.nginxPid()}`);
    const confFile = path.join(work, "logrotate.conf");
    writeFileSync(confFile, conf);
    const state = path.join(work, "logrotate.state");
    const before = readFileSync(site.accessLog, "utf8");
    const rot = await run("logrotate", ["-v", "-f", "-s", state, confFile], { timeoutMs: 60_000 });
    expect(rot.code, rot.stderr).toBe(0);
    // delaycompress: the first rotation is .1, uncompressed; a new empty file, 0640 www-data:adm.
    expect(readFileSync(`${site.accessLog}.1`, "utf8")).toBe(before);
    const st = statSync(site.accessLog);
    expect(st.size).toBe(0);
    expect((st.mode & 0o777).toString(8)).toBe("640");
    // nginx reopened its log (USR1): a new request lands in the new file.
    await site.startApp();
    // Both processes failed at lastFailure: nginx keeps them out for upstreamFailTimeout (10 s).
    await sleep(Math.max(0, lastFailure + 11_000 - Date.now()));
    expect(await hit("https", "/api/hello")).toBe(200);
    await sleep(300);
    const after = readFileSync(site.accessLog, "utf8").trim().split("\n");
    expect(after).toHaveLength(1);
    expect(JSON.parse(after[0]!)).toMatchObject({ path: "/api/hello", status: 200 });
    // Across the rotation: .1 (its last line is in the window) and the new file.
    const r = await logsJson([...sshFlags(), "--since", "1h"]);
    expectFigures(r, 1);
    // Without a window: the current file only.
    expect((await logsJson(sshFlags())).total).toBe(1);
  });
});

describe("--html (GoAccess), opened in headless Chromium", () => {
  it("writes a report with the same totals whose screenshot is not blank", async () => {
    const html = artifactPath("logreport.html");
    const png = artifactPath("logreport.png");
    rmSync(html, { force: true });
    rmSync(png, { force: true });
    const r = await logs(["--file", path.join(work, "snapshot.log"), "--html", html]);
    expect(r.code, r.stderr).toBe(0);
    const page = readFileSync(html, "utf8");
    // GoAccess embeds its figures as JSON: every one of our lines parsed, none failed.
    expect(/"total_requests":\s*([0-9]+)/.exec(page)?.[1]).toBe("58");
    expect(/"valid_requests":\s*([0-9]+)/.exec(page)?.[1]).toBe("58");
    expect(/"failed_requests":\s*([0-9]+)/.exec(page)?.[1]).toBe("0");
    expect(page).toContain("fastapi-edge access log: ");
    const profile = path.join(work, "chromium");
    const shot = await run(
      "chromium",
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        `--user-data-dir=${profile}`,
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
        `--screenshot=${png}`,
        "--window-size=1280,2000",
        `file://${html}`,
      ],
      { timeoutMs: 120_000 },
    );
    expect(shot.code, shot.stderr).toBe(0);
    const stats = pngStats(readFileSync(png));
    expect([stats.width, stats.height]).toEqual([1280, 2000]);
    // A blank page is one colour and no dark pixel; the dashboard has charts, text and panels.
    expect(stats.colours).toBeGreaterThan(50);
    expect(stats.nonWhite).toBeGreaterThan(100_000);
    chmodSync(png, 0o644);
  });
});
