// The real path end to end: the real Pulumi engine (CLI, Node.js language host, command
// provider 1.2.1 from scripts/get-pulumi.sh) runs this program against a blank Debian 13
// guest under QEMU, over real SSH, with a real ACME server (Pebble). Every step is a real
// `pulumi` command on a local file backend; nothing here runs a host step by itself.
//
//  1. fresh up   2. up --expect-no-changes runs nothing on the host   3. preview --diff shows
//  the nginx lines, up under load   4. a new app release under load, still serving a minute on
//  5. a config nginx -t rejects   6. an interrupted up and its recovery   7. an app with its own
//  requirements.txt, from a wheelhouse, in a virtualenv per release   8. a requirement pip cannot
//  satisfy   9. rollback to the kept release   10. the policy pack   11. certbot renew --dry-run,
//  destroy, recreate
import { ChildProcess, spawnSync } from "node:child_process";
import { appendFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testWheelhouse } from "../helpers/wheels";
import {
  copyProject,
  Engine,
  engine,
  getEngine,
  guestStack,
  killGroup,
  MIN,
  parseEnv,
  REPO,
  Run,
  sh,
  startWrk as startWrkOn,
  stopWrk as stopWrkOn,
  touched,
  WrkFigures,
  WrkLoad,
} from "./engine";

const ART = path.join(REPO, "test/artifacts");
const LOG = path.join(ART, "e2e.log");
const DOMAIN = "e2e.fastapi-edge.test";
const STACK = "e2e";

type Env = Record<string, string>;

function log(name: string, text: string): void {
  appendFileSync(LOG, `\n===== ${new Date().toISOString()} ${name}\n${text}\n`);
}

/** A harness script's KEY=VALUE output (progress goes to the log). */
async function harness(script: string, args: string[], timeoutMs: number): Promise<Env> {
  const r = await sh(path.join(REPO, "test/e2e", script), args, { timeoutMs, logFile: LOG });
  if (r.code !== 0) throw new Error(`${script} ${args.join(" ")} failed:\n${r.out}`);
  return parseEnv(r.out);
}

let work = "";
let vps: Env = {};
let pebble: Env = {};
let pebbleRoot = "";
let sshOpts: string[] = [];
let eng: Engine;
const timings: Record<string, number[]> = {};
const background: ChildProcess[] = [];

async function timed(name: string, r: Promise<Run>): Promise<Run> {
  const res = await r;
  (timings[name] ??= []).push(res.seconds);
  return res;
}

function guest(command: string, input?: string): Promise<Run> {
  return sh("ssh", [...sshOpts, command], { logFile: LOG, ...(input !== undefined ? { input } : {}) });
}

/** `pulumi up`; the run must succeed. */
async function up(name: string, extra: string[] = []): Promise<Run> {
  const r = await timed(name, eng.pulumi(["up", "--yes", "--skip-preview", ...extra], { timeoutMs: 40 * MIN }));
  expect(r.code, r.out).toBe(0);
  return r;
}

async function configRm(key: string): Promise<void> {
  const r = await eng.pulumi(["config", "rm", key]);
  expect(r.code, r.out).toBe(0);
}

async function config(key: string, value: string, secret = false): Promise<void> {
  const args = secret ? ["config", "set", "--secret", key] : ["config", "set", key, value];
  const r = await eng.pulumi(args, secret ? { input: value } : {});
  expect(r.code, r.out).toBe(0);
}

/** The app-deploy step's full stdout, as the state holds it (the progress display shows only a line at a time). */
async function deployStdout(): Promise<string> {
  // The state holds the guest's test key in plain text with --show-secrets: kept out of the e2e log.
  const r = await eng.pulumi(["stack", "export", "--show-secrets"], { logFile: path.join(work, "stack-export.log") });
  expect(r.code, r.out).toBe(0);
  const state = JSON.parse(r.out.slice(r.out.indexOf("{"))) as {
    deployment: { resources?: { urn: string; outputs?: { stdout?: string } }[] };
  };
  const res = (state.deployment.resources ?? []).filter((x) => x.urn.endsWith("::app-deploy"));
  expect(res).toHaveLength(1);
  return res[0]!.outputs?.stdout ?? "";
}

