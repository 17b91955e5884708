// The renderer's newer-nginx output checked by real newer nginx binaries in
// cached Debian chroots: Debian 13's nginx 1.26 (scripts/get-nginx-newer.sh)
// for target 1.26 (`http2 on;`), and Debian unstable's nginx 1.30
// (the shared edge-sid chroot, test/helpers/chroot.ts) for target 1.30
// (`keepalive_min_timeout` too), the version nginx.org's stable repository
// brings (nginxSource: nginx.org). Each chroot is built once per machine (a few
// minutes). Each tree is rendered with paths under a scratch prefix inside the
// chroot, written there, and checked with
// `chroot ROOT nginx -t -c PREFIX/etc/nginx/nginx.conf`.
//
// Needs root (chroot). FASTAPI_EDGE_SKIP_NEWER_NGINX=1 skips the chroot part.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EdgeConfig, parseConfig } from "../../lib/config";
import { HostLayout, Listen, StageFile, versionAtLeast } from "../../lib/nginx";
import { CHROOT_BUILD_TIMEOUT_MS, EDGE_SID, getChroot, inChroot, nginxVersionOf, SYSTEM_PATH } from "../helpers/chroot";
import { makeNginxFixture, nginxTest, Phase, prepareLayout, renderStage, testLayout, RENDER_VARIANTS } from "../helpers/nginx-fixture";

const SCRIPT = path.resolve(__dirname, "..", "..", "scripts", "get-nginx-newer.sh");
const BUILD_TIMEOUT_MS = CHROOT_BUILD_TIMEOUT_MS;

const base = { domain: "api.example.test", email: "ops@example.test" };
const listen: Listen = { address: "127.0.0.1", http: 18080, https: 18443 };

type NginxRun = ReturnType<typeof inChroot>;

interface ChrootTree {
  /** The scratch prefix as seen inside the chroot, e.g. /tmp/fe-test-AbC123. */
  prefix: string;
  /** The same directory as seen from the host. */
  hostDir: string;
  /** nginx.conf's path inside the chroot. */
  conf: string;
  files: StageFile[];
}

/** `nginx -t` of a config inside the chroot (path as seen inside it). */
function chrootNginxTest(root: string, conf: string): NginxRun {
  return inChroot(root, ["/usr/sbin/nginx", "-t", "-c", conf]);
}

/** Lines of `nginx -t` output other than the two that say all is well. */
function unexpectedLines(output: string): string[] {
  return output
    .split("\n")
    .filter((l) => l.trim() !== "")
    .filter(
      (l) => !/^nginx: the configuration file \S+ syntax is ok$/.test(l) && !/^nginx: configuration file \S+ test is successful$/.test(l),
    );
}

/**
 * Render `c` with every path under a fresh prefix inside the chroot and write
 * the tree there (with the chroot's mime.types and a throwaway certificate).
 */
function renderIntoChroot(
  root: string,
  c: EdgeConfig,
  opts: { phase: Phase; nginxVersion: string; listen?: Listen; layout?: (l: HostLayout) => HostLayout },
): ChrootTree {
  const hostDir = mkdtempSync(path.join(root, "tmp", "fe-test-"));
  const prefix = `/${path.relative(root, hostDir)}`;
  const layout = (opts.layout ?? ((l: HostLayout) => l))(testLayout(prefix));
  const host = (p: string): string => path.join(root, p);
  prepareLayout(layout, c.domain, path.join(hostDir, "ca"), host);
  if (layout.loadDistroModules) mkdirSync(host(path.join(layout.nginxConfDir, "modules-enabled")), { recursive: true });

  const files = renderStage(c, opts.phase, { layout, listen: opts.listen ?? listen, nginxVersion: opts.nginxVersion });
  for (const f of files) {
    let inside: string;
    if (f.path.startsWith("conf/")) inside = path.join(layout.nginxConfDir, f.path.slice("conf/".length));
    else if (f.path.startsWith("extra/")) inside = `/${f.path.slice("extra/".length)}`;
    else throw new Error(`unexpected stage path ${f.path}`);
    // Never write outside the scratch prefix (the chroot is shared by all runs).
    if (!inside.startsWith(`${prefix}/`)) throw new Error(`${f.path} maps outside ${prefix}`);
    mkdirSync(path.dirname(host(inside)), { recursive: true });
    writeFileSync(host(inside), f.content);
  }
  return { prefix, hostDir, conf: path.join(layout.nginxConfDir, "nginx.conf"), files };
}

function httpConf(t: ChrootTree): string {
  const f = t.files.find((x) => x.path === "conf/fastapi-edge/http.conf");
  if (!f) throw new Error("no http.conf rendered");
  return f.content;
}

