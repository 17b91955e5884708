// nginxSource: nginx.org — the shipped signing keys, the config rules, what the
// renderer and bootstrap-install produce for it, and nginx-org-repo.sh's
// refusals (which exit before touching anything, so they run here as any
// user). The repository setup itself runs for real in a chroot:
// test/live/nginx-org-repo.test.ts.
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig, targetNginxVersion } from "../../lib/config";
import { bootstrapCommands, NGINX_ORG_KEYS_FILE, nginxSourceFiles, renderHostFiles } from "../../lib/hostfiles";
import { NGINX_ORG_STABLE } from "../../lib/hostos";
import { HOST_PATHS, hostLayout } from "../../lib/hostpaths";
import { FILES_DIR } from "../../lib/shipped";

const base = { domain: "api.example.com", email: "ops@example.com" };
const KEYS = path.join(FILES_DIR, NGINX_ORG_KEYS_FILE);
const SCRIPT = path.join(FILES_DIR, "scripts", "nginx-org-repo.sh");

/** The fingerprints nginx.org publishes for its package signing keys (nginx.org/en/linux_packages.html). */
const PUBLISHED = [
  "573BFD6B3D8FBC641079A6ABABF5BD827BD9BF62", // signing-key@nginx.com, RSA-2048, 2011
  "8540A6F18833A80E9C1653A42FD21310B49F6B46", // signing-key-2@nginx.com, RSA-4096, 2024
  "9E9BE90EACBCDE69FE9B204CBCDCD8A38D88A2B3", // signing-key-3@nginx.com, RSA-4096, 2024
];

function errorOf(raw: Record<string, unknown>): string {
  try {
    parseConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.message;
    throw e;
  }
  throw new Error("config was accepted");
}

describe("nginx.org's signing keys (files/apt/nginx-org-signing-keys.asc)", () => {
  it("hold exactly the keys nginx.org publishes, with valid self-signatures, at least one not expired", () => {
    // A throwaway GNUPGHOME: --show-keys reads the file and imports nothing.
    const home = spawnSync("mktemp", ["-d"], { encoding: "utf8" }).stdout.trim();
    try {
      const r = spawnSync("gpg", ["--show-keys", "--with-colons", KEYS], { encoding: "utf8", env: { ...process.env, GNUPGHOME: home } });
      expect(r.status, r.stderr).toBe(0);
      const lines = r.stdout.split("\n");
      const fprs = lines.filter((l) => l.startsWith("fpr:")).map((l) => l.split(":")[9]);
      expect(fprs.sort()).toEqual([...PUBLISHED].sort());
      // pub:VALIDITY:...:CREATED:EXPIRES:... — "e" expired, "r" revoked; every key has a user id.
      const pubs = lines.filter((l) => l.startsWith("pub:")).map((l) => l.split(":"));
      expect(pubs).toHaveLength(3);
      const now = Date.now() / 1000;
      const usable = pubs.filter((p) => p[1] !== "e" && p[1] !== "r" && (p[6] === "" || Number(p[6]) > now));
      expect(usable.length).toBeGreaterThanOrEqual(1);
      expect(lines.filter((l) => l.startsWith("uid:")).map((l) => l.split(":")[9])).toEqual([
        "nginx signing key <signing-key-2@nginx.com>",
        "nginx signing key <signing-key@nginx.com>",
        "nginx signing key <signing-key-3@nginx.com>",
      ]);
    } finally {
      spawnSync("rm", ["-rf", home]);
    }
  });
});

describe("config", () => {
  it("defaults to the distribution's nginx", () => {
    const c = parseConfig(base);
    expect(c.nginxSource).toBe("distribution");
    expect(targetNginxVersion(c)).toBe("1.26");
  });

  it("nginx.org targets the pinned stable line on every host OS", () => {
    for (const hostOs of ["debian-13", "debian-12", "ubuntu-24.04"]) {
      expect(targetNginxVersion(parseConfig({ ...base, hostOs, nginxSource: "nginx.org" }))).toBe(NGINX_ORG_STABLE);
    }
    expect(targetNginxVersion(parseConfig({ ...base, nginxSource: "nginx.org", nginxVersion: "1.30.6" }))).toBe("1.30.6");
  });

  it("refuses an unknown source, naming the key and the accepted values", () => {
    expect(errorOf({ ...base, nginxSource: "ppa" })).toContain('fastapi-edge:nginxSource must be distribution or nginx.org (got "ppa")');
  });

  it("refuses an nginxVersion off the pinned line with nginx.org", () => {
    expect(errorOf({ ...base, nginxSource: "nginx.org", nginxVersion: "1.26" })).toContain(
      "fastapi-edge:nginxVersion must be 1.30 or 1.30.x, or unset, when nginxSource is nginx.org",
    );
    expect(errorOf({ ...base, nginxSource: "nginx.org", nginxVersion: "1.31.0" })).toContain("nginxSource is nginx.org");
    expect(errorOf({ ...base, nginxSource: "nginx.org", nginxVersion: "1.3" })).toContain("must be an nginx version 1.22 or newer");
  });
});