/** Successful SSH logins the guest's sshd has recorded so far. */
async function sshLogins(): Promise<number> {
  const r = await guest("journalctl -u ssh.service -o cat --no-pager | grep -c '^Accepted publickey' || true");
  return Number(r.out.trim());
}

// ------------------------------------------------------------ checks

function curl(args: string[]): Promise<Run> {
  return sh("curl", [
    "-sS",
    "--max-time",
    "30",
    "--resolve",
    `${DOMAIN}:${vps["VPS_HTTPS_PORT"]}:127.0.0.1`,
    "--resolve",
    `${DOMAIN}:${vps["VPS_HTTP_PORT"]}:127.0.0.1`,
    ...args,
  ]);
}

const httpsUrl = (p: string) => `https://${DOMAIN}:${vps["VPS_HTTPS_PORT"]}${p}`;

async function getJson<T>(p: string): Promise<T> {
  const r = await curl(["--cacert", pebbleRoot, "-w", "\n%{http_code}", httpsUrl(p)]);
  expect(r.out, r.out).toMatch(/\n200$/);
  return JSON.parse(r.out.slice(0, r.out.lastIndexOf("\n"))) as T;
}

async function assertServing(): Promise<void> {
  const who = await getJson<{ scheme: string; client: string }>("/api/whoami");
  expect(who.scheme).toBe("https");
  // The guest sees this machine as 10.0.2.2 (QEMU user networking): the app must too, not nginx's 127.0.0.1.
  expect(who.client).toBe("10.0.2.2");
}

/** wrk through the site for at most SECONDS (engine.ts startWrk: a new connection per request). */
function startWrk(seconds: number, urlPath = "/api/hello"): WrkLoad {
  const load = startWrkOn({ domain: DOMAIN, port: vps["VPS_HTTPS_PORT"]!, path: urlPath, seconds, hostsFile: path.join(work, "hosts") });
  background.push(load.proc);
  return load;
}