function siteConf(t: ChrootTree): string {
  const f = t.files.find((x) => x.path === "conf/fastapi-edge/site.conf");
  if (!f) throw new Error("no site.conf rendered");
  return f.content;
}

const skipChroot = process.env.FASTAPI_EDGE_SKIP_NEWER_NGINX === "1";

describe.skipIf(skipChroot)("nginx -t with a real nginx >= 1.25.1 (Debian 13 chroot)", () => {
  let root = "";
  let version = "";
  const scratch: string[] = [];
  const tree = (c: EdgeConfig, opts: Parameters<typeof renderIntoChroot>[2]): ChrootTree => {
    const t = renderIntoChroot(root, c, opts);
    scratch.push(t.hostDir);
    return t;
  };

  beforeAll(() => {
    // Progress (and the first build's debootstrap output) goes to stderr.
    const out = execFileSync("bash", [SCRIPT], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], timeout: BUILD_TIMEOUT_MS });
    const lines = out.split("\n").filter((l) => l.trim() !== "");
    root = lines[lines.length - 1] ?? "";
    if (!root.startsWith("/")) throw new Error(`get-nginx-newer.sh printed no chroot path:\n${out}`);
    const v = inChroot(root, ["/usr/sbin/nginx", "-v"]);
    if (v.status !== 0) throw new Error(`nginx -v in ${root} failed:\n${v.output}`);
    version = nginxVersionOf(v.output);
    console.log(`newer nginx: ${v.output.trim()} (chroot ${root})`);
  }, BUILD_TIMEOUT_MS + 60_000);

  afterAll(() => {
    for (const d of scratch) rmSync(d, { recursive: true, force: true });
  });

  it("the chroot's nginx is 1.25.1 or newer (uses the `http2` directive)", () => {
    expect(versionAtLeast(version, "1.25.1")).toBe(true);
  });

  for (const [name, extra] of Object.entries(RENDER_VARIANTS)) {
    for (const phase of ["full", "acme-bootstrap"] as const) {
      it(`${name} (${phase}, nginx 1.26 syntax): nginx -t passes without warnings`, () => {
        const t = tree(parseConfig({ ...base, ...extra }), { phase, nginxVersion: "1.26" });
        if (phase === "full") {
          expect(siteConf(t)).toMatch(/^\s+http2 on;$/m);
          expect(siteConf(t)).not.toMatch(/ssl http2/);
        }
        const r = chrootNginxTest(root, t.conf);
        expect(r.output).toMatch(/syntax is ok/);
        expect(r.status, r.output).toBe(0);
        expect(unexpectedLines(r.output)).toEqual([]);
      });
    }
  }

  it("distro-style tree (www-data, modules-enabled, all addresses on 80/443) passes without warnings", () => {
    const t = tree(parseConfig(base), {
      phase: "full",
      nginxVersion: "1.26",
      listen: { address: null, http: 80, https: 443 },
      layout: (l) => ({ ...l, workerUser: "www-data", loadDistroModules: true }),
    });
    expect(siteConf(t)).toMatch(/listen \[::\]:443 ssl;/);
    const r = chrootNginxTest(root, t.conf);
    expect(r.status, r.output).toBe(0);
    expect(unexpectedLines(r.output)).toEqual([]);
  });

  it("1.22 syntax (`listen ... http2`) still passes on 1.26 but is deprecated", () => {
    const t = tree(parseConfig(base), { phase: "full", nginxVersion: "1.22" });
    expect(siteConf(t)).toMatch(/listen 127\.0\.0\.1:18443 ssl http2;/);
    const r = chrootNginxTest(root, t.conf);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/\[warn\].*the "listen \.\.\. http2" directive is deprecated/);
  });

  it("rejects the 1.30 output (`keepalive_min_timeout` is 1.27.4+), so the version gate matters", () => {
    const t = tree(parseConfig(base), { phase: "full", nginxVersion: "1.30" });
    expect(httpConf(t)).toMatch(/^keepalive_min_timeout 5s;$/m);
    const r = chrootNginxTest(root, t.conf);
    expect(r.status).not.toBe(0);
    expect(r.output).toMatch(/unknown directive "keepalive_min_timeout"/);
  });
});

