// Live test of files/scripts/app-deploy.sh, the app-deploy step: release
// install, the atomic switch, the rollout (app-rollout.sh driving REAL uvicorn
// processes through test/helpers/fake-systemctl.sh, which run the app from
// the live release) and pruning, in a scratch FASTAPI_EDGE_BASE.
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fakeSystemdEnv } from "../helpers/fake-systemd";
import { APP_DIR, freePorts, httpJson, run, script, stopPidFiles, waitForPortClosed, type RunResult } from "../helpers/proc";

let dir = "";
let base = "";
let state = "";
let ports: number[] = [];

const id = (n: number): string => n.toString(16).padStart(16, "0");

/** An upload of the app for release n, with a marker file, modified n minutes after a fixed time. */
function upload(n: number): string {
  const u = path.join(dir, `upload-${id(n)}`);
  rmSync(u, { recursive: true, force: true });
  cpSync(APP_DIR, u, { recursive: true, filter: (src) => !src.includes("__pycache__") });
  writeFileSync(path.join(u, "static", "release.txt"), `release ${n}\n`);
  const t = new Date(Date.UTC(2026, 0, 1, 0, n));
  utimesSync(u, t, t);
  return u;
}

function deploy(
  n: number,
  uploadDir = path.join(dir, `upload-${id(n)}`),
  extra: Record<string, string> = {},
  flags: string[] = [],
): Promise<RunResult> {
  return run(
    script("app-deploy.sh"),
    [
      "--release",
      id(n),
      "--upload",
      uploadDir,
      "--health-path",
      "/healthz",
      "--expect-version",
      `v${n}`,
      "--settle-seconds",
      "0",
      ...flags,
      ...ports.map(String),
    ],
    {
      env: fakeSystemdEnv(state, {
        FASTAPI_EDGE_BASE: base,
        APP_DIR: path.join(base, "app"),
        APP_VERSION: `v${n}`,
        HEALTH_INTERVAL: "0.2",
        WANTS_DIR: path.join(dir, "wants"),
        ...extra,
      }),
      timeoutMs: 120_000,
    },
  );
}

const live = (): string => readlinkSync(path.join(base, "app"));
const installed = (): string[] => readdirSync(path.join(base, "releases")).sort();
const versions = async (): Promise<string[]> =>
  Promise.all(ports.map(async (p) => (await httpJson<{ version: string }>(`http://127.0.0.1:${p}/healthz`)).json.version));

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-deploy-test-"));
  [base, state] = [path.join(dir, "opt"), path.join(dir, "state")];
  for (const d of [base, state, path.join(dir, "wants")]) mkdirSync(d);
  ports = await freePorts(2);
});

