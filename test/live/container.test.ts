// Live test of the container runtime on this machine, with real podman:
// scripts/build-app-image.sh (offline image), files/scripts/container-load.sh
// (image id checked; tampered archives refused), container-network.sh and
// run-container.sh (published on 127.0.0.1 only; X-Forwarded-* trusted from the
// network gateway, which is where podman's port forwarding makes nginx's
// connections come from, and from nothing else), container-prune.sh.
// systemd is not PID 1 here: run-container.sh runs in the foreground, as it does
// without NOTIFY_SOCKET; the unit itself is exercised in the Debian 13 guest
// (docs/containers.md).
import { execFileSync, spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildAppImage,
  containerPrerequisiteMissing,
  createNetnsPeer,
  curlArgs,
  parseKeyValues,
  podmanSetup,
  type BuiltImage,
  type NetnsPeer,
  type PodmanSetup,
} from "../helpers/container";
import {
  APP_DIR,
  freePort,
  httpJson,
  run,
  script,
  startProcess,
  stopAll,
  stopProcess,
  waitForHttp,
  type StartedProcess,
} from "../helpers/proc";

const missing = containerPrerequisiteMissing();
if (missing !== null) console.warn(`container.test.ts skipped: ${missing}`);

const RELEASE = "livetest";
const NETWORK = "fastapi-edge-livetest";
const SUBNET = "10.89.78.0/24";
const NETNS = "fe-ct-test";
const HOST_ADDR = "10.203.77.1";
const PEER_ADDR = "10.203.77.2";

let dir = "";
let appDir = "";
let built: BuiltImage;
let setup: PodmanSetup;
let gateway = "";
let peer: NetnsPeer | undefined;
let port = 0;
let proc: StartedProcess | undefined;

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, ...setup.env, FASTAPI_EDGE_STATE: path.join(dir, "state"), ...extra };
}

function podman(args: string[]): { status: number | null; out: string } {
  const r = spawnSync("podman", args, { encoding: "utf8", env: env(), timeout: 120_000 });
  return { status: r.status, out: `${r.stdout ?? ""}${r.stderr ?? ""}`.trim() };
}

function imageIdOf(ref: string): string | null {
  const r = podman(["image", "inspect", "--format", "{{.Id}}", ref]);
  return r.status === 0 ? `sha256:${r.out}` : null;
}

/** A copy of the archive with one member rewritten by EDIT. */
function tamper(
  member: (names: string[], manifest: { Config: string; Layers: string[] }) => string,
  edit: (file: string) => void,
  name: string,
): string {
  const x = path.join(dir, `x-${name}`);
  rmSync(x, { recursive: true, force: true });
  execFileSync("mkdir", ["-p", x]);
  execFileSync("tar", ["-xf", built.archive, "-C", x]);
  const manifest = (JSON.parse(readFileSync(path.join(x, "manifest.json"), "utf8")) as { Config: string; Layers: string[] }[])[0]!;
  edit(path.join(x, member(readdirSync(x), manifest)));
  const out = path.join(dir, `${name}.tar`);
  // Bare member names, as podman save writes them.
  execFileSync("tar", ["-cf", out, "-C", x, ...readdirSync(x).sort()]);
  return out;
}

function curlStatus(text: string): { body: string; code: string } {
  const i = text.lastIndexOf("\n");
  return { body: text.slice(0, i), code: text.slice(i + 1).trim() };
}

