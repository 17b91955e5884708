// Live test of the virtualenv path of files/scripts/app-deploy.sh (--venv): each release
// builds its own virtualenv with the host's python3 -m venv and pip, from a wheelhouse
// and no index; REAL uvicorn processes (test/helpers/fake-systemctl.sh through
// run-app.sh) run from it. Also: pip's failure leaves the live release serving, ALB
// mode's uvicorn floor, and a rollback that builds nothing.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fakeSystemdEnv } from "../helpers/fake-systemd";
import {
  freePorts,
  httpJson,
  run,
  script,
  startProcess,
  stopPidFiles,
  stopProcess,
  SYSTEM_PYTHON,
  waitForHttp,
  type RunResult,
} from "../helpers/proc";
import { testWheelhouse, wheelhouseCopy } from "../helpers/wheels";

let dir = "";
let base = "";
let state = "";
let ports: number[] = [];

const id = (n: number): string => n.toString(16).padStart(16, "0");

/** A pure-ASGI app (no FastAPI, so an isolated virtualenv needs nothing the wheelhouse lacks) reporting its runtime. */
const APP = `
import json, os, sys
from importlib.metadata import version
from importlib.util import find_spec

import edge_probe

VERSION = os.environ.get("APP_VERSION", "dev")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps({
        "version": VERSION,
        "edge_probe": edge_probe.__version__,
        "uvicorn": version("uvicorn"),
        "prefix": sys.prefix,
        "fastapi_importable": find_spec("fastapi") is not None,
        "client": scope["client"][0] if scope.get("client") else "",
        "scheme": scope["scheme"],
    }).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
`;

interface Report {
  version: string;
  edge_probe: string;
  uvicorn: string;
  prefix: string;
  fastapi_importable: boolean;
  client: string;
  scheme: string;
}

/** The upload of release n: the app and its requirements.txt. */
function upload(n: number, requirements: string): string {
  const u = path.join(dir, `upload-${id(n)}`);
  rmSync(u, { recursive: true, force: true });
  mkdirSync(u);
  writeFileSync(path.join(u, "main.py"), APP);
  writeFileSync(path.join(u, "requirements.txt"), requirements);
  const t = new Date(Date.UTC(2026, 0, 1, 0, n));
  utimesSync(u, t, t);
  return u;
}

function deploy(n: number, venvFlags: string[], extra: Record<string, string> = {}): Promise<RunResult> {
  return run(
    script("app-deploy.sh"),
    [
      ...["--release", id(n), "--upload", path.join(dir, `upload-${id(n)}`)],
      ...["--health-path", "/healthz", "--expect-version", `v${n}`, "--settle-seconds", "0"],
      ...["--venv", "requirements.txt", "--python", SYSTEM_PYTHON, ...venvFlags],
      ...ports.map(String),
    ],
    {
      env: fakeSystemdEnv(state, {
        FASTAPI_EDGE_BASE: base,
        APP_DIR: path.join(base, "app"),
        APP_VENV: ".venv",
        APP_VERSION: `v${n}`,
        // ALB mode's form: a block, not an address.
        FORWARDED_ALLOW_IPS: "127.0.0.0/8",
        HEALTH_INTERVAL: "0.2",
        WANTS_DIR: path.join(dir, "wants"),
        ...extra,
      }),
      timeoutMs: 180_000,
    },
  );
}

const live = (): string => readlinkSync(path.join(base, "app"));
const installed = (): string[] => readdirSync(path.join(base, "releases")).sort();
const reports = (headers: Record<string, string> = {}): Promise<Report[]> =>
  Promise.all(ports.map(async (p) => (await httpJson<Report>(`http://127.0.0.1:${p}/healthz`, { headers })).json));

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-venv-test-"));
  [base, state] = [path.join(dir, "opt"), path.join(dir, "state")];
  for (const d of [base, state, path.join(dir, "wants")]) mkdirSync(d);
  ports = await freePorts(2);
  testWheelhouse();
}, 600_000);

