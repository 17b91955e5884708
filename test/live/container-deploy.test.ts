// Live test of files/scripts/container-deploy.sh, the app-deploy step of appRuntime container,
// with real podman on this machine: the release directory installed in a scratch
// FASTAPI_EDGE_BASE, the image archive checked and loaded by container-load.sh (its own
// IMAGE_REPO and release ids, so no tag another test or the host uses is touched), the network created by
// container-network.sh (a name and subnet of its own), container.env switched in ETC_DIR, and
// the containers rolled by app-rollout.sh through test/helpers/fake-systemctl-container.sh,
// which starts each fastapi-edge-container@PORT with run-container.sh and the environment the
// unit's EnvironmentFile= holds (FAKE_ETC_DIR: the container.env the script switched in), as
// systemd does. Then the live release is recorded and the uploads are swept.
// Every HTTP check goes to the real containers on 127.0.0.1.
import { spawnSync } from "node:child_process";
import {
  closeSync,
  copyFileSync,
  cpSync,
  existsSync,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildAppImage,
  containerPrerequisiteMissing,
  fakeContainerSystemdEnv,
  FAKE_SYSTEMCTL_CONTAINER,
  podmanSetup,
  type BuiltImage,
  type PodmanSetup,
} from "../helpers/container";
import { APP_DIR, freePorts, httpRequest, run, script, stopPidFiles, type RunResult } from "../helpers/proc";

const missing = containerPrerequisiteMissing();
if (missing !== null) console.warn(`container-deploy.test.ts skipped: ${missing}`);

/** This test's own image repository, network, subnet and port-guard table: nothing another test or the host uses. */
const IMAGE_REPO = "localhost/fastapi-edge-deploytest";
const NETWORK = "fastapi-edge-deploytest";
const SUBNET = "10.89.81.0/24";
const GUARD_TABLE = "fastapi_edge_deploytest";
/** Release ids are 16 hex digits (the program's hash of the app tree). */
const ID1 = "cde9100000000001";
const ID2 = "cde9100000000002";
/** A release that was refused before it went live: its uploads stay behind until another goes live. */
const ID9 = "cde9100000000009";

let dir = "";
let base = "";
let state = "";
let etc = "";
let fakeState = "";
let ports: number[] = [];
let setup: PodmanSetup;
const images: Record<string, BuiltImage> = {};

const uploadPath = (id: string): string => path.join(dir, `fastapi-edge-upload-${id}`);
const archivePath = (id: string): string => path.join(dir, `fastapi-edge-image-${id}`, "image.tar");

/** The app tree of release n (the source of its image and its upload): the app plus a marker file. */
const sourceOf = (n: number): string => path.join(dir, "build", `app-${n}`);
function makeSource(n: number): string {
  const src = sourceOf(n);
  cpSync(APP_DIR, src, { recursive: true, filter: (f) => !f.includes("__pycache__") });
  writeFileSync(path.join(src, "static", "release.txt"), `release ${n}\n`);
  return src;
}

/**
 * The upload of release n as the step puts it on the host, made right before its deploy (a deploy
 * sweeps the uploads of every other release beside its own, as it should: see the last case).
 */
function makeUpload(id: string, n: number): void {
  cpSync(sourceOf(n), uploadPath(id), { recursive: true });
}

/** The archive as the image upload puts it on the host: ${dir}/fastapi-edge-image-ID/image.tar. */
function shipArchive(id: string, from = images[id]!.archive): string {
  const a = archivePath(id);
  mkdirSync(path.dirname(a), { recursive: true });
  copyFileSync(from, a);
  return a;
}

/**
 * What the step writes before running the script: container.env.candidate, as
 * renderContainerEnv does, without APP_VERSION, so that /healthz reports the version the
 * image carries (its release id): which image answers is then what the version says.
 */