describe("what nginx.org changes on the host", () => {
  const org = parseConfig({ ...base, nginxSource: "nginx.org" });
  const dist = parseConfig(base);
  const fileOf = (c: typeof org, rel: string): string => {
    const f = renderHostFiles(c, { phase: "full" }).nginx.find((x) => x.path === rel);
    if (!f) throw new Error(`no ${rel}`);
    return f.content;
  };

  it("nginx.conf: workers as nginx.org's user `nginx`, no modules-enabled/, and still no conf.d/ (their default.conf on 80 is never loaded)", () => {
    expect(hostLayout(org)).toMatchObject({ workerUser: "nginx", loadDistroModules: false });
    const conf = fileOf(org, "conf/nginx.conf");
    expect(conf).toMatch(/^user nginx;$/m);
    expect(conf).not.toMatch(/modules-enabled/);
    expect(conf).not.toMatch(/conf\.d|sites-enabled/);
    const distConf = fileOf(dist, "conf/nginx.conf");
    expect(distConf).toMatch(/^user www-data;$/m);
    expect(distConf).toMatch(/^include modules-enabled\/\*\.conf;$/m);
  });

  it("http.conf: the 1.30 output (keepalive_min_timeout); the distribution's 1.26 has none", () => {
    expect(fileOf(org, "conf/fastapi-edge/http.conf")).toMatch(/^keepalive_min_timeout 5s;$/m);
    expect(fileOf(dist, "conf/fastapi-edge/http.conf")).not.toMatch(/keepalive_min_timeout/);
  });

  it("bootstrap-install: the keys as shipped, nginx-org-repo.sh before install-packages.sh; nothing of it otherwise or in ALB mode", () => {
    expect(nginxSourceFiles(org)).toEqual([
      { path: HOST_PATHS.nginxOrgKeys, content: expect.stringContaining("-----BEGIN PGP PUBLIC KEY BLOCK-----") },
    ]);
    const cmds = bootstrapCommands(org, ["certbot", "curl"]);
    expect(cmds).toEqual([
      `install -d -m 0755 ${HOST_PATHS.base} ${HOST_PATHS.etcDir} ${HOST_PATHS.stateDir}`,
      `/opt/fastapi-edge/bin/nginx-org-repo.sh '1.30' '${HOST_PATHS.nginxOrgKeys}'`,
      "/opt/fastapi-edge/bin/install-packages.sh 'certbot' 'curl'",
      "/opt/fastapi-edge/bin/ensure-user.sh fastapi-edge",
    ]);
    expect(renderHostFiles(org, { phase: "full" }).system.map((f) => f.path)).toContain(HOST_PATHS.nginxOrgKeys);
    expect(nginxSourceFiles(dist)).toEqual([]);
    expect(bootstrapCommands(dist, ["nginx"]).join("\n")).not.toMatch(/nginx-org-repo/);
    const alb = parseConfig({ ...base, frontend: "alb", route53ZoneId: "Z0123456789ABC", nginxSource: "nginx.org" });
    expect(nginxSourceFiles(alb)).toEqual([]);
    expect(bootstrapCommands(alb, ["curl"]).join("\n")).not.toMatch(/nginx-org-repo/);
  });
});

describe("nginx-org-repo.sh refusals (before it touches anything)", () => {
  const runScript = (args: string[], env: Record<string, string> = {}) =>
    spawnSync("bash", [SCRIPT, ...args], { encoding: "utf8", env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env } });

  it("usage, a bad line, a missing key file, a bad URL: exit 64 with the accepted form", () => {
    expect(runScript([]).status).toBe(64);
    const line = runScript(["1.30; rm -rf /", KEYS]);
    expect(line.status).toBe(64);
    expect(line.stderr).toContain("LINE must be an nginx stable line such as 1.30");
    const key = runScript(["1.30", "/nonexistent.asc"]);
    expect(key.status).toBe(64);
    expect(key.stderr).toContain("KEYFILE /nonexistent.asc is not readable");
    const url = runScript(["1.30", KEYS], { NGINX_ORG_URL: "http://nginx.org/$(id)" });
    expect(url.status).toBe(64);
    expect(url.stderr).toContain("NGINX_ORG_URL must be an http(s) URL");
  });

  it("an OS nginx.org does not serve", () => {
    const osr = spawnSync("mktemp", [], { encoding: "utf8" }).stdout.trim();
    spawnSync("sh", ["-c", `printf 'ID=fedora\\nVERSION_CODENAME=\\n' > ${osr}`]);
    const r = runScript(["1.30", KEYS], { OS_RELEASE: osr });
    spawnSync("rm", ["-f", osr]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("nginx.org's apt repository serves Debian and Ubuntu; this host is 'fedora'");
  });
});