afterAll(async () => {
  await stopPidFiles(state);
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

describe("app-deploy.sh --venv", () => {
  it("builds the release's own virtualenv from the wheelhouse alone; uvicorn runs from it and the app imports what only the wheelhouse has", async () => {
    upload(1, "edge-probe==1.0.0\nuvicorn>=0.33\n");
    const wheels = wheelhouseCopy(dir);
    const res = await deploy(1, ["--wheelhouse", wheels, "--min-uvicorn", "0.33"]);
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
    expect(res.stdout).toMatch(/building the virtualenv of release 0000000000000001 from requirements\.txt/);
    expect(res.stdout).toMatch(/Successfully installed .*edge-probe-1\.0\.0/);
    expect(res.stdout).toMatch(/virtualenv of release 0000000000000001 built/);
    expect(existsSync(wheels)).toBe(false); // the wheelhouse upload has served its purpose
    const venv = path.join(base, "releases", id(1), ".venv");
    for (const r of await reports()) {
      expect(r).toMatchObject({ version: "v1", edge_probe: "1.0.0", uvicorn: "0.53.0", prefix: venv });
      // Isolated: the host's FastAPI (python3-fastapi) is not visible without --system-site-packages.
      expect(r.fastapi_importable).toBe(false);
    }
  }, 300_000);

  it("uvicorn 0.53 from the virtualenv trusts forwarded headers from a CIDR (ALB mode); the distribution's 0.17 ignores them", async () => {
    const fwd = { "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https" };
    for (const r of await reports(fwd)) expect([r.client, r.scheme]).toEqual(["203.0.113.9", "https"]);

    // The same app and the same block, on Debian 12's uvicorn 0.17.6 (--system-site-packages, no uvicorn in the requirements).
    const [port] = await freePorts(1);
    const sys = path.join(dir, "sys-release");
    mkdirSync(sys);
    writeFileSync(path.join(sys, "main.py"), APP);
    writeFileSync(path.join(sys, "requirements.txt"), "edge-probe==1.0.0\n");
    const venv = await run(SYSTEM_PYTHON, ["-m", "venv", "--system-site-packages", path.join(sys, ".venv")]);
    expect(venv.code, venv.stderr).toBe(0);
    const pip = await run(path.join(sys, ".venv/bin/python"), [
      "-m",
      "pip",
      "install",
      "-q",
      "--isolated",
      "--no-index",
      "--find-links",
      testWheelhouse(),
      "edge-probe",
    ]);
    expect(pip.code, pip.stderr).toBe(0);
    const old = startProcess(script("run-app.sh"), [String(port)], {
      env: { ...process.env, APP_MODULE: "main:app", APP_DIR: sys, APP_VENV: ".venv", FORWARDED_ALLOW_IPS: "127.0.0.0/8" },
    });
    try {
      await waitForHttp(`http://127.0.0.1:${port}/healthz`, 30_000, 200, old);
      const r = (await httpJson<Report>(`http://127.0.0.1:${port}/healthz`, { headers: fwd })).json;
      expect(r.uvicorn).toBe("0.17.6");
      expect([r.client, r.scheme]).toEqual(["127.0.0.1", "http"]);
    } finally {
      await stopProcess(old);
    }
  }, 120_000);

  it("a requirement pip cannot satisfy fails with pip's own message, before anything live changes", async () => {
    upload(2, "edge-probe==9.9\n");
    const wheels = wheelhouseCopy(dir);
    const res = await deploy(2, ["--wheelhouse", wheels]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/No matching distribution found for edge-probe==9\.9/);
    expect(res.stderr).toMatch(/release 0000000000000002 not made live; the live release keeps serving/);
    expect(live()).toBe(path.join(base, "releases", id(1)));
    expect(installed()).toEqual([id(1)]); // the release this run installed is gone again
    expect(existsSync(path.join(dir, `upload-${id(2)}`))).toBe(true); // kept for a retry
    expect(existsSync(wheels)).toBe(true);
    for (const r of await reports()) expect([r.version, r.edge_probe]).toEqual(["v1", "1.0.0"]);
  }, 300_000);

  it("ALB mode's floor (--min-uvicorn 0.33) refuses a virtualenv that resolved an older uvicorn", async () => {
    upload(3, "edge-probe==1.0.0\n");
    const res = await deploy(3, ["--wheelhouse", wheelhouseCopy(dir), "--system-site-packages", "--min-uvicorn", "0.33"]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/the virtualenv's uvicorn is 0\.17\.6; ALB mode needs uvicorn>=0\.33/);
    expect(live()).toBe(path.join(base, "releases", id(1)));
    expect(installed()).toEqual([id(1)]);
  }, 300_000);

  it("a new release, then back to the first: the kept release and its virtualenv go live again with nothing rebuilt", async () => {
    upload(4, "# release 4\nedge-probe==1.0.0\nuvicorn>=0.33\n");
    const four = await deploy(4, ["--wheelhouse", wheelhouseCopy(dir)]);
    expect(four.code, `${four.stdout}\n${four.stderr}`).toBe(0);
    for (const r of await reports()) expect(r.prefix).toBe(path.join(base, "releases", id(4), ".venv"));

    // Rollback: the engine uploads release 1 again (its upload resource is replaced); nothing else.
    upload(1, "edge-probe==1.0.0\nuvicorn>=0.33\n");
    const t0 = Date.now();
    const back = await deploy(1, ["--wheelhouse", wheelhouseCopy(dir)]);
    const seconds = (Date.now() - t0) / 1000;
    expect(back.code, `${back.stdout}\n${back.stderr}`).toBe(0);
    expect(back.stdout).toMatch(/release 0000000000000001 already installed/);
    expect(back.stdout).toMatch(/virtualenv of release 0000000000000001 already built/);
    expect(back.stdout).not.toMatch(/building the virtualenv|Successfully installed/);
    expect(live()).toBe(path.join(base, "releases", id(1)));
    for (const r of await reports()) expect([r.version, r.prefix]).toEqual(["v1", path.join(base, "releases", id(1), ".venv")]);
    console.log(`rollback to a kept release (2 processes, health-gated): ${seconds.toFixed(1)} s`);
  }, 300_000);

  it("run-app.sh refuses to start a release without its virtualenv (exit 78, no restart loop)", async () => {
    const bare = path.join(dir, "bare-release");
    mkdirSync(bare);
    const r = await run(script("run-app.sh"), ["8999"], {
      env: { ...process.env, APP_MODULE: "main:app", APP_DIR: bare, APP_VENV: ".venv", FORWARDED_ALLOW_IPS: "127.0.0.1" },
    });
    expect(r.code).toBe(78);
    expect(r.stderr).toMatch(/has no virtualenv \.venv/);
  });
});
