// files/scripts/nginx-org-repo.sh run for real, as root, inside a Debian 13
// chroot that has the distribution's nginx 1.26 installed, against a signed
// apt repository laid out like nginx.org's and served on 127.0.0.1.
//
// nginx.org cannot be reached here, so the repository is a local stand-in
// (test/helpers/make-apt-repo.sh): Debian unstable's nginx 1.30.6 packages
// (nginx, nginx-common, and the libpcre2 it needs; downloaded once with apt
// and cached), Origin/Label "nginx" as nginx.org's Release has, signed with a
// throwaway key; the script gets that URL and key through NGINX_ORG_URL and
// its KEYFILE argument, as it gets nginx.org's shipped keys in production.
// Unlike nginx.org's single `nginx` package (which conflicts with Debian's
// nginx-common), Debian's packages upgrade nginx-common along with nginx.
//
// Proven: the source line with signed-by and the dearmored keyring, the pin
// choosing 1.30.6 from the repository over the distribution's 1.26 (-1),
// nginx 1.30 installed in place of the distribution's, a second run changing
// nothing (no apt-get update, no file rewritten), the site rendered for
// nginxSource nginx.org (user nginx, no modules-enabled, keepalive_min_timeout)
// accepted by that nginx through nginx-apply.sh --check over the package's
// /etc/nginx, and a repository not signed by the shipped key refused.
//
// The working chroot is a scratch copy of a cached Debian 13 minbase chroot
// (scripts/get-chroot.sh keepalive-trixie-base trixie ca-certificates), removed
// afterwards. Needs root (chroot) and the Debian mirror (apt-get update).
// Port 22460-22469 on 127.0.0.1.
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { homedir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../lib/config";
import { siteFiles } from "../../lib/hostfiles";
import { CHROOT_BUILD_TIMEOUT_MS, ChrootSpec, getChroot, inChroot } from "../helpers/chroot";
import { makeCa } from "../helpers/nginx-fixture";
import { freePortsInRange, REPO_ROOT, startProcess, stopPid, waitForPort, type StartedProcess } from "../helpers/proc";

const BASE: ChrootSpec = { name: "keepalive-trixie-base", suite: "trixie", packages: ["ca-certificates"] };
const CACHE = process.env.FASTAPI_EDGE_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), ".cache"), "fastapi-edge");
const DEBS_CACHE = path.join(CACHE, "keepalive-sid-nginx-debs");
const SID_PACKAGES = ["nginx", "nginx-common", "libpcre2-8-0"];
const SCRIPT = path.join(REPO_ROOT, "files", "scripts", "nginx-org-repo.sh");
const MAKE_REPO = path.join(REPO_ROOT, "test", "helpers", "make-apt-repo.sh");
const APT_ENV = { DEBIAN_FRONTEND: "noninteractive" };

const KEYRING = "/etc/apt/keyrings/fastapi-edge-nginx-org.gpg";
const SOURCES = "/etc/apt/sources.list.d/fastapi-edge-nginx-org.list";
const PREFS = "/etc/apt/preferences.d/fastapi-edge-nginx-org.pref";

let work = ""; // the scratch chroot
let repo = ""; // the repository's directory on the host
let port = 0;
let server: StartedProcess | null = null;

function must(r: { status: number | null; output: string }, what: string): string {
  if (r.status !== 0) throw new Error(`${what} failed (${r.status}):\n${r.output}`);
  return r.output;
}

/** Debian unstable's nginx 1.30 .debs, downloaded with apt inside the scratch chroot once, then cached. */
function sidDebs(): string {
  if (existsSync(DEBS_CACHE) && readdirSync(DEBS_CACHE).filter((f) => f.endsWith(".deb")).length === SID_PACKAGES.length) return DEBS_CACHE;
  const d = "/tmp/fe-sid";
  mkdirSync(path.join(work, d, "lists", "partial"), { recursive: true });
  mkdirSync(path.join(work, d, "cache", "archives", "partial"), { recursive: true });
  mkdirSync(path.join(work, d, "debs"), { recursive: true });
  writeFileSync(path.join(work, d, "sources.list"), "deb http://deb.debian.org/debian sid main\n");
  const o = [
    `-o Dir::Etc::SourceList=${d}/sources.list`,
    `-o Dir::Etc::SourceParts=${d}/none`,
    `-o Dir::State::Lists=${d}/lists`,
    `-o Dir::Cache=${d}/cache`,
  ].join(" ");
  must(
    inChroot(work, ["sh", "-c", `apt-get -q ${o} update && cd ${d}/debs && apt-get -q ${o} download ${SID_PACKAGES.join(" ")}`]),
    "download sid's nginx",
  );
  const tmp = mkdtempSync(`${DEBS_CACHE}.tmp-`);
  cpSync(path.join(work, d, "debs"), tmp, { recursive: true });
  rmSync(DEBS_CACHE, { recursive: true, force: true });
  renameSync(tmp, DEBS_CACHE);
  rmSync(path.join(work, d), { recursive: true, force: true });
  return DEBS_CACHE;
}

