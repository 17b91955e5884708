// Helpers for the container runtime's live test (test/live/container.test.ts):
// what this machine lacks for podman (with the reason, for skipping), the
// podman settings it needs, building the app image, and a network namespace
// peer to connect from an address other than 127.0.0.1.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "./proc";

export const BUILD_APP_IMAGE = path.join(REPO_ROOT, "scripts", "build-app-image.sh");
/** A cold build runs debootstrap (about 40 s on a fast mirror, minutes on a slow one). */
export const IMAGE_BUILD_TIMEOUT_MS = 20 * 60_000;

function onPath(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/** Why the container test cannot run here, or null when it can. */
export function containerPrerequisiteMissing(): string | null {
  if (process.getuid?.() !== 0) return "needs root (podman's root storage and networks, debootstrap, ip netns)";
  if (!onPath("podman")) return "podman is not installed (apt-get install podman runc)";
  if (!onPath("debootstrap") && !existsSync("/usr/sbin/debootstrap")) return "debootstrap is not installed";
  if (!onPath("ip")) return "iproute2 (ip) is not installed";
  if (!onPath("curl")) return "curl is not installed";
  return null;
}

function hardLimit(name: string): number | null {
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((l) => l.startsWith(name));
  if (line === undefined) return null;
  const hard = line.slice(26).trim().split(/\s+/)[1];
  return hard === undefined || hard === "unlimited" ? null : Number.parseInt(hard, 10);
}

export interface PodmanSetup {
  /** Environment for every podman call (CONTAINERS_CONF when a fallback was needed). */
  env: Record<string, string>;
  /** What was needed and why (printed by the test). */
  notes: string[];
}

function tryRun(image: string, env: Record<string, string>): { ok: boolean; output: string } {
  const r = spawnSync("podman", ["run", "--rm", "--network", "none", image, "--version"], {
    encoding: "utf8",
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
  return { ok: r.status === 0, output: `${r.stdout ?? ""}${r.stderr ?? ""}`.trim() };
}

/**
 * Podman's defaults first; when they cannot start a container here, a
 * containers.conf (in DIR) for the two limits of a sandbox like this one
 * (measured: docs/containers.md): crun refuses a cgroup v1/v2 hybrid host
 * ("cgroups in hybrid mode not supported"), so runc; and root lacks
 * CAP_SYS_RESOURCE, so the containers' rlimits must stay within the caller's
 * hard limits (podman's defaults raise nofile/nproc: "setrlimit RLIMIT_NOFILE:
 * Operation not permitted"). A real host (systemd, cgroup v2) needs neither.
 */
export function podmanSetup(image: string, dir: string): PodmanSetup {
  const first = tryRun(image, {});
  if (first.ok) return { env: {}, notes: [`podman defaults run containers: ${first.output}`] };
  mkdirSync(dir, { recursive: true });
  const conf = path.join(dir, "containers.conf");
  const nofile = hardLimit("Max open files") ?? 65536;
  const nproc = Math.min(hardLimit("Max processes") ?? 4096, 4096);
  writeFileSync(
    conf,
    [
      "[containers]",
      `default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]`,
      "[engine]",
      'runtime = "runc"',
      "",
    ].join("\n"),
  );
  const env = { CONTAINERS_CONF: conf };
  const second = tryRun(image, env);
  if (!second.ok) {
    throw new Error(
      `podman cannot run a container here.\nwith its defaults: ${first.output}\nwith runc + rlimits ${nofile}/${nproc}: ${second.output}`,
    );
  }
  return {
    env,
    notes: [
      `podman defaults fail here: ${first.output.split("\n").pop() ?? ""}`,
      `using ${conf}: runtime runc, nofile ${nofile}, nproc ${nproc}: ${second.output}`,
    ],
  };
}

export interface BuiltImage {
  ref: string;
  id: string;
  archive: string;
  sha256: string;
  baseBuilt: boolean;
  seconds: number;
}

/**
 * scripts/build-app-image.sh --out ARCHIVE [--app-dir DIR] RELEASE; its KEY=VALUE lines parsed.
 * Asynchronous: a cold build (debootstrap) can take over a minute, and a synchronous call that
 * long blocks the vitest worker until the run fails ("Timeout calling onTaskUpdate").
 */
export async function buildAppImage(
  release: string,
  archive: string,
  env: Record<string, string> = {},
  appDir?: string,
): Promise<BuiltImage> {
  const args = ["--out", archive, ...(appDir === undefined ? [] : ["--app-dir", appDir]), release];
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn("bash", [BUILD_APP_IMAGE, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] });
    let text = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), IMAGE_BUILD_TIMEOUT_MS);
    child.stdout.on("data", (d: Buffer) => (text += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(text);
      else reject(new Error(`build-app-image.sh ${args.join(" ")} exited ${code}:\n${text}`));
    });
  });
  const kv = parseKeyValues(out);
  const need = (k: string): string => {
    const v = kv[k];
    if (v === undefined) throw new Error(`build-app-image.sh printed no ${k}:\n${out}`);
    return v;
  };
  return {
    ref: need("IMAGE_REF"),
    id: need("IMAGE_ID"),
    archive: need("IMAGE_ARCHIVE"),
    sha256: need("IMAGE_SHA256"),
    baseBuilt: need("BASE_BUILT") === "1",
    seconds: Number(need("BUILD_SECONDS")),
  };
}

