// Live test of files/scripts/app-rollout.sh. systemd is replaced by
// test/helpers/fake-systemctl.sh, which (re)starts REAL uvicorn processes (through run-app.sh) per
// port and records every call, plus what all watched ports answered at the
// moment of each restart, so one-at-a-time order can be asserted.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_SYSTEMCTL, fakeSystemdEnv } from "../helpers/fake-systemd";
import { freePorts, httpJson, isAlive, run, script, stopPidFiles, waitForHttp, type RunResult } from "../helpers/proc";

let dir = "";
let state = "";
let wantsDir = "";
let ports: number[] = [];
let a = 0;
let b = 0;
let c = 0;
let extraRunning = 0;
let extraEnabledOnly = 0;

function rollout(args: string[], extra: Record<string, string> = {}): Promise<RunResult> {
  return run(script("app-rollout.sh"), args, {
    env: fakeSystemdEnv(state, {
      WANTS_DIR: wantsDir,
      FAKE_WATCH_PORTS: [a, b, c].join(" "),
      HEALTH_INTERVAL: "0.2",
      ...extra,
    }),
    timeoutMs: 180_000,
  });
}

function fake(args: string[], extra: Record<string, string> = {}): Promise<RunResult> {
  return run(FAKE_SYSTEMCTL, args, { env: fakeSystemdEnv(state, extra) });
}

function calls(): string[] {
  const p = path.join(state, "calls.log");
  return existsSync(p)
    ? readFileSync(p, "utf8")
        .split("\n")
        .filter((l) => l !== "")
    : [];
}

function resetCalls(): void {
  rmSync(path.join(state, "calls.log"), { force: true });
}

function pidOf(port: number): number {
  const p = path.join(state, `${port}.pid`);
  return existsSync(p) ? Number.parseInt(readFileSync(p, "utf8"), 10) : 0;
}

async function versionOf(port: number): Promise<string> {
  return (await httpJson<{ version: string }>(`http://127.0.0.1:${port}/healthz`)).json.version;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-rollout-test-"));
  state = path.join(dir, "state");
  wantsDir = path.join(dir, "wants");
  mkdirSync(state);
  mkdirSync(wantsDir);
  ports = await freePorts(5);
  [a, b, c, extraRunning, extraEnabledOnly] = ports;
});