const CANDIDATE = ["# Rendered by container-deploy.test.ts", "APP_MODULE=main:app", `CONTAINER_NETWORK=${NETWORK}`, ""].join("\n");
function writeCandidate(): void {
  writeFileSync(path.join(etc, "container.env.candidate"), CANDIDATE);
}

function deployEnv(): NodeJS.ProcessEnv {
  return fakeContainerSystemdEnv(fakeState, setup.env, {
    FASTAPI_EDGE_BASE: base,
    FASTAPI_EDGE_STATE: state,
    ETC_DIR: etc,
    FAKE_ETC_DIR: etc,
    IMAGE_REPO,
    CONTAINER_NETWORK: NETWORK,
    CONTAINER_SUBNET: SUBNET,
    CONTAINER_PORT_GUARD_TABLE: GUARD_TABLE,
    WANTS_DIR: path.join(dir, "wants"),
    HEALTH_INTERVAL: "0.2",
  });
}

function archiveArgs(id: string, opts: { imageId?: string; sha256?: string } = {}): string[] {
  const img = images[id]!;
  return ["--archive", archivePath(id), "--image-id", opts.imageId ?? img.id, "--sha256", opts.sha256 ?? img.sha256];
}

function deploy(id: string, imageArgs: string[]): Promise<RunResult> {
  return run(
    script("container-deploy.sh"),
    [
      ...["--release", id, "--upload", uploadPath(id), ...imageArgs],
      ...["--health-path", "/healthz", "--expect-version", id, "--settle-seconds", "0", "--health-timeout", "120"],
      ...ports.map(String),
    ],
    { env: deployEnv(), timeoutMs: 600_000 },
  );
}

function podman(args: string[]): { status: number | null; out: string } {
  const r = spawnSync("podman", args, { encoding: "utf8", env: { ...process.env, ...setup.env }, timeout: 120_000 });
  return { status: r.status, out: `${r.stdout ?? ""}${r.stderr ?? ""}`.trim() };
}

/** The id (sha256:HEX) REF resolves to in podman's storage, or null. */
function imageIdOf(ref: string): string | null {
  const r = podman(["image", "inspect", "--format", "{{.Id}}", ref]);
  return r.status === 0 ? `sha256:${r.out}` : null;
}

/** Each port's container: its id (a restart makes a new one) and the image it runs. */
function containers(): { id: string; image: string; name: string }[] {
  return ports.map((p) => {
    const r = podman(["container", "inspect", "--format", "{{.Id}} sha256:{{.Image}} {{.ImageName}}", `fastapi-edge-app-${p}`]);
    expect(r.status, r.out).toBe(0);
    const [id, image, name] = r.out.split(" ") as [string, string, string];
    return { id, image, name };
  });
}

/** What each port's /healthz and /static/release.txt answer, straight from the containers. */
async function answers(): Promise<{ health: unknown; release: string }[]> {
  return Promise.all(
    ports.map(async (p) => {
      const h = await httpRequest(`http://127.0.0.1:${p}/healthz`, { timeoutMs: 10_000 });
      const r = await httpRequest(`http://127.0.0.1:${p}/static/release.txt`, { timeoutMs: 10_000 });
      return { health: h.status === 200 ? JSON.parse(h.text) : `HTTP ${h.status}`, release: `${r.status} ${r.text}` };
    }),
  );
}
const serving = (id: string, n: number): { health: unknown; release: string }[] =>
  ports.map((p) => ({ health: { status: "ok", version: id, port: p }, release: `200 release ${n}\n` }));