/** Run nginx-org-repo.sh inside the scratch chroot against the local repository. */
function runScript(keyFile: string): { status: number | null; output: string } {
  mkdirSync(path.join(work, "tmp", "fe"), { recursive: true });
  writeFileSync(path.join(work, "tmp", "fe", "nginx-org-repo.sh"), readFileSync(SCRIPT));
  writeFileSync(path.join(work, "tmp", "fe", "key.asc"), readFileSync(keyFile));
  return inChroot(work, ["bash", "/tmp/fe/nginx-org-repo.sh", "1.30", "/tmp/fe/key.asc"], {
    ...APT_ENV,
    NGINX_ORG_URL: `http://127.0.0.1:${port}/packages`,
  });
}

function fileState(p: string): { sha256: string; mtimeMs: number } {
  const f = path.join(work, p);
  return { sha256: createHash("sha256").update(readFileSync(f)).digest("hex"), mtimeMs: statSync(f).mtimeMs };
}

function installedVersion(pkg: string): string {
  return must(inChroot(work, ["dpkg-query", "-W", "-f=${Version}", pkg]), `dpkg-query ${pkg}`).trim();
}

describe("nginx-org-repo.sh in a Debian 13 chroot, against a signed local stand-in for nginx.org", () => {
  beforeAll(async () => {
    const base = getChroot(BASE);
    work = mkdtempSync("/var/tmp/fe-aptrepo-");
    cpSync(base, work, { recursive: true, verbatimSymlinks: true });
    // The distribution's nginx first, as on a host deployed with nginxSource distribution.
    must(
      inChroot(work, ["sh", "-c", "apt-get -q update && apt-get -q -y install --no-install-recommends nginx"], APT_ENV),
      "install Debian's nginx",
    );
    expect(installedVersion("nginx")).toMatch(/^1\.26\./);

    repo = mkdtempSync("/var/tmp/fe-repo-");
    execFileSync("bash", [MAKE_REPO, sidDebs(), repo, "debian", "trixie"], { stdio: "pipe" });
    [port] = await freePortsInRange(1, 22460, 22469);
    server = startProcess("python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", repo]);
    await waitForPort(port!, 15_000, "127.0.0.1", server);
  }, CHROOT_BUILD_TIMEOUT_MS + 300_000);

  afterAll(async () => {
    if (server) await stopPid(server.pid);
    if (work) {
      // Never recurse into a mount (a /proc left mounted by an interrupted run).
      spawnSync("umount", [path.join(work, "proc")], { stdio: "ignore" });
      execFileSync("rm", ["-rf", "--one-file-system", work]);
    }
    if (repo) rmSync(repo, { recursive: true, force: true });
  });

  it("first run: signed-by source, dearmored keyring, pin; nginx 1.30 replaces the distribution's 1.26", () => {
    const r = runScript(path.join(repo, "key.asc"));
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(
      /nginx-org-repo\.sh: installing nginx 1\.30\.6-\S+ from http:\/\/127\.0\.0\.1:\d+\/packages\/debian \(installed: 1\.26\./,
    );
    expect(installedVersion("nginx")).toMatch(/^1\.30\.6-/);
    expect(must(inChroot(work, ["/usr/sbin/nginx", "-v"]), "nginx -v")).toContain("nginx/1.30.6");

    expect(readFileSync(path.join(work, SOURCES), "utf8")).toContain(
      `deb [signed-by=${KEYRING}] http://127.0.0.1:${port}/packages/debian trixie nginx\n`,
    );
    // The keyring is the key file dearmored (gpg agrees byte for byte).
    const dearmored = execFileSync("gpg", ["--dearmor"], { input: readFileSync(path.join(repo, "key.asc")) });
    expect(readFileSync(path.join(work, KEYRING)).equals(dearmored)).toBe(true);
    const prefs = readFileSync(path.join(work, PREFS), "utf8");
    expect(prefs).toMatch(/^Pin: release o=Debian\nPin-Priority: -1$/m);
    expect(prefs).toMatch(/^Package: nginx\nPin: version 1\.30\.\*\nPin-Priority: 900$/m);

    // apt's view: the repository's 1.30.6 at 900, the distribution's 1.26 refused (-1).
    const policy = must(inChroot(work, ["apt-cache", "policy", "nginx"]), "apt-cache policy");
    expect(policy).toMatch(/Candidate: 1\.30\.6-/);
    expect(policy).toMatch(/\*\*\* 1\.30\.6-\S+ 900\n\s+500 http:\/\/127\.0\.0\.1:\d+\/packages\/debian trixie\/nginx amd64 Packages/);
    expect(policy).toMatch(/ 1\.26\.\S+ -1\n\s+500 http:\/\/deb\.debian\.org\/debian trixie\/main amd64 Packages/);
    console.log(`nginx-org-repo.sh first run: nginx ${installedVersion("nginx")}\n${policy.trim()}`);
  }, 300_000);

  it("second run changes nothing: no apt-get update, no install, no file rewritten", () => {
    const before = [KEYRING, SOURCES, PREFS].map(fileState);
    const dpkgBefore = fileState("/var/lib/dpkg/status");
    const r = runScript(path.join(repo, "key.asc"));
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/nginx 1\.30\.6-\S+ from the pinned 1\.30 line is installed; nothing to do/);
    expect(r.output).not.toMatch(/apt-get update|installing|wrote/);
    expect([KEYRING, SOURCES, PREFS].map(fileState)).toEqual(before);
    expect(fileState("/var/lib/dpkg/status")).toEqual(dpkgBefore);
  }, 300_000);

  it("the site rendered for nginxSource nginx.org passes nginx-apply.sh --check on the installed nginx 1.30 over the package's /etc/nginx", () => {
    // nginx.org's package creates the user its workers run as; Debian's stand-in does not.
    if (inChroot(work, ["id", "nginx"]).status !== 0)
      must(inChroot(work, ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "nginx"]), "useradd nginx");
    const c = parseConfig({ domain: "api.example.test", email: "ops@example.test", nginxSource: "nginx.org" });
    const stage = path.join(work, "tmp", "fe", "stage");
    for (const f of siteFiles(c).stage) {
      mkdirSync(path.dirname(path.join(stage, f.path)), { recursive: true });
      writeFileSync(path.join(stage, f.path), f.content);
    }
    const ca = makeCa(path.join(work, "tmp", "fe", "ca"), [c.domain]);
    const live = path.join(work, "etc", "letsencrypt", "live", c.domain);
    mkdirSync(live, { recursive: true });
    writeFileSync(path.join(live, "fullchain.pem"), readFileSync(ca.cert));
    writeFileSync(path.join(live, "privkey.pem"), readFileSync(ca.key));
    const bin = path.join(work, "tmp", "fe", "bin");
    mkdirSync(bin, { recursive: true });
    for (const sh of ["nginx-apply.sh", "nginx-reload.sh"]) {
      writeFileSync(path.join(bin, sh), readFileSync(path.join(REPO_ROOT, "files", "scripts", sh)), { mode: 0o755 });
    }
    // nginx-apply.sh reads process substitutions (/dev/fd -> /proc/self/fd): /proc for this run only.
    const proc = path.join(work, "proc");
    execFileSync("mount", ["-t", "proc", "proc", proc]);
    let r: { status: number | null; output: string };
    try {
      r = inChroot(work, ["bash", "/tmp/fe/bin/nginx-apply.sh", "--check", "/tmp/fe/stage"], { STATE_DIR: "/tmp/fe/state" });
    } finally {
      execFileSync("umount", [proc]);
    }
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/candidate config OK \(nginx -t\)/);
    const conf = readFileSync(path.join(stage, "conf", "nginx.conf"), "utf8");
    expect(conf).toMatch(/^user nginx;$/m);
    expect(conf).not.toMatch(/modules-enabled/);
    expect(readFileSync(path.join(stage, "conf", "fastapi-edge", "http.conf"), "utf8")).toMatch(/^keepalive_min_timeout 5s;$/m);
  }, 120_000);

  it("a key that did not sign the repository: apt refuses it and the script fails saying so", () => {
    // A second throwaway key, not the repository's.
    const home = mkdtempSync("/var/tmp/fe-gpg-");
    try {
      const env = { ...process.env, GNUPGHOME: home };
      execFileSync(
        "gpg",
        [
          "-q",
          "--batch",
          "--pinentry-mode",
          "loopback",
          "--passphrase",
          "",
          "--quick-gen-key",
          "other <o@fastapi-edge.test>",
          "ed25519",
          "sign",
          "1d",
        ],
        { env, stdio: "pipe" },
      );
      const other = path.join(home, "other.asc");
      writeFileSync(other, execFileSync("gpg", ["-q", "--batch", "--armor", "--export"], { env }));
      const r = runScript(other);
      expect(r.status).toBe(1);
      expect(r.output).toMatch(/wrote \/etc\/apt\/keyrings\/fastapi-edge-nginx-org\.gpg/);
      expect(r.output).toMatch(/NO_PUBKEY|not signed|Missing key|signatures couldn't be verified|is not signed/i);
      expect(r.output).toContain("nginx-org-repo.sh: error: apt-get update failed");
      console.log(
        `wrong key refused:\n${r.output
          .split("\n")
          .filter((l) => /127\.0\.0\.1|error/.test(l))
          .join("\n")}`,
      );
    } finally {
      spawnSync("gpgconf", ["--kill", "all"], { env: { ...process.env, GNUPGHOME: home } });
      rmSync(home, { recursive: true, force: true });
    }
  }, 300_000);
});