async function stopWrk(load: WrkLoad, name: string): Promise<WrkFigures> {
  const f = await stopWrkOn(load);
  log(`wrk ${name}`, `${JSON.stringify({ requests: f.requests, errors: f.errors, non2xx: f.non2xx })}\n${f.raw}`);
  return f;
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------ lifecycle

beforeAll(async () => {
  mkdirSync(ART, { recursive: true });
  writeFileSync(LOG, "");
  work = mkdtempSync(path.join(tmpdir(), "fe-e2e-"));
  const binDir = await getEngine(LOG);
  await harness("vps.sh", ["image"], 40 * MIN);
  await harness("vps.sh", ["stop"], MIN);
  vps = { ...(await harness("vps.sh", ["env"], MIN)), ...(await harness("vps.sh", ["start"], 10 * MIN)) };
  await harness("pebble.sh", ["stop"], MIN);
  pebble = await harness("pebble.sh", ["start"], 2 * MIN);
  pebbleRoot = pebble["PEBBLE_ROOTS"]!;

  const hostKey = readFileSync(vps["VPS_HOST_KEY_FILE"]!, "utf8").trim().split(" ").slice(0, 2).join(" ");
  writeFileSync(path.join(work, "known_hosts"), `[127.0.0.1]:${vps["VPS_SSH_PORT"]} ${hostKey}\n`);
  sshOpts = [
    "-p",
    vps["VPS_SSH_PORT"]!,
    "-i",
    vps["VPS_KEY"]!,
    "-o",
    `UserKnownHostsFile=${path.join(work, "known_hosts")}`,
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "BatchMode=yes",
    "root@127.0.0.1",
  ];

  copyProject(path.join(work, "project"));
  eng = engine(binDir, path.join(work, "project"), path.join(work, "state"), STACK, LOG);
  const init = await eng.pulumi(["stack", "init"]);
  expect(init.code, init.out).toBe(0);
  const settings = guestStack({ domain: DOMAIN, vps, hostKey, pebble });
  for (const [k, v] of Object.entries(settings)) await config(k, v);
  await config("hostPrivateKey", readFileSync(vps["VPS_KEY"]!, "utf8"), true);
}, 80 * MIN);

afterAll(() => {
  for (const p of background) if (p.exitCode === null) p.kill("SIGKILL");
  spawnSync(path.join(REPO, "test/e2e/pebble.sh"), ["stop"], { stdio: "ignore" });
  spawnSync(path.join(REPO, "test/e2e/vps.sh"), ["stop"], { stdio: "ignore" });
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const summary = Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, { runs: v, median: median(v) }]));
  writeFileSync(path.join(ART, "e2e-timings.json"), JSON.stringify(summary, null, 2));
  console.log("e2e timings (s):", JSON.stringify(summary));
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("end to end through the real Pulumi engine against a local VPS", () => {
  it(
    "1. fresh pulumi up from a blank guest: Pebble chain, HTTP redirect, real scheme and client",
    async () => {
      expect((await guest("command -v nginx || echo blank")).out).toContain("blank");
      const r = await up("fresh up");
      expect(r.out).not.toMatch(/^\s*warning:/m); // nothing every user would see on every run
      await assertServing();
      const issuer = await sh("sh", [
        "-c",
        `echo | openssl s_client -connect 127.0.0.1:${vps["VPS_HTTPS_PORT"]} -servername ${DOMAIN} 2>/dev/null | openssl x509 -noout -issuer`,
      ]);
      expect(issuer.out).toMatch(/Pebble/i);
      // The tested OS is the deployed one: Debian 13's own nginx, rendered for it (`http2 on;`).
      const os = await guest("cat /etc/debian_version; nginx -v 2>&1; grep -c 'http2 on;' /etc/nginx/fastapi-edge/site.conf || true");
      expect(os.out).toMatch(/^13\./);
      expect(os.out).toMatch(/nginx\/1\.26\./);
      expect(Number(os.out.trim().split("\n").pop())).toBeGreaterThan(0);
      const h2 = await curl(["--http2", "--cacert", pebbleRoot, "-o", "/dev/null", "-w", "%{http_version}", httpsUrl("/api/hello")]);
      expect(h2.out).toBe("2");
      const http = await curl([
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        `http://${DOMAIN}:${vps["VPS_HTTP_PORT"]}/api/hello`,
      ]);
      expect(http.out).toMatch(/^301 https:\/\/e2e\.fastapi-edge\.test\/api\/hello/);
      const home = await curl(["--cacert", pebbleRoot, httpsUrl("/")]);
      expect(home.out).toMatch(/<h1>fastapi-edge is serving<\/h1>/);
      expect((await guest("systemctl is-active fastapi-edge-app@8000 fastapi-edge-app@8001 nginx")).out.trim().split("\n")).toEqual([
        "active",
        "active",
        "active",
      ]);
    },
    40 * MIN,
  );

  it(
    "2. pulumi up --expect-no-changes passes and opens no session on the host",
    async () => {
      const before = await sshLogins();
      const r = await up("no-op up", ["--expect-no-changes"]);
      expect(r.out).not.toMatch(/^\s*warning:/m);
      const after = await sshLogins();
      expect(after - before, "SSH logins during the no-op up (the count itself is one)").toBe(1);
    },
    10 * MIN,
  );

  it(
    "3. preview --diff shows the changed nginx line; up applies it under load with 0 failed",
    async () => {
      const body = path.join(work, "body.bin");
      writeFileSync(body, Buffer.alloc(11 * 1024 * 1024, 97));
      const post = async () =>
        (await curl(["--cacert", pebbleRoot, "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", `@${body}`, httpsUrl("/api/hello")]))
          .out;
      expect(await post()).toBe("413");
      await config("clientMaxBodySize", "20m");
      const preview = await eng.pulumi(["preview", "--diff"]);
      expect(preview.code, preview.out).toBe(0);
      expect(preview.out).toMatch(/^\s*-\s*client_max_body_size 10m;\s*$/m);
      expect(preview.out).toMatch(/^\s*\+\s*client_max_body_size 20m;\s*$/m);
      expect(preview.out).toMatch(/~ 1 to update/);

      const load = startWrk(600);
      await pause(3000);
      const r = await up("change up");
      await pause(3000);
      const wrk = await stopWrk(load, "setting change");
      expect(touched(r.out, "updated")).toEqual(["nginx-site"]);
      expect(wrk.requests).toBeGreaterThan(50);
      expect(wrk.errors).toBe(0);
      expect(wrk.non2xx).toBe(0);
      expect(await post()).not.toBe("413");

      // The access log, read for you over the stack's own connection (npm run logs -- --stack).
      const logs = spawnSync(
        path.join(REPO, "node_modules/.bin/tsx"),
        [path.join(REPO, "scripts/logs.ts"), "--stack", STACK, "--since", "1h", "--json"],
        { cwd: eng.dir, env: eng.env, encoding: "utf8", timeout: 2 * MIN },
      );
      expect(logs.status, logs.stderr).toBe(0);
      const report = JSON.parse(logs.stdout) as {
        source: string;
        total: number;
        mix: Record<string, number>;
        topByCount: { path: string; count: number }[];
      };
      expect(report.source).toBe(`stack ${STACK}: root@127.0.0.1:/var/log/nginx/fastapi-edge.access.log`);
      const hello = report.topByCount.find((e) => e.path === "/api/hello");
      expect(hello?.count).toBeGreaterThanOrEqual(wrk.requests);
      expect(report.mix["4xx"]).toBeGreaterThanOrEqual(1); // the 413 above
      log("npm run logs --stack", `${report.total} requests in the last hour, /api/hello ${hello?.count}, 4xx ${report.mix["4xx"]}`);
    },
    20 * MIN,
  );

  it(
    "4. a new app release goes live under load, 0 failed, and is still serving a minute later",
    async () => {
      const marker = path.join(eng.dir, "files/app/static/release.txt");
      writeFileSync(marker, "release 2\n");
      await config("appVersion", "2");
      const load = startWrk(900);
      await pause(3000);
      const r = await up("app version up");
      await pause(3000);
      const wrk = await stopWrk(load, "app release");
      expect(touched(r.out, "replaced")).toEqual(["app-deploy", "app-upload"]);
      expect(r.out).toMatch(/app-remove\.sh: release [0-9a-f]{16} is not live/);
      expect(wrk.requests).toBeGreaterThan(50);
      expect(wrk.errors).toBe(0);
      expect(wrk.non2xx).toBe(0);
      for (let i = 0; i < 10; i++) expect((await getJson<{ version: string }>("/api/version")).version).toBe("2");
      expect((await curl(["--cacert", pebbleRoot, httpsUrl("/static/release.txt")])).out).toBe("release 2\n");
      await pause(60_000);
      await assertServing();
      expect((await getJson<{ version: string }>("/api/version")).version).toBe("2");
      expect(
        (await guest("systemctl is-active fastapi-edge-app@8000 fastapi-edge-app@8001; ls /opt/fastapi-edge/releases | wc -l")).out
          .trim()
          .split("\n"),
      ).toEqual(["active", "active", "2"]);
    },
    30 * MIN,
  );

  it(
    "5. a config nginx -t rejects: up fails with nginx's own line, the site keeps serving, the next good up succeeds",
    async () => {
      const snippet = path.join(eng.dir, "files/nginx/proxy-headers.conf");
      const good = readFileSync(snippet, "utf8");
      // A user's typo in a snippet this program pushes.
      writeFileSync(snippet, `${good}fastapi_edge_broken_directive on;\n`);
      const load = startWrk(600);
      const bad = await timed("rejected up", eng.pulumi(["up", "--yes", "--skip-preview"], { timeoutMs: 20 * MIN }));
      const wrk = await stopWrk(load, "rejected config");
      expect(bad.code, bad.out).not.toBe(0);
      expect(bad.out).toMatch(/unknown directive "fastapi_edge_broken_directive"/);
      expect(bad.out).toMatch(/candidate nginx config rejected by nginx -t; live config unchanged/);
      expect(wrk.errors + wrk.non2xx).toBe(0);
      await assertServing();
      expect((await guest("grep -rl fastapi_edge_broken_directive /etc/nginx || echo clean")).out).toContain("clean");
      writeFileSync(snippet, good);
      await up("fixed up");
      await assertServing();
    },
    20 * MIN,
  );

  it(
    "6. an interrupted pulumi up: the documented recovery gets back to a clean up, serving throughout",
    async () => {
      await config("appVersion", "3");
      const load = startWrk(900);
      await pause(2000);
      let pid: number | undefined;
      let killed = false;
      const interrupted = await eng.pulumi(["up", "--yes", "--skip-preview"], {
        timeoutMs: 20 * MIN,
        onSpawn: (p) => (pid = p),
        onData: (chunk) => {
          // Kill the whole process group (CLI, language host, provider) in the middle of the
          // rolling restart: the first process is restarting, the second still serves.
          if (!killed && /app-rollout: \[1\/2\] restarting/.test(chunk)) {
            killed = true;
            setTimeout(() => killGroup(pid), 2000);
          }
        },
      });
      expect(killed, interrupted.out).toBe(true);
      expect(interrupted.code).not.toBe(0);
      // A killed CLI leaves its lock in the backend: the next up refuses to start and says why.
      const locked = await eng.pulumi(["up", "--yes", "--skip-preview"]);
      expect(locked.code).not.toBe(0);
      expect(locked.out).toMatch(/the stack is currently locked by 1 lock\(s\)/);
      // The documented recovery (README, "An interrupted pulumi up"): remove the lock, run up again.
      const cancel = await eng.pulumi(["cancel", "--yes"]);
      expect(cancel.code, cancel.out).toBe(0);
      const recovered = await up("recovery up");
      const again = await up("after recovery", ["--expect-no-changes"]);
      const wrk = await stopWrk(load, "interrupted up");
      log("recovery", `${recovered.out}\n${again.out}`);
      expect(wrk.errors + wrk.non2xx).toBe(0);
      expect((await getJson<{ version: string }>("/api/version")).version).toBe("3");
    },
    30 * MIN,
  );

  it(
    "7. an app with its own requirements.txt: a virtualenv per release from a wheelhouse, live under load",
    async () => {
      // The sample app plus a package no distribution ships (edge-probe, from the wheelhouse)
      // and a uvicorn newer than Debian 13's; FastAPI stays the distribution's (system packages).
      const app = path.join(eng.dir, "apps/venv");
      cpSync(path.join(eng.dir, "files/app"), app, { recursive: true });
      writeFileSync(path.join(app, "requirements.txt"), "edge-probe==1.0.0\nuvicorn>=0.33\n");
      appendFileSync(
        path.join(app, "main.py"),
        [
          "",
          "import sys as _sys",
          "from importlib.metadata import version as _version",
          "import edge_probe",
          "",
          "",
          '@app.get("/api/probe")',
          "def probe() -> Dict[str, Any]:",
          '    return {**edge_probe.describe(), "uvicorn": _version("uvicorn"), "prefix": _sys.prefix}',
          "",
        ].join("\n"),
      );
      cpSync(testWheelhouse(), path.join(eng.dir, "wheels"), { recursive: true });
      await config("appSource", "apps/venv");
      await config("appWheelhouse", "wheels");
      await config("appVenvSystemPackages", "true");
      await config("appVersion", "4");
      const load = startWrk(900);
      await pause(3000);
      const r = await up("venv release up");
      const wrk = await stopWrk(load, "venv release");
      const out = await deployStdout();
      expect(out).toMatch(/building the virtualenv of release [0-9a-f]{16} from requirements\.txt/);
      expect(out).toMatch(/Successfully installed .*edge-probe-1\.0\.0/);
      expect(touched(r.out, "created")).toContain("app-wheels");
      expect(wrk.errors + wrk.non2xx).toBe(0);
      const probe = await getJson<{ package: string; version: string; uvicorn: string; prefix: string }>("/api/probe");
      const release = (await eng.pulumi(["stack", "output", "appRelease"])).out.trim();
      expect(probe).toEqual({
        package: "edge-probe",
        version: "1.0.0",
        uvicorn: "0.53.0",
        prefix: `/opt/fastapi-edge/releases/${release}/.venv`,
      });
      // uvicorn 0.53 from the virtualenv still trusts only nginx: the app sees the real client and scheme.
      await assertServing();
      expect((await guest("ls /var/tmp | grep -c fastapi-edge-wheels || true")).out.trim()).toBe("0");
      log("venv release", `probe ${JSON.stringify(probe)}; wrk ${JSON.stringify(wrk)}`);
    },
    30 * MIN,
  );

  it(
    "8. a requirement pip cannot satisfy: up fails with pip's message, the site keeps serving the live release",
    async () => {
      const reqs = path.join(eng.dir, "apps/venv/requirements.txt");
      const good = readFileSync(reqs, "utf8");
      writeFileSync(reqs, "edge-probe==9.9\nuvicorn>=0.33\n");
      const load = startWrk(900);
      const bad = await timed("unresolvable up", eng.pulumi(["up", "--yes", "--skip-preview"], { timeoutMs: 20 * MIN }));
      await pause(2000);
      const wrk = await stopWrk(load, "unresolvable requirement");
      expect(bad.code, bad.out).not.toBe(0);
      expect(bad.out).toMatch(/No matching distribution found for edge-probe==9\.9/);
      expect(bad.out).toMatch(/not made live; the live release keeps serving/);
      expect(wrk.errors + wrk.non2xx).toBe(0);
      expect((await getJson<{ version: string }>("/api/version")).version).toBe("4");
      expect((await getJson<{ version: string }>("/api/probe")).version).toBe("1.0.0");
      writeFileSync(reqs, good);
    },
    30 * MIN,
  );

  it(
    "9. rollback: back to the previous app and version, the kept release goes live again with nothing rebuilt, 0 failed",
    async () => {
      await config("appSource", "files/app");
      await configRm("appWheelhouse");
      await configRm("appVenvSystemPackages");
      await config("appVersion", "3");
      const load = startWrk(900);
      await pause(3000);
      const r = await up("rollback up");
      await pause(2000);
      const wrk = await stopWrk(load, "rollback");
      const out = await deployStdout();
      expect(out).toMatch(/app-deploy\.sh: release [0-9a-f]{16} already installed/);
      expect(out).not.toMatch(/building the virtualenv|Successfully installed/);
      expect(wrk.errors + wrk.non2xx).toBe(0);
      expect(wrk.requests).toBeGreaterThan(20);
      expect((await getJson<{ version: string }>("/api/version")).version).toBe("3");
      await assertServing();
      // Where the rollback's time goes: the host step itself (restarting two uvicorn
      // processes under emulation, each gated on its health route) against the whole up.
      const rollout = /app-rollout: done in (\d+)s/.exec(out)?.[1];
      log("rollback", `up ${r.seconds.toFixed(1)} s; rollout ${rollout ?? "?"} s; wrk ${JSON.stringify(wrk)}`);
    },
    30 * MIN,
  );

  it(
    "9b. appRuntime container: the app as an image built here, shipped over SSH, rolled in under load; then back to uvicorn",
    async () => {
      await config("appRuntime", "container");
      await config("appVersion", "5");
      try {
        const load = startWrk(1800);
        await pause(3000);
        const r = await up("container up");
        await pause(2000);
        const wrk = await stopWrk(load, "container release");
        expect(touched(r.out, "created")).toEqual(expect.arrayContaining(["app-deploy", "app-image-upload", "app-upload"]));
        expect(r.out).toMatch(/app-remove\.sh: release [0-9a-f]{16} is not live/);
        expect(wrk.errors + wrk.non2xx).toBe(0);
        expect((await getJson<{ version: string }>("/api/version")).version).toBe("5");
        await assertServing(); // the container sees nginx's client and scheme through podman's gateway
        const units = await guest(
          "systemctl is-active fastapi-edge-container@8000 fastapi-edge-container@8001; systemctl is-active fastapi-edge-app@8000 || true; ss -Htln '( sport = :8000 )' | awk '{print $4}'",
        );
        expect(units.out.trim().split("\n")).toEqual(["active", "active", "inactive", "127.0.0.1:8000"]);
        // the published port from the guest's own network address (what any other machine would reach): refused
        const outside = await guest('curl -sS -o /dev/null -m 5 "http://$(hostname -I | awk \'{print $1}\'):8000/healthz"; echo "rc=$?"');
        expect(outside.out).toMatch(/rc=7\b/);
        // the port guard is on (container.env): both ports in its set
        const guardSet = await guest("nft list set inet fastapi_edge_ports ports");
        expect(guardSet.out).toMatch(/elements = \{ 8000, 8001 \}/);
        log("container release", `up ${r.seconds.toFixed(1)} s; wrk ${JSON.stringify(wrk)}`);
      } finally {
        // back to the host runtime even when the container half failed, so steps 10 and 11 run on the usual stack
        await configRm("appRuntime");
        await config("appVersion", "3");
      }
      const back = startWrk(1800);
      await pause(3000);
      const b = await up("back to uvicorn up");
      await pause(2000);
      const wrkBack = await stopWrk(back, "back to uvicorn");
      expect(b.out).toMatch(/container-remove\.sh: removing the app containers/);
      expect(wrkBack.errors + wrkBack.non2xx).toBe(0);
      expect((await getJson<{ version: string }>("/api/version")).version).toBe("3");
      await assertServing();
      const left = await guest(
        "systemctl list-units --all --plain --no-legend 'fastapi-edge-container@*' | wc -l; podman image ls -q | wc -l",
      );
      expect(left.out.trim().split("\n")).toEqual(["0", "0"]);
    },
    60 * MIN,
  );

  it(
    "9c. appUpstream unix: nginx reaches uvicorn over /run/fastapi-edge sockets under real systemd; then back to tcp",
    async () => {
      // No load here: switching transports is not seamless (README), the app step moves first.
      await config("appUpstream", "unix");
      try {
        const r = await up("unix upstream up");
        expect(r.out).toMatch(/app-rollout: done in/);
        await assertServing(); // nginx's workers (www-data) reach the sockets; uvicorn believes X-Forwarded-* over them
        const st = await guest(
          "stat -c '%a %U' /run/fastapi-edge/app-8000.sock /run/fastapi-edge/app-8001.sock; " +
            "ss -Htln '( sport = :8000 or sport = :8001 )' | wc -l; " +
            "grep -c 'server unix:/run/fastapi-edge/app-800[01].sock' /etc/nginx/fastapi-edge/http.conf",
        );
        expect(st.out.trim().split("\n")).toEqual(["666 fastapi-edge", "666 fastapi-edge", "0", "2"]);
        // RuntimeDirectoryPreserve: stopping one instance leaves the directory, and the other's socket, in place.
        const kept = await guest(
          "systemctl stop fastapi-edge-app@8000 && test -S /run/fastapi-edge/app-8001.sock && echo kept; " +
            "curl -sS -m 10 --unix-socket /run/fastapi-edge/app-8001.sock http://localhost/healthz; echo; " +
            "systemctl start fastapi-edge-app@8000",
        );
        expect(kept.out).toMatch(/^kept$/m);
        expect(kept.out).toMatch(/"status":\s*"ok"/);
        const back8000 = await guest(
          "for i in $(seq 240); do curl -sf -m 2 --unix-socket /run/fastapi-edge/app-8000.sock http://localhost/healthz && exit 0; sleep 0.5; done; exit 1",
        );
        expect(back8000.code, back8000.out).toBe(0);
        log("unix upstream", `up ${r.seconds.toFixed(1)} s`);
      } finally {
        await configRm("appUpstream");
      }
      const b = await up("back to tcp up");
      expect(b.out).toMatch(/app-rollout: done in/);
      await assertServing();
      const tcp = await guest("ss -Htln '( sport = :8000 or sport = :8001 )' | awk '{print $4}' | sort");
      expect(tcp.out.trim().split("\n")).toEqual(["127.0.0.1:8000", "127.0.0.1:8001"]);
    },
    30 * MIN,
  );

  it(
    "10. the policy pack passes this stack and fails one that pushes a private key in plain text",
    async () => {
      const ok = await eng.pulumi(["preview", "--policy-pack", path.join(eng.dir, "policy")], { timeoutMs: 10 * MIN });
      expect(ok.code, ok.out).toBe(0);
      expect(ok.out).toMatch(/fastapi-edge-baseline/);
      // A CA bundle that also holds a private key: the program would push it in a command's stdin.
      const leaky = path.join(work, "ca-and-key.pem");
      const key = spawnSync("openssl", ["genpkey", "-algorithm", "ed25519"], { encoding: "utf8" }).stdout;
      writeFileSync(leaky, readFileSync(pebble["ACME_CA_BUNDLE"]!, "utf8") + key);
      const init = await eng.pulumi(["stack", "init", "--copy-config-from", STACK], { stack: "e2e-leaky" });
      expect(init.code, init.out).toBe(0);
      const bad = await eng.pulumi(
        ["preview", "--policy-pack", path.join(eng.dir, "policy"), "--config", `fastapi-edge:acmeCaBundle=${leaky}`],
        { stack: "e2e-leaky", timeoutMs: 10 * MIN },
      );
      expect(bad.code, bad.out).not.toBe(0);
      expect(bad.out).toMatch(/no-plaintext-credential-inputs/);
      expect(bad.out).toMatch(/PRIVATE KEY|private key/i);
    },
    20 * MIN,
  );

  it(
    "11. certbot renew --dry-run, then destroy and up again (the staging recreate cycle)",
    async () => {
      // --dry-run switches to Let's Encrypt staging unless --server is given again.
      const renew = await guest(
        `REQUESTS_CA_BUNDLE=/etc/fastapi-edge/acme-ca.pem certbot renew --dry-run --no-random-sleep-on-renew --server ${pebble["ACME_DIRECTORY_URL_FOR_GUEST"]} 2>&1`,
      );
      expect(renew.code, renew.out).toBe(0);
      expect(renew.out).toMatch(/Congratulations, all (simulated )?renewals succeeded/);
      expect((await guest("systemctl is-enabled certbot.timer")).out).toContain("enabled");

      const destroy = await timed("destroy", eng.pulumi(["destroy", "--yes", "--skip-preview"], { timeoutMs: 20 * MIN }));
      expect(destroy.code, destroy.out).toBe(0);
      const left = await guest(
        "systemctl list-units --all --plain --no-legend 'fastapi-edge-app@*' | wc -l; ls /etc/nginx/fastapi-edge 2>&1 | head -1; test -e /opt/fastapi-edge/app && echo app-left || echo app-gone; test -e /opt/fastapi-edge/releases && echo releases-left || echo releases-gone; ls /etc/letsencrypt/live/; grep -c sites-enabled /etc/nginx/nginx.conf",
      );
      expect(left.out).toMatch(/^0\n/);
      expect(left.out).toMatch(/No such file/);
      expect(left.out).toContain("app-gone");
      expect(left.out).toContain("releases-gone");
      expect(left.out).toContain(DOMAIN); // certificates are kept on purpose
      expect(left.out.trim().split("\n").pop()).not.toBe("0"); // the distribution's nginx.conf is back
      await up("recreate up");
      await assertServing();
    },
    40 * MIN,
  );
});
