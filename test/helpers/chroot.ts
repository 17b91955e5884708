// Cached Debian chroots with newer tools (scripts/get-chroot.sh): the specs the
// tests share, so every test asks for the same cache entry with the same
// package list (a different list would rebuild the entry), and running a
// program inside one with a clean environment.
import { execFileSync, spawnSync } from "node:child_process";
import * as path from "node:path";

export const GET_CHROOT = path.resolve(__dirname, "..", "..", "scripts", "get-chroot.sh");
export const SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";
/** A first build runs debootstrap (minutes); later calls take well under a second. */
export const CHROOT_BUILD_TIMEOUT_MS = 20 * 60_000;

export interface ChrootSpec {
  name: string;
  suite: string;
  packages: readonly string[];
}

/** Debian unstable: nginx 1.30, OpenSSL 3.6, certbot 5.5, pebble 2.10. */
export const EDGE_SID: ChrootSpec = {
  name: "edge-sid",
  suite: "sid",
  packages: ["nginx", "openssl", "curl", "ca-certificates", "certbot", "pebble"],
};

/** Debian 13: nginx 1.26, OpenSSL 3.5, certbot 4.0, pebble 2.6. */
export const EDGE_TRIXIE: ChrootSpec = {
  name: "edge-trixie",
  suite: "trixie",
  packages: ["nginx", "openssl", "curl", "ca-certificates", "certbot", "pebble"],
};

/** The chroot's path, built first when missing (progress on stderr). */
export function getChroot(spec: ChrootSpec): string {
  const out = execFileSync("bash", [GET_CHROOT, spec.name, spec.suite, ...spec.packages], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    timeout: CHROOT_BUILD_TIMEOUT_MS,
  });
  const lines = out.split("\n").filter((l) => l.trim() !== "");
  const root = lines[lines.length - 1] ?? "";
  if (!root.startsWith("/")) throw new Error(`get-chroot.sh ${spec.name} printed no chroot path:\n${out}`);
  return root;
}

export interface ChrootRun {
  status: number | null;
  /** stdout followed by stderr. */
  output: string;
}

/** Run a program inside the chroot with a clean environment. */
export function inChroot(root: string, argv: string[], env: Record<string, string> = {}): ChrootRun {
  const r = spawnSync(
    "chroot",
    [root, "/usr/bin/env", "-i", `PATH=${SYSTEM_PATH}`, "LANG=C.UTF-8", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv],
    {
      encoding: "utf8",
    },
  );
  if (r.error) throw r.error;
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** "1.30.6" from `nginx -v` output. */
export function nginxVersionOf(text: string): string {
  const m = /nginx\/([0-9]+\.[0-9]+\.[0-9]+)/.exec(text);
  if (!m) throw new Error(`no nginx version in: ${text}`);
  return m[1]!;
}
