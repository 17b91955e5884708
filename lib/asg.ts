// albAutoScaling (components/asg.ts): the release bundle the instances fetch
// from S3, and the launch template's user data. The bundle is a gzipped tar
// built here byte for byte (sorted entries, fixed owner, mode and mtime), so
// the same files always give the same bytes, the same sha256 and no diff.
// Pure: no Pulumi import (it reads the release's files).
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import * as path from "node:path";
import { gzipSync } from "node:zlib";
import { HostScript } from "./hostfiles";
import { shipped } from "./shipped";

export interface BundleEntry {
  /** Relative path inside the bundle (no leading /, no ..). */
  path: string;
  content: Buffer;
  mode: number;
}

const BLOCK = 512;

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, "0") + "\0";
}

/** One ustar header: name (split into prefix/name past 100 bytes), mode, size; owner root, mtime 0. */
function tarHeader(name: string, size: number, mode: number): Buffer {
  const h = Buffer.alloc(BLOCK, 0);
  let prefix = "";
  let base = name;
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf("/", 155);
    if (cut <= 0 || Buffer.byteLength(name.slice(cut + 1)) > 100) throw new Error(`path too long for a tar header: ${name}`);
    prefix = name.slice(0, cut);
    base = name.slice(cut + 1);
  }
  h.write(base, 0, 100, "utf8");
  h.write(octal(mode, 8), 100, 8, "ascii");
  h.write(octal(0, 8), 108, 8, "ascii"); // uid
  h.write(octal(0, 8), 116, 8, "ascii"); // gid
  h.write(octal(size, 12), 124, 12, "ascii");
  h.write(octal(0, 12), 136, 12, "ascii"); // mtime
  h.write("        ", 148, 8, "ascii"); // checksum placeholder
  h.write("0", 156, 1, "ascii"); // regular file
  h.write("ustar\0", 257, 6, "ascii");
  h.write("00", 263, 2, "ascii");
  h.write("root", 265, 32, "ascii");
  h.write("root", 297, 32, "ascii");
  h.write(prefix, 345, 155, "utf8");
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8, "ascii");
  return h;
}

/** A gzipped ustar archive of the entries, sorted by path: the same entries always give the same bytes. */
export function tarGz(entries: BundleEntry[]): Buffer {
  const parts: Buffer[] = [];
  const seen = new Set<string>();
  for (const e of [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    if (e.path.startsWith("/") || e.path.split("/").includes("..") || !e.path)
      throw new Error(`unsafe bundle path ${JSON.stringify(e.path)}`);
    if (seen.has(e.path)) throw new Error(`bundle path ${e.path} given twice`);
    seen.add(e.path);
    parts.push(tarHeader(e.path, e.content.length, e.mode), e.content);
    const pad = (BLOCK - (e.content.length % BLOCK)) % BLOCK;
    if (pad) parts.push(Buffer.alloc(pad, 0));
  }
  parts.push(Buffer.alloc(2 * BLOCK, 0));
  return gzipSync(Buffer.concat(parts), { level: 9 });
}

/** Every file under dir as entries under prefix/ (dot files and __pycache__ skipped, as treeHash does); executables keep 0755. */
export function dirEntries(dir: string, prefix: string): BundleEntry[] {
  const out: BundleEntry[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d).sort()) {
      if (e === "__pycache__" || e.startsWith(".")) continue;
      const p = path.join(d, e);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else
        out.push({
          path: `${prefix}/${path.relative(dir, p).split(path.sep).join("/")}`,
          content: readFileSync(p),
          mode: st.mode & 0o111 ? 0o755 : 0o644,
        });
    }
  };
  walk(dir);
  return out;
}

/**
 * The host scripts an instance runs from the bundle: app-deploy.sh (with release-lib.sh
 * and app-rollout.sh) installs the release and starts the processes, run-app.sh is the
 * units' ExecStart, ensure-user.sh creates the app's user. Packages are installed by the
 * user data itself: install-packages.sh waits for cloud-init, which is running it.
 */
export const BUNDLE_SCRIPTS: readonly HostScript[] = ["app-deploy.sh", "release-lib.sh", "app-rollout.sh", "run-app.sh", "ensure-user.sh"];

/**
 * The release bundle: app/ (the app tree), wheels/ (the wheelhouse, when configured),
 * bin/ (BUNDLE_SCRIPTS) and systemd/ (the app's unit template). Settings stay out of it
 * (they are the user data's), so it changes only with the release's files.
 */
export function releaseBundle(appDir: string, wheelhouse: string | undefined): { archive: Buffer; sha256: string } {
  const entries: BundleEntry[] = [
    ...dirEntries(appDir, "app"),
    ...(wheelhouse ? dirEntries(wheelhouse, "wheels") : []),
    ...BUNDLE_SCRIPTS.map((s) => ({ path: `bin/${s}`, content: Buffer.from(shipped(`scripts/${s}`)), mode: 0o755 })),
    { path: "systemd/fastapi-edge-app@.service", content: Buffer.from(shipped("systemd/fastapi-edge-app@.service")), mode: 0o644 },
  ];
  const archive = tarGz(entries);
  return { archive, sha256: createHash("sha256").update(archive).digest("hex") };
}

/** The S3 key of a release's bundle. */
export function releaseKey(release: string): string {
  if (!/^[0-9a-f]{16}$/.test(release)) throw new Error(`release id must be 16 hex digits (got ${JSON.stringify(release)})`);
  return `releases/${release}.tar.gz`;
}

/** The user data's settings, in the order they are written (asg-user-data.sh documents each). */
export interface UserDataSettings {
  RELEASE_ID: string;
  RELEASE_URL: string;
  RELEASE_SHA256: string;
  RELEASE_VERSION_ID: string;
  S3_REGION: string;
  PACKAGES: string;
  APP_PORTS: string;
  HEALTH_PATH: string;
  APP_VERSION: string;
  HEALTH_TIMEOUT: string;
  DEPLOY_ARGS: string;
  APP_ENV: string;
}

/** EC2's limit on user data (before base64). */
export const USER_DATA_MAX_BYTES = 16384;

const SHEBANG = "#!/usr/bin/env bash\n";

/**
 * files/scripts/asg-user-data.sh with the settings written in as single-quoted
 * assignments right after its first line. A value holding a single quote is
 * refused (config validation keeps them out; this is the second line of defence).
 */
export function renderUserData(s: UserDataSettings): string {
  const script = shipped("scripts/asg-user-data.sh");
  if (!script.startsWith(SHEBANG)) throw new Error("asg-user-data.sh must start with #!/usr/bin/env bash");
  const lines = Object.entries(s).map(([k, v]) => {
    if (v.includes("'") || v.includes("\0")) throw new Error(`refusing to put ${k} ${JSON.stringify(v)} into the user data`);
    return `${k}='${v}'`;
  });
  const text = [
    SHEBANG.trimEnd(),
    "# --- settings rendered by fastapi-edge (components/asg.ts) for this launch template version",
    ...lines,
    "# --- end of settings",
    script.slice(SHEBANG.length),
  ].join("\n");
  if (Buffer.byteLength(text) > USER_DATA_MAX_BYTES) {
    throw new Error(`the user data is ${Buffer.byteLength(text)} bytes, over EC2's limit of ${USER_DATA_MAX_BYTES}`);
  }
  return text;
}
