// Live test of appUpstream unix: the REAL nginx, rendered with `server unix:` upstreams
// (test/helpers/live-site.ts with config appUpstream unix: the sockets in the layout's
// appSocketDir), in front of REAL uvicorn processes started by files/scripts/run-app.sh
// (APP_UDS_DIR, FORWARDED_ALLOW_IPS=*, as renderAppEnv writes them), run and rolled by
// files/scripts/app-rollout.sh with HEALTH_UDS_DIR against test/helpers/fake-systemctl.sh,
// under the unit's UMask=0027. Proves: the sockets are 0666 whatever the umask, the
// rollout's health checks go over the sockets, uvicorn applies nginx's forwarded headers
// from a peer without an address, and a rolling restart under wrk load fails no request.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rolloutSettleSeconds } from "../../lib/hostfiles";
import { fakeSystemdEnv } from "../helpers/fake-systemd";
import { startLiveSite, wrkFailures, type LiveSite, type WrkResult } from "../helpers/live-site";
import { run, script, sleep, stopPidFiles, type RunResult } from "../helpers/proc";

let site: LiveSite | null = null;
let dir = "";
let state = "";
let sockDir = "";

const log = (l: string): void => console.log(`[uds-upstream] ${l}`);

/** app-rollout.sh as app-deploy.sh runs it for appUpstream unix, under the unit's UMask=0027. */
function rollout(version: string, settle: number): Promise<RunResult> {
  const s = site!;
  const env = fakeSystemdEnv(state, {
    WANTS_DIR: path.join(dir, "wants"),
    // app.env (renderAppEnv, appUpstream unix); APP_UDS_DIR is the fixture's /run/fastapi-edge.
    APP_UDS_DIR: sockDir,
    FORWARDED_ALLOW_IPS: "*",
    APP_VERSION: version,
    STATIC_DIR: s.staticDir,
    // components/app.ts: HEALTH_UDS_DIR=/run/fastapi-edge app-deploy.sh ... --expect-version V
    HEALTH_UDS_DIR: sockDir,
    HEALTH_PATH: "/healthz",
    EXPECT_VERSION: version,
    HEALTH_INTERVAL: "0.2",
    HEALTH_TIMEOUT: "30",
    SETTLE_SECONDS: String(settle),
  });
  const umask = 'umask 0027 && exec "$@"';
  return run("bash", ["-c", umask, "_", script("app-rollout.sh"), ...s.appPorts.map(String)], { env, timeoutMs: 90_000 });
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "fe-uds-upstream-"));
  state = path.join(dir, "state");
  mkdirSync(state);
  mkdirSync(path.join(dir, "wants"));
  // The apps are left to app-rollout.sh: nginx starts in front of sockets that are not there yet.
  site = await startLiveSite({ config: { appUpstream: "unix" }, shortTimeouts: true, appProcesses: 2, startApp: false });
  sockDir = site.fixture.at(site.fixture.layout.appSocketDir);
}, 60_000);

afterAll(async () => {
  await site?.stop();
  await stopPidFiles(state);
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

describe("appUpstream unix, live: nginx -> uvicorn over unix sockets", () => {
  it("the rendered upstream names the sockets", () => {
    const http = readFileSync(path.join(site!.fixture.confDir, "fastapi-edge", "http.conf"), "utf8");
    for (const p of site!.appPorts) expect(http).toContain(`server unix:${sockDir}/app-${p}.sock max_fails=`);
    expect(http).not.toMatch(/server 127\.0\.0\.1:/);
  });

  it("app-rollout.sh starts each instance on its socket (0666 under UMask=0027), health-checked over it", async () => {
    const r = await rollout("1.0.0", 0);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    for (const p of site!.appPorts) {
      expect(r.stdout).toContain(`fastapi-edge-app@${p}.service healthy after`);
      const st = statSync(path.join(sockDir, `app-${p}.sock`));
      expect(st.isSocket()).toBe(true);
      expect((st.mode & 0o777).toString(8)).toBe("666");
      // Nothing on the TCP port: nginx can only have reached the app over the socket.
      expect(await tcpOpen(p)).toBe(false);
    }
  }, 60_000);

  it("nginx proxies over the sockets, and uvicorn applies X-Forwarded-For/-Proto (FORWARDED_ALLOW_IPS=*)", async () => {
    const v = await site!.https("/api/version");
    expect(v.status, v.text).toBe(200);
    expect((JSON.parse(v.text) as { version: string }).version).toBe("1.0.0");
    const who = await site!.https("/api/whoami");
    expect(who.status, who.text).toBe(200);
    const body = JSON.parse(who.text) as { client: string | null; scheme: string };
    expect(body.scheme).toBe("https");
    expect(body.client).toBe("127.0.0.1");
  });

  it("a rolling restart over the sockets under wrk load fails no request", async () => {
    const s = site!;
    const settle = rolloutSettleSeconds(s.config);
    const wrk = await s.startWrk({ url: s.httpsUrl("/api/version"), connections: 16, threads: 2, durationS: 120, timeoutS: 10 });
    let result: WrkResult | null = null;
    try {
      await sleep(2000);
      const r = await rollout("2.0.0", settle);
      log(`rollout exit ${r.code} after ${r.ms} ms (SETTLE_SECONDS=${settle})`);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      await sleep(1000);
      result = await wrk.stop();
    } finally {
      if (result === null) await wrk.stop().catch(() => undefined);
    }
    const errorLog = readFileSync(s.errorLog, "utf8");
    const noLive = errorLog.split("\n").filter((l) => /no live upstreams/.test(l)).length;
    log(`wrk: ${result.requests} requests, ${wrkFailures(result)} failed ${JSON.stringify(result.errors)}, ${result.rps} req/s`);
    expect(result.requests).toBeGreaterThan(1000);
    expect(wrkFailures(result), JSON.stringify(result.errors)).toBe(0);
    expect(noLive).toBe(0);
    const after: Record<string, number> = {};
    for (let i = 0; i < 50; i++) {
      const r = await s.https("/api/version");
      const k = `${r.status} ${r.status === 200 ? (JSON.parse(r.text) as { version: string }).version : "?"}`;
      after[k] = (after[k] ?? 0) + 1;
    }
    expect(after).toEqual({ "200 2.0.0": 50 });
  }, 90_000);
});