describe.skipIf(skipChroot)("nginx -t with a real nginx 1.30 (Debian unstable chroot, the version nginx.org's stable brings)", () => {
  let root = "";
  let version = "";
  const scratch: string[] = [];
  const tree = (c: EdgeConfig, opts: Parameters<typeof renderIntoChroot>[2]): ChrootTree => {
    const t = renderIntoChroot(root, c, opts);
    scratch.push(t.hostDir);
    return t;
  };

  beforeAll(() => {
    root = getChroot(EDGE_SID);
    const v = inChroot(root, ["/usr/sbin/nginx", "-v"]);
    if (v.status !== 0) throw new Error(`nginx -v in ${root} failed:\n${v.output}`);
    version = nginxVersionOf(v.output);
    console.log(`nginx 1.30 check: ${v.output.trim()} (chroot ${root})`);
  }, BUILD_TIMEOUT_MS + 60_000);

  afterAll(() => {
    for (const d of scratch) rmSync(d, { recursive: true, force: true });
  });

  it("the chroot's nginx is 1.30.x", () => {
    expect(version).toMatch(/^1\.30\./);
  });

  for (const [name, extra] of Object.entries(RENDER_VARIANTS)) {
    for (const phase of ["full", "acme-bootstrap"] as const) {
      it(`${name} (${phase}, nginx 1.30 syntax): nginx -t passes without warnings`, () => {
        const c = parseConfig({ ...base, ...extra });
        const t = tree(c, { phase, nginxVersion: "1.30" });
        if (phase === "full") {
          expect(siteConf(t)).toMatch(/^\s+http2 on;$/m);
          expect(httpConf(t)).toMatch(/^keepalive_min_timeout 5s;$/m);
        } else {
          // The ACME bootstrap's text does not depend on the version.
          expect(httpConf(t)).not.toMatch(/keepalive_min_timeout/);
        }
        const r = chrootNginxTest(root, t.conf);
        expect(r.output).toMatch(/syntax is ok/);
        expect(r.status, r.output).toBe(0);
        expect(unexpectedLines(r.output)).toEqual([]);
      });
    }
  }

  it("a keepaliveTimeout shorter than 5s caps keepalive_min_timeout, and passes", () => {
    const t = tree(parseConfig({ ...base, keepaliveTimeout: "1500ms" }), { phase: "full", nginxVersion: "1.30" });
    expect(httpConf(t)).toMatch(/^keepalive_min_timeout 1500ms;$/m);
    const r = chrootNginxTest(root, t.conf);
    expect(r.status, r.output).toBe(0);
    expect(unexpectedLines(r.output)).toEqual([]);
  });

  it("distro-style tree (www-data, modules-enabled, all addresses on 80/443) passes without warnings", () => {
    const t = tree(parseConfig(base), {
      phase: "full",
      nginxVersion: "1.30",
      listen: { address: null, http: 80, https: 443 },
      layout: (l) => ({ ...l, workerUser: "www-data", loadDistroModules: true }),
    });
    const r = chrootNginxTest(root, t.conf);
    expect(r.status, r.output).toBe(0);
    expect(unexpectedLines(r.output)).toEqual([]);
  });

  it("the 1.26 output passes on 1.30 without warnings too (a host upgraded before its next push keeps working)", () => {
    const t = tree(parseConfig(base), { phase: "full", nginxVersion: "1.26" });
    expect(httpConf(t)).not.toMatch(/keepalive_min_timeout/);
    const r = chrootNginxTest(root, t.conf);
    expect(r.status, r.output).toBe(0);
    expect(unexpectedLines(r.output)).toEqual([]);
  });

  it("1.22 syntax (`listen ... http2`) is still only deprecated on 1.30", () => {
    const t = tree(parseConfig(base), { phase: "full", nginxVersion: "1.22" });
    const r = chrootNginxTest(root, t.conf);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/\[warn\].*the "listen \.\.\. http2" directive is deprecated/);
  });
});

// The version switch matters: the host's nginx (Debian 12: 1.22) rejects `http2 on`.
const hostNginx = spawnSync("nginx", ["-v"], {
  encoding: "utf8",
  env: { ...process.env, PATH: `${process.env.PATH ?? ""}:${SYSTEM_PATH}` },
});
const hostVersion = hostNginx.error || hostNginx.status !== 0 ? null : nginxVersionOf(hostNginx.stderr);

describe.skipIf(hostVersion === null || versionAtLeast(hostVersion, "1.25.1"))(
  `host nginx ${hostVersion ?? "(none)"}, older than 1.25.1`,
  () => {
    it("rejects the 1.26 output (`http2 on`) and accepts the 1.22 output", () => {
      const c = parseConfig(base);
      const cur = makeNginxFixture(c, { listen, phase: "full", nginxVersion: "1.26", opensslVersion: "3.0" });
      const old = makeNginxFixture(c, { listen, phase: "full", nginxVersion: "1.22", opensslVersion: "3.0" });
      try {
        expect(() => nginxTest(cur.confDir)).toThrow(/unknown directive "http2"/);
        expect(nginxTest(old.confDir)).toBe("");
      } finally {
        rmSync(cur.root, { recursive: true, force: true });
        rmSync(old.root, { recursive: true, force: true });
      }
    });
  },
);