afterAll(async () => {
  await stopPidFiles(state);
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

describe("app-deploy.sh", () => {
  it("installs the release, removes the upload, switches the app link and rolls the processes onto it", async () => {
    const u = upload(1);
    const res = await deploy(1);
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
    expect(res.stdout).toMatch(/release 0000000000000001 installed/);
    expect(live()).toBe(path.join(base, "releases", id(1)));
    expect(existsSync(u)).toBe(false);
    expect(readFileSync(path.join(base, "app", "static", "release.txt"), "utf8")).toBe("release 1\n");
    const st = statSync(path.join(base, "releases", id(1), "main.py"));
    expect([st.uid, st.gid]).toEqual([0, 0]);
    expect(st.mode & 0o022).toBe(0);
    expect(st.mode & 0o004).toBe(0o004);
    expect(await versions()).toEqual(["v1", "v1"]);
  });

  it("a re-run with the release installed and its upload gone copies nothing and rolls again", async () => {
    const res = await deploy(1);
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
    expect(res.stdout).toMatch(/release 0000000000000001 already installed/);
    expect(res.stdout).toMatch(/app-rollout: done/);
    expect(installed()).toEqual([id(1)]);
    expect(live()).toBe(path.join(base, "releases", id(1)));
  });

  it("fails, changing nothing, when the release is neither installed nor uploaded", async () => {
    const res = await deploy(9);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/release 0000000000000009 is not installed and its upload .* is gone/);
    expect(live()).toBe(path.join(base, "releases", id(1)));
    expect(installed()).toEqual([id(1)]);
  });

  it("replaces a copy an interrupted run left behind", async () => {
    mkdirSync(path.join(base, "releases", `${id(2)}.tmp`, "half-copied"), { recursive: true });
    upload(2);
    const res = await deploy(2);
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
    expect(existsSync(path.join(base, "releases", id(2), "half-copied"))).toBe(false);
    expect(readdirSync(path.join(base, "releases", id(2))).sort()).toEqual(
      readdirSync(APP_DIR)
        .filter((f) => f !== "__pycache__")
        .sort(),
    );
    expect(installed()).toEqual([id(1), id(2)]);
    expect(await versions()).toEqual(["v2", "v2"]);
  });

  it("keeps the three newest releases, and never removes the live one", async () => {
    for (const n of [3, 4]) {
      upload(n);
      const res = await deploy(n);
      expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
    }
    expect(installed()).toEqual([id(2), id(3), id(4)]);

    // A failed rollout stops before pruning: four releases stay.
    upload(5);
    const failed = await deploy(5, undefined, { HEALTH_TIMEOUT: "2", FAKE_BROKEN_PORTS: String(ports[0]) });
    expect(failed.code).toBe(1);
    expect(installed()).toEqual([id(2), id(3), id(4), id(5)]);

    // Back to the oldest one: it is live, so it stays although three are newer.
    const back = await deploy(2);
    expect(back.code, `${back.stdout}\n${back.stderr}`).toBe(0);
    expect(live()).toBe(path.join(base, "releases", id(2)));
    expect(installed()).toEqual([id(2), id(3), id(4), id(5)]);
    expect(await versions()).toEqual(["v2", "v2"]);
  });

  it("--health-timeout (the appStartTimeout setting) bounds the wait for a process that never gets healthy", async () => {
    upload(6);
    const t0 = Date.now();
    const failed = await deploy(6, undefined, { FAKE_BROKEN_PORTS: String(ports[0]) }, ["--health-timeout", "3"]);
    const seconds = (Date.now() - t0) / 1000;
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/not healthy at http:\/\/127\.0\.0\.1:\d+\/healthz after 3s/);
    expect(seconds).toBeLessThan(45); // the default would wait 60 s
    const bad = await deploy(6, undefined, {}, ["--health-timeout", "0"]);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toMatch(/--health-timeout must be a whole number of seconds/);
  });

  it("once a release is live, removes the uploads refused releases left behind, and only those", async () => {
    // Release 8 stands for one refused before anything went live (its upload kept for a retry, as
    // app-venv.test.ts shows for a pip failure); a file that is no release's upload stays.
    upload(8);
    writeFileSync(path.join(dir, "upload-notes"), "not an upload\n");
    upload(7);
    const res = await deploy(7);
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
    expect(res.stdout).toMatch(new RegExp(`removed the upload of release ${id(8)} \\(not live\\)`));
    expect(readdirSync(dir).filter((f) => f.startsWith("upload-"))).toEqual(["upload-notes"]);
  });

  it("--files-only (the edge before app hosts) switches the release and touches no process; app-rollout.sh --prune-only then stops them all", async () => {
    const env = fakeSystemdEnv(state, { FASTAPI_EDGE_BASE: base, WANTS_DIR: path.join(dir, "wants") });
    const u = upload(10);
    const res = await run(script("app-deploy.sh"), ["--files-only", "--release", id(10), "--upload", u], { env, timeoutMs: 60_000 });
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
    expect(res.stdout).toMatch(/release 000000000000000a live for its files only/);
    expect(res.stdout).not.toMatch(/app-rollout|virtualenv/);
    expect(live()).toBe(path.join(base, "releases", id(10)));
    expect(readFileSync(path.join(base, "app", "static", "release.txt"), "utf8")).toBe("release 10\n");
    expect(existsSync(u)).toBe(false);
    expect(await versions()).toEqual(["v7", "v7"]); // the running processes were left alone
    // It starts nothing, so it takes no port, and builds no virtualenv.
    const withPorts = await run(script("app-deploy.sh"), ["--files-only", "--release", id(10), "--upload", u, String(ports[0])], { env });
    expect([withPorts.code, withPorts.stderr]).toEqual([64, expect.stringMatching(/--files-only takes no PORT/)]);
    const withVenv = await run(
      script("app-deploy.sh"),
      ["--files-only", "--venv", "requirements.txt", "--release", id(10), "--upload", u],
      { env },
    );
    expect([withVenv.code, withVenv.stderr]).toEqual([64, expect.stringMatching(/--files-only builds no virtualenv/)]);

    // The edge-app-retire step, after nginx's upstream names the app hosts: every instance stops.
    const retire = await run(script("app-rollout.sh"), ["--prune-only"], { env, timeoutMs: 60_000 });
    expect(retire.code, `${retire.stdout}\n${retire.stderr}`).toBe(0);
    for (const p of ports) expect(retire.stdout).toContain(`stopping and disabling fastapi-edge-app@${p}.service`);
    for (const p of ports) await waitForPortClosed(p);
    expect(readdirSync(path.join(dir, "wants"))).toEqual([]);
    const again = await run(script("app-rollout.sh"), ["--prune-only"], { env, timeoutMs: 60_000 });
    expect([again.code, again.stdout]).toEqual([0, expect.stringMatching(/no extra instances to stop/)]);
    // Without --prune-only a port is still required.
    expect((await run(script("app-rollout.sh"), [], { env })).code).toBe(64);
  });
});
