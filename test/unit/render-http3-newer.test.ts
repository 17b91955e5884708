// The HTTP/3 and post-quantum output checked by real newer nginx: Debian 13's
// nginx 1.26.3 (OpenSSL 3.5) and Debian unstable's nginx 1.30 (OpenSSL 3.6),
// both built with the HTTP/3 module, in the shared cached chroots
// (test/helpers/chroot-site.ts; the first build takes minutes). nginx -t
// must pass with no warnings, for a listen address and for all addresses on
// 80/443 (a distro-style tree as on a real host).
//
// Needs root (chroot). FASTAPI_EDGE_SKIP_NEWER_NGINX=1 skips it.
import { rmSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../lib/config";
import { Listen, versionAtLeast } from "../../lib/nginx";
import {
  CHROOT_BUILD_TIMEOUT_MS,
  chrootNginxVersions,
  getChroot,
  inChroot,
  renderTreeInChroot,
  unexpectedNginxTestLines,
} from "../helpers/chroot-site";
import { RENDER_VARIANTS } from "../helpers/nginx-fixture";

const base = { domain: "api.example.test", email: "ops@example.test" };
const LISTENS: Record<string, Listen> = {
  "127.0.0.1 on 23080/23443": { address: "127.0.0.1", http: 23080, https: 23443 },
  "all addresses on 80/443": { address: null, http: 80, https: 443 },
};

describe.skipIf(process.env.FASTAPI_EDGE_SKIP_NEWER_NGINX === "1").each(["trixie", "sid"] as const)(
  "nginx -t on the %s chroot's nginx",
  (which) => {
    let root = "";
    let versions = { nginx: "", openssl: "", modules: "" };
    const scratch: string[] = [];
    afterAll(() => {
      for (const d of scratch) rmSync(d, { recursive: true, force: true });
    });

    const check = (extra: Record<string, unknown>, listen: Listen, distro = false): string[] => {
      if (!root) {
        root = getChroot(which);
        versions = chrootNginxVersions(root);
      }
      const t = renderTreeInChroot(root, parseConfig({ ...base, ...extra }), {
        listen,
        nginxVersion: versions.nginx,
        opensslVersion: versions.openssl,
        ...(distro ? { layout: (l) => ({ ...l, workerUser: "www-data", loadDistroModules: true }) } : {}),
      });
      scratch.push(t.hostDir);
      const r = inChroot(root, ["nginx", "-t", "-c", t.conf]);
      const out = `${r.stdout}${r.stderr}`;
      expect(r.status, out).toBe(0);
      return unexpectedNginxTestLines(out);
    };

    it(
      "is nginx 1.25+ with the HTTP/3 module and OpenSSL 3.5+",
      () => {
        root = getChroot(which);
        versions = chrootNginxVersions(root);
        console.log(`${which}: nginx ${versions.nginx}, OpenSSL ${versions.openssl}`);
        expect(versionAtLeast(versions.nginx, "1.25")).toBe(true);
        expect(versionAtLeast(versions.openssl, "3.5")).toBe(true);
        expect(versions.modules).toMatch(/--with-http_v3_module/);
      },
      CHROOT_BUILD_TIMEOUT_MS + 60_000,
    );

    for (const [name, listen] of Object.entries(LISTENS)) {
      it(`http3 on, ${name}: passes without warnings`, () => {
        expect(check({ http3: true }, listen, listen.address === null)).toEqual([]);
      });
    }

    for (const [name, extra] of Object.entries(RENDER_VARIANTS)) {
      it(`http3 on, variant "${name}": passes without warnings`, () => {
        expect(check({ ...extra, http3: true }, LISTENS["127.0.0.1 on 23080/23443"]!)).toEqual([]);
      });
    }

    it("reuseport twice on one address:port is what nginx refuses (why the site's server has plain quic)", () => {
      const t = renderTreeInChroot(root || getChroot(which), parseConfig({ ...base, http3: true }), {
        listen: LISTENS["127.0.0.1 on 23080/23443"]!,
        nginxVersion: versions.nginx,
        opensslVersion: versions.openssl,
      });
      scratch.push(t.hostDir);
      const site = t.files.find((f) => f.path === "conf/fastapi-edge/site.conf")!;
      const doubled = site.content.replace("listen 127.0.0.1:23443 quic;", "listen 127.0.0.1:23443 quic reuseport;");
      expect(doubled).not.toBe(site.content);
      writeFileSync(`${root}${t.prefix}/etc/nginx/fastapi-edge/site.conf`, doubled);
      const r = inChroot(root, ["nginx", "-t", "-c", t.conf]);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/duplicate listen options for 127\.0\.0\.1:23443/);
    });
  },
);