afterAll(async () => {
  await stopPidFiles(state);
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

describe("app-rollout.sh", () => {
  it("restarts one instance at a time, waits for health + version, and prunes extra instances", async () => {
    // An instance on a port that is no longer wanted (running), and one that is
    // only enabled (link in the wants dir).
    const started = await fake(["start", `fastapi-edge-app@${extraRunning}.service`], { APP_VERSION: "0.9.0" });
    expect(started.code, started.stderr).toBe(0);
    await waitForHttp(`http://127.0.0.1:${extraRunning}/healthz`, 20_000);
    const extraPid = pidOf(extraRunning);
    writeFileSync(path.join(wantsDir, `fastapi-edge-app@${extraEnabledOnly}.service`), "");
    resetCalls();

    const t0 = Date.now();
    const res = await rollout([String(a), String(b), String(c)], { APP_VERSION: "1.0.0", EXPECT_VERSION: "1.0.0", FAKE_START_DELAY: "1" });
    const elapsed = Date.now() - t0;
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
    expect(calls()).toEqual([
      "daemon-reload",
      `enable ${a} ${b} ${c}`,
      `restart ${a} | ${a}=000 ${b}=000 ${c}=000`,
      `restart ${b} | ${a}=200:1.0.0 ${b}=000 ${c}=000`,
      `restart ${c} | ${a}=200:1.0.0 ${b}=200:1.0.0 ${c}=000`,
      `disable --now ${extraRunning}`,
      `disable --now ${extraEnabledOnly}`,
    ]);
    // each instance starts 1 s after its restart: the script really waited
    expect(elapsed).toBeGreaterThanOrEqual(3000);
    expect(res.stdout).toMatch(new RegExp(`\\[3/3\\] fastapi-edge-app@${c}\\.service healthy after \\d+s \\(version 1\\.0\\.0\\)`));
    for (const p of [a, b, c]) expect(await versionOf(p)).toBe("1.0.0");
    expect(isAlive(extraPid)).toBe(false);
    expect(existsSync(path.join(state, "enabled", `fastapi-edge-app@${a}.service`))).toBe(true);
  });

  it("a second rollout upgrades every instance while the others keep serving", async () => {
    const before = [a, b, c].map(pidOf);
    resetCalls();
    const res = await rollout(["--no-prune", String(a), String(b), String(c)], { APP_VERSION: "1.0.1", EXPECT_VERSION: "1.0.1" });
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
    const restarts = calls().filter((l) => l.startsWith("restart"));
    expect(restarts).toEqual([
      `restart ${a} | ${a}=200:1.0.0 ${b}=200:1.0.0 ${c}=200:1.0.0`,
      `restart ${b} | ${a}=200:1.0.1 ${b}=200:1.0.0 ${c}=200:1.0.0`,
      `restart ${c} | ${a}=200:1.0.1 ${b}=200:1.0.1 ${c}=200:1.0.0`,
    ]);
    expect(calls().some((l) => l.startsWith("disable"))).toBe(false);
    const after = [a, b, c].map(pidOf);
    after.forEach((pid, i) => expect(pid).not.toBe(before[i]));
    before.forEach((pid) => expect(isAlive(pid)).toBe(false));
  });

  it("fails loudly with the journal tail when an instance never gets healthy, leaving later ports untouched", async () => {
    const cPid = pidOf(c);
    resetCalls();
    const t0 = Date.now();
    const res = await rollout([String(a), String(b), String(c)], {
      APP_VERSION: "1.0.2",
      HEALTH_TIMEOUT: "3",
      FAKE_BROKEN_PORTS: String(b),
    });
    expect(res.code).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(3000);
    expect(res.stderr).toContain(`fastapi-edge-app@${b}.service not healthy at http://127.0.0.1:${b}/healthz after 3s`);
    expect(res.stderr).toMatch(/journalctl\S* -u fastapi-edge-app@\d+\.service \(last 50 lines\)/);
    expect(res.stderr).toMatch(/Error loading ASGI app|No module named|Could not import module/);
    expect(res.stderr).toContain(`rollout stopped at fastapi-edge-app@${b}.service (remaining ports untouched)`);
    expect(
      calls()
        .filter((l) => l.startsWith("restart"))
        .map((l) => l.split(" ")[1]),
    ).toEqual([String(a), String(b)]);
    expect(calls().some((l) => l.startsWith("disable"))).toBe(false);
    expect(await versionOf(a)).toBe("1.0.2");
    expect(pidOf(c)).toBe(cPid);
    expect(await versionOf(c)).toBe("1.0.1");
  });

  it("fails when the instance reports a version other than EXPECT_VERSION", async () => {
    resetCalls();
    const res = await rollout([String(a), String(b), String(c)], { APP_VERSION: "1.0.3", EXPECT_VERSION: "2.0.0", HEALTH_TIMEOUT: "2" });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain("HTTP 200 but version '1.0.3' != expected '2.0.0'");
    expect(
      calls()
        .filter((l) => l.startsWith("restart"))
        .map((l) => l.split(" ")[1]),
    ).toEqual([String(a)]);
  });

  it("--prune-only stops instances not in the list without restarting any", async () => {
    resetCalls();
    const res = await rollout(["--prune-only", String(a)]);
    expect(res.code, res.stderr).toBe(0);
    expect(calls().filter((l) => !l.startsWith("disable"))).toEqual([]);
    expect(calls()).toEqual(expect.arrayContaining([`disable --now ${c}`]));
    expect(calls().some((l) => l === `disable --now ${a}`)).toBe(false);
    expect(pidOf(c)).toBe(0);
    expect(await versionOf(a)).toBe("1.0.3");
  });

  it("rejects bad usage with exit 64", async () => {
    expect((await rollout([])).code).toBe(64);
    expect((await rollout(["80a"])).code).toBe(64);
    expect((await rollout(["70000"])).code).toBe(64);
    expect((await rollout(["--bogus", "8000"])).code).toBe(64);
    expect(calls().filter((l) => l.startsWith("restart"))).toEqual([]);
  });
});