describe.skipIf(missing !== null)("container runtime (podman) on this machine", () => {
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-container-"));
    const t0 = Date.now();
    // The app plus a file unique to this run: its layer is then new to podman's
    // storage, so a load really reads it (a layer already stored is reused by digest).
    appDir = path.join(dir, "app");
    cpSync(APP_DIR, appDir, { recursive: true });
    writeFileSync(path.join(appDir, "static", "livetest.txt"), `${randomUUID()}\n`);
    built = await buildAppImage(RELEASE, path.join(dir, "app.tar"), {}, appDir);
    console.log(`build-app-image.sh: ${built.id} in ${(Date.now() - t0) / 1000}s (base built: ${built.baseBuilt})`);
    setup = podmanSetup(built.ref, path.join(dir, "conf"));
    for (const n of setup.notes) console.log(n);
    const res = await run(script("container-network.sh"), [NETWORK, SUBNET], { env: env() });
    expect(res.stderr + res.stdout).toMatch(/GATEWAY=/);
    expect(res.code).toBe(0);
    gateway = parseKeyValues(res.stdout).GATEWAY!;
    peer = createNetnsPeer(NETNS, HOST_ADDR, PEER_ADDR);
    port = await freePort();
  }, 25 * 60_000);

  afterAll(async () => {
    await stopAll();
    if (port !== 0 && setup !== undefined) podman(["rm", "--force", "--ignore", "--time", "0", `fastapi-edge-app-${port}`]);
    if (setup !== undefined) {
      podman(["network", "rm", "--force", NETWORK]);
      for (const r of ["p1", "p2", "p3", "p4", "p5", "p6"]) podman(["untag", built.id, `localhost/fastapi-edge-app:${r}`]);
    }
    peer?.remove();
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it(
    "builds the image offline; an unchanged app gives the same image id",
    async () => {
      expect(built.id).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(imageIdOf(built.ref)).toBe(built.id);
      const again = await buildAppImage(RELEASE, path.join(dir, "app.tar"), {}, appDir);
      expect(again.baseBuilt).toBe(false);
      expect(again.id).toBe(built.id);
      expect(again.sha256).toBe(built.sha256);
      console.log(`rebuild with a cached base: ${again.seconds}s`);
    },
    10 * 60_000,
  );

  it("container-load.sh refuses an archive whose image config was changed, before loading anything", async () => {
    const bad = tamper(
      (_n, m) => m.Config,
      (f) => writeFileSync(f, readFileSync(f, "utf8").replace(`APP_VERSION=${RELEASE}`, "APP_VERSION=evil")),
      "bad-config",
    );
    const res = await run(script("container-load.sh"), [bad, built.id, RELEASE], { env: env() });
    console.log(`tampered config: exit ${res.code}: ${res.stderr.trim()}`);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(
      /image id mismatch: .* holds image sha256:[0-9a-f]{64}, expected sha256:[0-9a-f]{64} .*nothing loaded, no tag changed/,
    );
    expect(res.stdout).toBe("");
    expect(imageIdOf(built.ref)).toBe(built.id);
  });

  it("container-load.sh: a changed layer fails podman's own check; a wrong --sha256 is refused; the genuine archive loads once", async () => {
    // Out of storage, so that the archive's layers are really read.
    expect(podman(["rmi", "--force", built.id]).status).toBe(0);
    const bad = tamper(
      (_n, m) => m.Layers[m.Layers.length - 1]!,
      (f) => {
        const x = `${f}.d`;
        execFileSync("mkdir", ["-p", x]);
        execFileSync("tar", ["-xf", f, "-C", x]);
        writeFileSync(path.join(x, "app", "main.py"), `${readFileSync(path.join(x, "app", "main.py"), "utf8")}\nprint("injected")\n`);
        execFileSync("tar", ["-cf", f, "-C", x, "."]);
        rmSync(x, { recursive: true });
      },
      "bad-layer",
    );
    const res = await run(script("container-load.sh"), [bad, built.id, RELEASE], { env: env() });
    console.log(`tampered layer: exit ${res.code}: ${res.stderr.trim().slice(0, 600)}`);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/container-load\.sh: error: podman load failed: /);
    expect(res.stderr).toMatch(/Digest did not match, expected sha256:[0-9a-f]{64}, got sha256:[0-9a-f]{64}/);
    expect(imageIdOf(built.id)).toBeNull();

    const wrongSha = await run(script("container-load.sh"), ["--sha256", "0".repeat(64), built.archive, built.id, RELEASE], { env: env() });
    expect(wrongSha.code).toBe(1);
    expect(wrongSha.stderr).toMatch(/has sha256 [0-9a-f]{64}, expected 0{64} \(damaged or replaced in transfer\); nothing loaded/);

    const t0 = Date.now();
    const ok = await run(script("container-load.sh"), ["--sha256", built.sha256, built.archive, built.id, RELEASE], { env: env() });
    console.log(`container-load.sh of a ${(readFileSync(built.archive).length / 1e6).toFixed(0)} MB archive: ${(Date.now() - t0) / 1000}s`);
    expect(ok.stderr).toMatch(/loading /);
    expect(ok.code).toBe(0);
    expect(parseKeyValues(ok.stdout)).toEqual({ IMAGE: `localhost/fastapi-edge-app:${RELEASE}`, IMAGE_ID: built.id });
    expect(imageIdOf(`localhost/fastapi-edge-app:${RELEASE}`)).toBe(built.id);

    const again = await run(script("container-load.sh"), [built.archive, built.id, RELEASE], { env: env() });
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/already in storage; not loading/);
  }, 180_000);

  it("run-container.sh runs the app, which answers /healthz on 127.0.0.1:PORT", async () => {
    proc = startProcess("bash", [script("run-container.sh"), String(port)], {
      env: env({ IMAGE: `localhost/fastapi-edge-app:${RELEASE}`, CONTAINER_NETWORK: NETWORK, APP_VERSION: RELEASE }),
    });
    await waitForHttp(`http://127.0.0.1:${port}/healthz`, 90_000, 200, proc);
    const h = await httpJson<{ status: string; version: string; port: number }>(`http://127.0.0.1:${port}/healthz`);
    expect(h.json).toEqual({ status: "ok", version: RELEASE, port });
    // The app's own log lines arrive on run-container.sh's stdout (log driver passthrough).
    expect(proc.output()).toMatch(/Uvicorn running on http:\/\/0\.0\.0\.0:8000/);
  }, 120_000);

  it("is published on 127.0.0.1 only: another local address of this machine gets no answer on PORT", async () => {
    const ss = execFileSync("ss", ["-ltnH", `sport = :${port}`], { encoding: "utf8" })
      .trim()
      .split("\n");
    console.log(`listening on :${port}: ${ss.map((l) => l.trim().split(/\s+/)[3]).join(", ")}`);
    expect(ss.map((l) => l.trim().split(/\s+/)[3])).toEqual([`127.0.0.1:${port}`]);

    // Control: the peer namespace does reach HOST_ADDR, on a port that listens on every address.
    const control = net.createServer((s) => s.end("control\n"));
    await new Promise<void>((r) => control.listen(0, "0.0.0.0", r));
    const ctlPort = (control.address() as net.AddressInfo).port;
    try {
      // Async: the control server runs in this process's event loop.
      const ctl = await run("ip", [
        "netns",
        "exec",
        NETNS,
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--http0.9",
        `http://${HOST_ADDR}:${ctlPort}/`,
      ]);
      expect(ctl.stdout + ctl.stderr).toMatch(/control/);
    } finally {
      control.close();
    }
    for (const [from, r] of [
      ["this machine", spawnSync("curl", curlArgs(`http://${HOST_ADDR}:${port}/healthz`), { encoding: "utf8" })],
      [
        "the peer namespace",
        spawnSync("ip", ["netns", "exec", NETNS, ...curlArgs(`http://${HOST_ADDR}:${port}/healthz`)], { encoding: "utf8" }),
      ],
    ] as const) {
      const text = `${r.stdout}${r.stderr}`;
      console.log(`${from} -> ${HOST_ADDR}:${port}: curl exit ${r.status}: ${text.trim().replace(/\n/g, " ")}`);
      expect(r.status).toBe(7); // couldn't connect
      expect(text).toMatch(/Failed to connect|Connection refused|Couldn't connect/);
    }
  });

  it("the app sees the client and scheme from X-Forwarded-* only when sent by the proxy address (the network gateway)", async () => {
    // Measured: what the app sees as the peer of a connection to 127.0.0.1:PORT.
    const plain = await httpJson<{ client: string; scheme: string }>(`http://127.0.0.1:${port}/api/whoami`);
    console.log(`connection to 127.0.0.1:${port} arrives in the container from ${plain.json.client} (network gateway ${gateway})`);
    expect(plain.json.client).toBe(gateway);
    expect(plain.json.client).not.toBe("127.0.0.1");

    const fwd = { "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https" };
    const trusted = await httpJson<{ client: string; scheme: string }>(`http://127.0.0.1:${port}/api/whoami`, { headers: fwd });
    expect(trusted.json).toMatchObject({ client: "203.0.113.7", scheme: "https" });

    // From elsewhere: the peer namespace straight to the container's address (routed through this machine).
    const cip = podman(["inspect", "--format", `{{(index .NetworkSettings.Networks "${NETWORK}").IPAddress}}`, `fastapi-edge-app-${port}`]);
    expect(cip.status).toBe(0);
    const r = peer!.exec(curlArgs(`http://${cip.out}:8000/api/whoami`, fwd));
    const { body, code } = curlStatus(r.output);
    expect(code).toBe("200");
    const untrusted = JSON.parse(body) as { client: string; scheme: string; forwarded: Record<string, string | null> };
    console.log(`from ${PEER_ADDR} to ${cip.out}:8000 with X-Forwarded-*: ${body}`);
    expect(untrusted).toMatchObject({ client: PEER_ADDR, scheme: "http" });
    expect(untrusted.forwarded["x-forwarded-for"]).toBe("203.0.113.7");
  });

  it("run-container.sh refuses a FORWARDED_ALLOW_IPS without the gateway, and an image not in storage (78)", async () => {
    const other = await freePort();
    const base = { IMAGE: `localhost/fastapi-edge-app:${RELEASE}`, CONTAINER_NETWORK: NETWORK };
    const loop = await run(script("run-container.sh"), [String(other)], { env: env({ ...base, FORWARDED_ALLOW_IPS: "127.0.0.1" }) });
    expect(loop.code).toBe(78);
    expect(loop.stderr).toContain(`lacks ${gateway}, the address nginx's connections arrive from`);
    const noImage = await run(script("run-container.sh"), [String(other)], {
      env: env({ ...base, IMAGE: "localhost/fastapi-edge-app:nope" }),
    });
    expect(noImage.code).toBe(78);
    expect(noImage.stderr).toMatch(/is not in local storage/);
    const noNet = await run(script("run-container.sh"), [String(other)], {
      env: env({ ...base, CONTAINER_NETWORK: "fastapi-edge-nonet" }),
    });
    expect(noNet.code).toBe(78);
    expect(noNet.stderr).toMatch(/does not exist \(container-network\.sh creates it\)/);
  });

  it("SIGTERM stops the app cleanly and the container is removed; a start over a leftover container replaces it", async () => {
    const p = proc!;
    await stopProcess(p, 30_000);
    expect(p.output()).toMatch(/Finished server process/);
    expect(podman(["container", "exists", `fastapi-edge-app-${port}`]).status).toBe(1);

    // A leftover (e.g. after a crash of conmon): --replace takes its place.
    expect(podman(["create", "--name", `fastapi-edge-app-${port}`, built.id]).status).toBe(0);
    proc = startProcess("bash", [script("run-container.sh"), String(port)], {
      env: env({ IMAGE: built.id, CONTAINER_NETWORK: NETWORK }),
    });
    await waitForHttp(`http://127.0.0.1:${port}/healthz`, 90_000, 200, proc);
    await stopProcess(proc, 30_000);
  }, 180_000);

  it("container-prune.sh keeps the four newest releases for rollback and untags older ones", async () => {
    for (const r of ["p1", "p2", "p3", "p4", "p5", "p6"]) {
      const res = await run(script("container-load.sh"), [built.archive, built.id, r], { env: env() });
      expect(res.code).toBe(0);
    }
    // A rollback to p2 re-records it as the newest.
    expect((await run(script("container-load.sh"), [built.archive, built.id, "p2"], { env: env() })).code).toBe(0);
    const res = await run(script("container-prune.sh"), [], { env: env() });
    expect(res.code).toBe(0);
    const tags = (r: string): boolean => imageIdOf(`localhost/fastapi-edge-app:${r}`) !== null;
    // Recorded order: livetest p1 p3 p4 p5 p6 p2 -> keep p4 p5 p6 p2.
    expect(["livetest", "p1", "p3", "p4", "p5", "p6", "p2"].map(tags)).toEqual([false, false, false, true, true, true, true]);
    expect(imageIdOf(built.id)).toBe(built.id); // still used by kept releases
    const record = readFileSync(path.join(dir, "state", "container-releases"), "utf8")
      .trim()
      .split("\n");
    expect(record.map((l) => l.split(" ")[0])).toEqual(["p4", "p5", "p6", "p2"]);
    const again = await run(script("container-prune.sh"), [], { env: env() });
    expect(again.stderr).toMatch(/nothing to prune/);
    for (const r of ["p2", "p4", "p5", "p6"]) podman(["untag", built.id, `localhost/fastapi-edge-app:${r}`]);
    podman(["tag", built.id, built.ref]);
  }, 120_000);
});
