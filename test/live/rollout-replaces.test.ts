// Live test of app-rollout.sh's change of runtime (REPLACES_TEMPLATE): each port's
// old instance is retired right before the new one starts there, and when the new
// one fails, the old one is put back so the port keeps serving. Two "runtimes" of
// REAL uvicorn processes: fastapi-edge-app@PORT (the old one, its state in old/)
// and fastapi-edge-next@PORT (the new one, in new/), both run by
// test/helpers/fake-systemctl.sh behind a small dispatcher that picks the state
// directory, the version and the broken ports by the unit's template. This is how
// the e2e guest found it matters: a container runtime that could not start
// (netavark without nft) left its first port with nothing running.
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FAKE_SYSTEMCTL, fakeSystemdEnv } from "../helpers/fake-systemd";
import { freePorts, httpJson, run, script, stopPidFiles, type RunResult } from "../helpers/proc";

let dir = "";
let oldState = "";
let newState = "";
let dispatcher = "";
let ports: number[] = [];

const DISPATCHER = `#!/usr/bin/env bash
# systemctl for two templates: fastapi-edge-next@P runs as fastapi-edge-app@P in NEW_STATE.
set -euo pipefail
state=$OLD_STATE version=$OLD_VERSION broken=\${OLD_BROKEN:-}
args=()
for a in "$@"; do
  if [[ $a =~ ^fastapi-edge-next@([0-9]+)\\.service$ ]]; then
    a="fastapi-edge-app@\${BASH_REMATCH[1]}.service"
    state=$NEW_STATE version=$NEW_VERSION broken=\${NEW_BROKEN:-}
  fi
  args+=("$a")
done
FAKE_STATE=$state APP_VERSION=$version FAKE_BROKEN_PORTS=$broken exec ${FAKE_SYSTEMCTL} "\${args[@]}"
`;

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return fakeSystemdEnv(oldState, {
    SYSTEMCTL: dispatcher,
    OLD_STATE: oldState,
    NEW_STATE: newState,
    OLD_VERSION: "old-1",
    NEW_VERSION: "new-2",
    HEALTH_INTERVAL: "0.2",
    WANTS_DIR: path.join(dir, "wants"),
    ...extra,
  });
}

function rollout(extra: Record<string, string> = {}): Promise<RunResult> {
  return run(script("app-rollout.sh"), ports.map(String), {
    env: env({ UNIT_TEMPLATE: "fastapi-edge-next", REPLACES_TEMPLATE: "fastapi-edge-app", EXPECT_VERSION: "new-2", ...extra }),
    timeoutMs: 180_000,
  });
}

/** The old runtime on every port, as before a change of runtime. */
async function startOld(): Promise<void> {
  for (const p of ports) {
    const r = await run(dispatcher, ["start", `fastapi-edge-app@${p}.service`], { env: env() });
    expect(r.code, r.stderr).toBe(0);
  }
  for (const p of ports) expect(await versionOf(p)).toBe("old-1");
}

async function versionOf(port: number): Promise<string> {
  for (let i = 0; i < 150; i++) {
    try {
      return (await httpJson<{ version: string }>(`http://127.0.0.1:${port}/healthz`)).json.version;
    } catch {
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return "down";
}

const calls = (state: string): string => {
  try {
    return readFileSync(path.join(state, "calls.log"), "utf8");
  } catch {
    return "";
  }
};

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-replaces-test-"));
  [oldState, newState] = [path.join(dir, "old"), path.join(dir, "new")];
  for (const d of [oldState, newState, path.join(dir, "wants")]) mkdirSync(d);
  dispatcher = path.join(dir, "systemctl");
  writeFileSync(dispatcher, DISPATCHER);
  chmodSync(dispatcher, 0o755);
  ports = await freePorts(2);
});

afterEach(async () => {
  await stopPidFiles(oldState);
  await stopPidFiles(newState);
  for (const s of [oldState, newState]) rmSync(path.join(s, "calls.log"), { force: true });
});

afterAll(() => {
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

describe("app-rollout.sh, a change of runtime (REPLACES_TEMPLATE)", () => {
  it("retires the old instance of each port right before the new one starts there", async () => {
    await startOld();
    const r = await rollout();
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    for (const p of ports) {
      expect(r.stdout).toContain(`stopping and disabling fastapi-edge-app@${p}.service (replaced by fastapi-edge-next@${p}.service)`);
      expect(await versionOf(p)).toBe("new-2");
    }
    expect(calls(oldState)).toMatch(new RegExp(`disable --now ${ports[0]}\\n(.*\\n)*disable --now ${ports[1]}`));
  });

  it("a new instance that never gets healthy: the old one is back on that port, the rest untouched, exit 1", async () => {
    await startOld();
    const r = await rollout({ NEW_BROKEN: String(ports[0]), HEALTH_TIMEOUT: "4" });
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`putting fastapi-edge-app@${ports[0]}.service back on port ${ports[0]}`);
    expect(r.stdout).toContain(`fastapi-edge-app@${ports[0]}.service is serving port ${ports[0]} again`);
    expect(r.stderr).toMatch(/rollout stopped at fastapi-edge-next@\d+\.service/);
    expect([await versionOf(ports[0]!), await versionOf(ports[1]!)]).toEqual(["old-1", "old-1"]);
    expect(calls(newState)).toMatch(new RegExp(`disable --now ${ports[0]}`)); // the failed new unit stopped, not left restarting
  });

  it("a failure on the second port keeps the first on the new runtime and puts the second back", async () => {
    await startOld();
    const r = await rollout({ NEW_BROKEN: String(ports[1]), HEALTH_TIMEOUT: "4" });
    expect(r.code).toBe(1);
    expect([await versionOf(ports[0]!), await versionOf(ports[1]!)]).toEqual(["new-2", "old-1"]);
  });

  it("without REPLACES_TEMPLATE a failed instance is left as it was (a release rollout, nothing to put back)", async () => {
    await startOld();
    const r = await run(script("app-rollout.sh"), ports.map(String), {
      env: env({ EXPECT_VERSION: "old-1", OLD_BROKEN: String(ports[0]), HEALTH_TIMEOUT: "3" }),
      timeoutMs: 120_000,
    });
    expect(r.code).toBe(1);
    expect(r.stdout).not.toContain("putting");
    expect(await versionOf(ports[1]!)).toBe("old-1");
  });
});