export function parseKeyValues(text: string): Record<string, string> {
  const kv: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) kv[m[1]!] = m[2]!;
  }
  return kv;
}

/**
 * A network namespace joined to the host by a veth pair: the host side gets
 * HOST/24, the namespace PEER/24 with its default route via HOST. HOST is then
 * another local address of this machine, and the namespace a client that is
 * not this machine.
 */
export interface NetnsPeer {
  name: string;
  hostAddr: string;
  peerAddr: string;
  /** Run argv inside the namespace. */
  exec(argv: string[]): { status: number | null; output: string };
  remove(): void;
}

export function createNetnsPeer(name: string, hostAddr: string, peerAddr: string): NetnsPeer {
  const hostIf = `${name}-h`.slice(0, 15);
  const peerIf = `${name}-p`.slice(0, 15);
  const ip = (...args: string[]): void => {
    execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
  };
  const remove = (): void => {
    spawnSync("ip", ["link", "del", hostIf], { stdio: "ignore" });
    spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
  };
  remove();
  ip("netns", "add", name);
  ip("link", "add", hostIf, "type", "veth", "peer", "name", peerIf);
  ip("link", "set", peerIf, "netns", name);
  ip("addr", "add", `${hostAddr}/24`, "dev", hostIf);
  ip("link", "set", hostIf, "up");
  ip("-n", name, "addr", "add", `${peerAddr}/24`, "dev", peerIf);
  ip("-n", name, "link", "set", peerIf, "up");
  ip("-n", name, "link", "set", "lo", "up");
  ip("-n", name, "route", "add", "default", "via", hostAddr);
  return {
    name,
    hostAddr,
    peerAddr,
    exec(argv: string[]) {
      const r = spawnSync("ip", ["netns", "exec", name, ...argv], { encoding: "utf8", timeout: 30_000 });
      return { status: r.status, output: `${r.stdout ?? ""}${r.stderr ?? ""}` };
    },
    remove,
  };
}

/** curl argv: print the body then "\n<http code>"; -sS so errors are readable. */
export function curlArgs(url: string, headers: Record<string, string> = {}): string[] {
  const h = Object.entries(headers).flatMap(([k, v]) => ["-H", `${k}: ${v}`]);
  return ["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", ...h, url];
}

export const FAKE_SYSTEMCTL_CONTAINER = path.join(REPO_ROOT, "test", "helpers", "fake-systemctl-container.sh");
export const CONTAINER_UNIT_FILE = path.join(REPO_ROOT, "files", "systemd", "fastapi-edge-container@.service");

/**
 * Environment for fake-systemctl-container.sh (and app-rollout.sh driving it
 * with UNIT_TEMPLATE=fastapi-edge-container): the fake's state dir, the unit
 * file whose ExecStop/ExecStopPost it runs, run-container.sh, and podman's
 * settings (`podmanEnv`, e.g. CONTAINERS_CONF). `extra` (IMAGE, APP_VERSION,
 * CONTAINER_NETWORK: what container.env holds) goes on top.
 */
export function fakeContainerSystemdEnv(
  state: string,
  podmanEnv: Record<string, string>,
  extra: Record<string, string> = {},
): NodeJS.ProcessEnv {
  return {
    ...process.env,
    ...podmanEnv,
    SYSTEMCTL: FAKE_SYSTEMCTL_CONTAINER,
    JOURNALCTL: path.join(REPO_ROOT, "test", "helpers", "fake-journalctl.sh"),
    UNIT_TEMPLATE: "fastapi-edge-container",
    FAKE_STATE: state,
    FAKE_UNIT_FILE: CONTAINER_UNIT_FILE,
    FAKE_RUN_CONTAINER: path.join(REPO_ROOT, "files", "scripts", "run-container.sh"),
    ...extra,
  };
}