const read = (...p: string[]): string => readFileSync(path.join(...p), "utf8");
const live = (): string => readlinkSync(path.join(base, "app"));
const log = (r: RunResult): string => `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;

/** One byte of FILE inverted, in the middle: a transfer that went wrong. */
function flipByte(file: string): void {
  const fd = openSync(file, "r+");
  try {
    const at = Math.floor(fstatSync(fd).size / 2);
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

/** Removes what this test (or an interrupted run of it) left in podman: containers, its repository's images, its network. */
function podmanCleanup(): void {
  for (const p of ports) podman(["rm", "--force", "--ignore", "--time", "0", `fastapi-edge-app-${p}`]);
  const ids = new Set<string>(Object.values(images).map((i) => i.id));
  const tagged = podman(["image", "ls", "--quiet", "--no-trunc", "--filter", `reference=${IMAGE_REPO}`]);
  if (tagged.status === 0) for (const id of tagged.out.split("\n").filter((l) => l !== "")) ids.add(id);
  // The ids are this test's own: APP_VERSION in their config is one of its release ids.
  for (const id of ids) podman(["rmi", "--force", id]);
  podman(["network", "rm", "--force", NETWORK]);
}

describe.skipIf(missing !== null)("container-deploy.sh with real podman", () => {
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-cdeploy-"));
    [base, state, etc, fakeState] = ["opt", "state", "etc", "fake"].map((d) => path.join(dir, d)) as [string, string, string, string];
    for (const d of [base, state, etc, fakeState, path.join(dir, "wants"), path.join(dir, "build")]) mkdirSync(d);
    ports = await freePorts(2);
    const t0 = Date.now();
    // Two releases of the app, each image built from its own tree (different files, APP_VERSION = its id).
    for (const [id, n] of [
      [ID1, 1],
      [ID2, 2],
    ] as const) {
      images[id] = await buildAppImage(id, path.join(dir, "build", `${id}.tar`), {}, makeSource(n));
    }
    expect(images[ID2]!.id).not.toBe(images[ID1]!.id);
    console.log(`images built in ${(Date.now() - t0) / 1000}s: ${ID1} ${images[ID1]!.id}, ${ID2} ${images[ID2]!.id}`);
    setup = podmanSetup(images[ID1]!.ref, path.join(dir, "conf"));
    for (const n of setup.notes) console.log(n);
    // Leftovers of an interrupted run go; the images just built too (with the builder's tags,
    // localhost/fastapi-edge-app:ID of this test's ids), so that container-deploy.sh really loads each archive.
    podmanCleanup();
    expect(imageIdOf(images[ID1]!.id)).toBeNull();
    expect(imageIdOf(images[ID2]!.id)).toBeNull();
  }, 25 * 60_000);

  afterAll(async () => {
    if (setup !== undefined) {
      for (const p of ports) {
        await run(FAKE_SYSTEMCTL_CONTAINER, ["stop", `fastapi-edge-container@${p}.service`], { env: deployEnv(), timeoutMs: 120_000 });
      }
      await stopPidFiles(fakeState);
      podmanCleanup();
      spawnSync("nft", ["delete", "table", "inet", GUARD_TABLE], { stdio: "ignore" });
    }
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  }, 180_000);

  it("first deploy from an archive: installs the release, loads the image under its own repo, switches container.env, rolls both containers onto it, records it and removes the archive", async () => {
    makeUpload(ID1, 1);
    writeCandidate();
    const archive = shipArchive(ID1);
    const res = await deploy(ID1, archiveArgs(ID1));
    console.log(`first deploy: ${(res.ms / 1000).toFixed(1)}s\n${log(res)}`);
    expect(res.code, log(res)).toBe(0);
    expect(res.stdout).toContain(`container-deploy.sh: release ${ID1} installed`);
    expect(res.stdout).toContain(`container-deploy.sh: release ${ID1} loaded (${images[ID1]!.id})`);
    expect(res.stderr).toContain(`container-network.sh: created network ${NETWORK} (${SUBNET}, gateway 10.89.81.1)`);
    expect(res.stderr).toMatch(/container-load\.sh: loading /);
    expect(res.stdout).toMatch(/app-rollout: \[2\/2\] fastapi-edge-container@\d+\.service healthy after/);

    // The release directory (nginx's static files) and the app link.
    expect(live()).toBe(path.join(base, "releases", ID1));
    expect(read(base, "app", "static", "release.txt")).toBe("release 1\n");
    expect(existsSync(path.join(base, "releases", ID1, "main.py"))).toBe(true);
    expect(existsSync(uploadPath(ID1))).toBe(false);

    // container.env: the candidate plus IMAGE, the candidate consumed.
    expect(read(etc, "container.env")).toBe(`${CANDIDATE}IMAGE=${IMAGE_REPO}:${ID1}\n`);
    expect(statSync(path.join(etc, "container.env")).mode & 0o777).toBe(0o644);
    expect(existsSync(path.join(etc, "container.env.candidate"))).toBe(false);

    // The image, tagged in this test's repository. (podman load also restores the tag the archive
    // names, the builder's localhost/fastapi-edge-app:ID1; afterAll removes the image with all its tags.)
    expect(imageIdOf(`${IMAGE_REPO}:${ID1}`)).toBe(images[ID1]!.id);
    expect(read(state, "container-releases")).toBe(`${ID1} ${images[ID1]!.id.slice("sha256:".length)}\n`);
    expect(podman(["network", "inspect", "--format", "{{range .Subnets}}{{.Subnet}}{{end}}", NETWORK]).out).toBe(SUBNET);

    // Both containers run it and answer.
    expect(containers().map((c) => `${c.image} ${c.name}`)).toEqual(ports.map(() => `${images[ID1]!.id} ${IMAGE_REPO}:${ID1}`));
    expect(await answers()).toEqual(serving(ID1, 1));

    // Recorded live; the archive and its directory gone.
    expect(read(state, "container-live")).toBe(`${ID1}\n`);
    expect(existsSync(archive)).toBe(false);
    expect(existsSync(path.dirname(archive))).toBe(false);
  }, 600_000);

  it("a re-run of the live release with its archive gone loads nothing and only rolls the containers again", async () => {
    const before = containers();
    writeCandidate();
    const res = await deploy(ID1, archiveArgs(ID1));
    console.log(`re-run: ${(res.ms / 1000).toFixed(1)}s\n${log(res)}`);
    expect(res.code, log(res)).toBe(0);
    expect(res.stdout).toContain(`container-deploy.sh: release ${ID1} already installed`);
    expect(res.stdout).toContain(`container-deploy.sh: release ${ID1} already loaded`);
    expect(res.stdout).not.toMatch(/ loaded \(sha256:/);
    expect(res.stderr).not.toContain("container-load.sh");
    expect(res.stderr).toContain(`container-network.sh: network ${NETWORK} (${SUBNET}, gateway 10.89.81.1) already exists`);
    expect(res.stdout).toMatch(/app-rollout: \[2\/2\] fastapi-edge-container@\d+\.service healthy after/);

    // Rolled: new containers, same image.
    const after = containers();
    for (let i = 0; i < ports.length; i++) expect(after[i]!.id).not.toBe(before[i]!.id);
    expect(after.map((c) => c.image)).toEqual(ports.map(() => images[ID1]!.id));
    expect(await answers()).toEqual(serving(ID1, 1));
    expect(read(etc, "container.env")).toBe(`${CANDIDATE}IMAGE=${IMAGE_REPO}:${ID1}\n`);
    expect(read(state, "container-live")).toBe(`${ID1}\n`);
    expect(read(state, "container-releases")).toBe(`${ID1} ${images[ID1]!.id.slice("sha256:".length)}\n`);
    expect(live()).toBe(path.join(base, "releases", ID1));
  }, 600_000);

  it("a damaged archive, or one holding another image, of a new release exits 1 before anything live changes", async () => {
    makeUpload(ID2, 2);
    const envBefore = read(etc, "container.env");
    const before = containers();

    // One byte flipped in transfer: its sha256 no longer matches.
    writeCandidate();
    const archive = shipArchive(ID2);
    flipByte(archive);
    const damaged = await deploy(ID2, archiveArgs(ID2));
    console.log(`damaged archive: ${log(damaged)}`);
    expect(damaged.code, log(damaged)).toBe(1);
    expect(damaged.stderr).toMatch(
      new RegExp(
        `container-load\\.sh: error: archive ${archive} has sha256 [0-9a-f]{64}, expected ${images[ID2]!.sha256} .*nothing loaded`,
      ),
    );

    // The genuine archive of release 2 with release 1's image id: not the image that was built.
    shipArchive(ID2);
    const other = await deploy(ID2, archiveArgs(ID2, { imageId: images[ID1]!.id }));
    console.log(`another image: ${log(other)}`);
    expect(other.code, log(other)).toBe(1);
    expect(other.stderr).toMatch(/container-load\.sh: error: image id mismatch: .*nothing loaded, no tag changed/);

    for (const r of [damaged, other]) {
      expect(r.stdout).not.toContain("loaded");
      expect(r.stdout).not.toContain("app-rollout");
    }
    // Nothing live changed: container.env, the app link, the record, the containers and what they serve.
    expect(read(etc, "container.env")).toBe(envBefore);
    expect(live()).toBe(path.join(base, "releases", ID1));
    expect(read(state, "container-live")).toBe(`${ID1}\n`);
    expect(read(state, "container-releases")).toBe(`${ID1} ${images[ID1]!.id.slice("sha256:".length)}\n`);
    expect(imageIdOf(`${IMAGE_REPO}:${ID2}`)).toBeNull();
    expect(imageIdOf(images[ID2]!.id)).toBeNull();
    expect(containers()).toEqual(before);
    expect(await answers()).toEqual(serving(ID1, 1));
    // The archive stays for a retry; the candidate stays unused.
    expect(existsSync(archive)).toBe(true);
    expect(existsSync(path.join(etc, "container.env.candidate"))).toBe(true);
  }, 600_000);

  it("the retry with the genuine archive goes live, and sweeps the uploads a refused release left beside its own", async () => {
    // Release ID9 was refused before it went live: its upload and image directories stayed for a retry.
    mkdirSync(path.join(uploadPath(ID9), "static"), { recursive: true });
    writeFileSync(path.join(uploadPath(ID9), "main.py"), "# release 9\n");
    mkdirSync(path.dirname(archivePath(ID9)));
    writeFileSync(archivePath(ID9), "not really an archive\n");
    // Not uploads of a release: another name, a suffix, another prefix.
    const unrelated = ["fastapi-edge-upload-notes", `fastapi-edge-image-${ID9}.keep`, `other-upload-${ID9}`];
    for (const f of unrelated) writeFileSync(path.join(dir, f), "keep\n");

    writeCandidate();
    const archive = shipArchive(ID2);
    const res = await deploy(ID2, archiveArgs(ID2));
    console.log(`second release: ${(res.ms / 1000).toFixed(1)}s\n${log(res)}`);
    expect(res.code, log(res)).toBe(0);
    // Installed by the refused attempt already (its upload consumed): the retry needs only the archive.
    expect(res.stdout).toContain(`container-deploy.sh: release ${ID2} already installed`);
    expect(res.stdout).toContain(`container-deploy.sh: release ${ID2} loaded (${images[ID2]!.id})`);
    expect(res.stderr).toMatch(/container-load\.sh: loading /);

    expect(await answers()).toEqual(serving(ID2, 2));
    expect(containers().map((c) => `${c.image} ${c.name}`)).toEqual(ports.map(() => `${images[ID2]!.id} ${IMAGE_REPO}:${ID2}`));
    expect(read(etc, "container.env")).toBe(`${CANDIDATE}IMAGE=${IMAGE_REPO}:${ID2}\n`);
    expect(live()).toBe(path.join(base, "releases", ID2));
    expect(read(base, "app", "static", "release.txt")).toBe("release 2\n");
    expect(readdirSync(path.join(base, "releases")).sort()).toEqual([ID1, ID2]);
    expect(read(state, "container-live")).toBe(`${ID2}\n`);
    // Release 1 stays loaded and tagged: a rollback loads nothing.
    expect(read(state, "container-releases")).toBe([ID1, ID2].map((id) => `${id} ${images[id]!.id.slice("sha256:".length)}\n`).join(""));
    expect(imageIdOf(`${IMAGE_REPO}:${ID1}`)).toBe(images[ID1]!.id);

    // The sweep: ID9's upload and image directory, and nothing else.
    const removed = res.stdout.split("\n").filter((l) => l.includes("removed the upload"));
    expect(removed).toEqual([
      `container-deploy.sh: removed the upload of release ${ID9} (not live)`,
      `container-deploy.sh: removed the upload of release ${ID9} (not live)`,
    ]);
    expect(existsSync(archive)).toBe(false);
    expect(readdirSync(dir).filter((f) => /^(fastapi-edge-|other-)/.test(f))).toEqual(unrelated.sort());
  }, 600_000);

  it("a re-run with the archive gone whose tag is not the --image-id given exits 1, changing nothing", async () => {
    // Release 2 is tagged (image 2) and its archive is gone: the step now names another image for it.
    const before = containers();
    const envBefore = read(etc, "container.env");
    writeCandidate();
    const res = await deploy(ID2, archiveArgs(ID2, { imageId: images[ID1]!.id }));
    console.log(`tag of another image: ${log(res)}`);
    expect(res.code, log(res)).toBe(1);
    expect(res.stderr).toContain(
      `container-deploy.sh: error: ${IMAGE_REPO}:${ID2} is image ${images[ID2]!.id}, not ${images[ID1]!.id}, and the archive ${archivePath(ID2)} is gone`,
    );
    expect(res.stdout).not.toContain("already loaded");
    expect(res.stdout).not.toContain("app-rollout");
    expect(read(etc, "container.env")).toBe(envBefore);
    expect(read(state, "container-live")).toBe(`${ID2}\n`);
    expect(containers()).toEqual(before);
    expect(await answers()).toEqual(serving(ID2, 2));
  }, 600_000);

  it("usage errors exit 64 and change nothing", async () => {
    const before = containers();
    writeCandidate();
    shipArchive(ID2);
    const cases: [string, string[]][] = [
      [
        "a release id that is not 16 hex digits",
        ["--release", "cde91", "--upload", uploadPath(ID2), ...archiveArgs(ID2), String(ports[0])],
      ],
      ["an upper-case release id", ["--release", ID2.toUpperCase(), "--upload", uploadPath(ID2), ...archiveArgs(ID2), String(ports[0])]],
      [
        "--archive without --sha256",
        ["--release", ID2, "--upload", uploadPath(ID2), "--archive", archivePath(ID2), "--image-id", images[ID2]!.id, String(ports[0])],
      ],
      [
        "--archive and --pull",
        ["--release", ID2, "--upload", uploadPath(ID2), ...archiveArgs(ID2), "--pull", `${IMAGE_REPO}@sha256:${"0".repeat(64)}`, "1"],
      ],
      ["a relative --upload", ["--release", ID2, "--upload", "upload", ...archiveArgs(ID2), String(ports[0])]],
      ["no port", ["--release", ID2, "--upload", uploadPath(ID2), ...archiveArgs(ID2)]],
      ["an unknown option", ["--release", ID2, "--upload", uploadPath(ID2), ...archiveArgs(ID2), "--force", String(ports[0])]],
    ];
    for (const [what, args] of cases) {
      const r = await run(script("container-deploy.sh"), args, { env: deployEnv() });
      expect(r.code, `${what}: ${log(r)}`).toBe(64);
      expect(r.stderr, what).toMatch(/^usage: container-deploy\.sh /m);
      expect(r.stdout, what).toBe("");
    }
    expect(containers()).toEqual(before);
    expect(read(state, "container-live")).toBe(`${ID2}\n`);
    expect(existsSync(archivePath(ID2))).toBe(true);
    expect(existsSync(path.join(etc, "container.env.candidate"))).toBe(true);
  }, 120_000);
});
