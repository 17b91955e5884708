// The renderer's TLS groups (post-quantum key exchange where the target's
// OpenSSL has it) and HTTP/3 listens: the text, and the host's real nginx
// (Debian 12: 1.22 with OpenSSL 3.0) on what it must accept and refuse.
// nginx -t of the HTTP/3 output on 1.26 and 1.30 is in render-http3-newer.test.ts.
import { rmSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { parseConfig, RawConfig } from "../../lib/config";
import { CLASSIC_GROUPS, Listen, PQ_GROUPS, renderSite, StageFile, tlsGroups } from "../../lib/nginx";
import { renderTlsServers } from "../../lib/nginx/server-tls";
import { makeNginxFixture, nginxTest, testLayout } from "../helpers/nginx-fixture";

const base = { domain: "api.example.test", email: "ops@example.test" };
const withAddress: Listen = { address: "127.0.0.1", http: 18080, https: 18443 };
const allAddresses: Listen = { address: null, http: 80, https: 443 };

function file(files: StageFile[], p: string): string {
  const f = files.find((x) => x.path === p);
  if (!f) throw new Error(`no ${p}`);
  return f.content;
}

function render(raw: RawConfig, listen: Listen = withAddress, o: { nginxVersion?: string; opensslVersion?: string } = {}): StageFile[] {
  return renderSite(parseConfig({ ...base, ...raw }), { layout: testLayout("/srv/t"), listen, ...o });
}

/** The server blocks of site.conf, as text. */
function servers(siteConf: string): string[] {
  return siteConf.split(/\n(?=server \{)/).filter((b) => b.startsWith("server {"));
}

const curveLine = (files: StageFile[]): string[] =>
  files.flatMap((f) =>
    f.content
      .split("\n")
      .filter((l) => /^\s*ssl_ecdh_curve /.test(l))
      .map((l) => `${f.path}: ${l.trim()}`),
  );

describe("TLS key-exchange groups by the target's OpenSSL", () => {
  it("follows Mozilla's intermediate lists: hybrid first from OpenSSL 3.5, classical before", () => {
    expect(PQ_GROUPS).toEqual(["X25519MLKEM768", "X25519", "prime256v1", "secp384r1"]);
    expect(CLASSIC_GROUPS).toEqual(["X25519", "prime256v1", "secp384r1"]);
    expect(tlsGroups("3.5")).toEqual(PQ_GROUPS);
    expect(tlsGroups("3.6.5")).toEqual(PQ_GROUPS);
    expect(tlsGroups("4.0")).toEqual(PQ_GROUPS);
    expect(tlsGroups("3.4")).toEqual(CLASSIC_GROUPS);
    expect(tlsGroups("3.0.22")).toEqual(CLASSIC_GROUPS);
  });

  it("Debian 13 (the default) gets X25519MLKEM768 first; Debian 12 and Ubuntu 24.04 (OpenSSL 3.0) do not", () => {
    expect(curveLine(render({}))).toEqual(["conf/fastapi-edge/http.conf: ssl_ecdh_curve X25519MLKEM768:X25519:prime256v1:secp384r1;"]);
    for (const hostOs of ["debian-12", "ubuntu-24.04"]) {
      const files = render({ hostOs });
      expect(curveLine(files), hostOs).toEqual(["conf/fastapi-edge/http.conf: ssl_ecdh_curve X25519:prime256v1:secp384r1;"]);
      const directives = files.flatMap((f) => f.content.split("\n").filter((l) => !/^\s*#/.test(l)));
      expect(
        directives.filter((l) => /MLKEM/.test(l)),
        hostOs,
      ).toEqual([]);
    }
  });

  it("sets the groups once, at http level, so the unknown-name server and the site's server share them", () => {
    const files = render({});
    // Not in the shipped snippet, not in any server block: only in http.conf, after the snippet's include.
    expect(file(files, "conf/fastapi-edge/snippets/tls.conf")).not.toMatch(/^\s*ssl_ecdh_curve/m);
    expect(file(files, "conf/fastapi-edge/site.conf")).not.toMatch(/ssl_ecdh_curve/);
    const http = file(files, "conf/fastapi-edge/http.conf");
    expect(http.indexOf("ssl_ecdh_curve")).toBeGreaterThan(http.indexOf("include fastapi-edge/snippets/tls.conf;"));
  });

  it("the ACME bootstrap (no TLS) has no groups at all", async () => {
    const { renderAcmeBootstrap } = await import("../../lib/nginx");
    const files = renderAcmeBootstrap({ domain: base.domain, layout: testLayout("/srv/t"), listen: withAddress });
    expect(curveLine(files)).toEqual([]);
  });

  describe("the host's nginx (Debian 12: 1.22, OpenSSL 3.0)", () => {
    const roots: string[] = [];
    afterAll(() => {
      for (const r of roots) rmSync(r, { recursive: true, force: true });
    });

    it("accepts the Debian 12 rendering and refuses the hybrid group (so the OpenSSL switch matters)", () => {
      const c12 = parseConfig({ ...base, hostOs: "debian-12" });
      const ok = makeNginxFixture(c12, { listen: withAddress });
      roots.push(ok.root);
      expect(nginxTest(ok.confDir)).toBe("");
      // The same site rendered as if this nginx had OpenSSL 3.5.
      const pq = makeNginxFixture(c12, { listen: withAddress, opensslVersion: "3.5" });
      roots.push(pq.root);
      expect(file(pq.files, "conf/fastapi-edge/http.conf")).toMatch(/ssl_ecdh_curve X25519MLKEM768:/);
      expect(() => nginxTest(pq.confDir)).toThrow(/SSL_CTX_set1_curves_list\("X25519MLKEM768:X25519:prime256v1:secp384r1"\) failed/);
    });
  });
});

describe("HTTP/3 (http3: true)", () => {
  it("is off by default: no QUIC listen, no Alt-Svc", () => {
    const site = file(render({}), "conf/fastapi-edge/site.conf");
    expect(site).not.toMatch(/quic|Alt-Svc|http3/);
  });

  it("with a listen address: quic reuseport once (default server), plain quic on the site's server", () => {
    const site = file(render({ http3: true }), "conf/fastapi-edge/site.conf");
    const [, , unknown, main] = servers(site);
    expect(unknown).toMatch(/ssl_reject_handshake on;/);
    expect(unknown!.match(/^\s*listen .*$/gm)!.map((l) => l.trim())).toEqual([
      "listen 127.0.0.1:18443 ssl default_server;",
      "listen 127.0.0.1:18443 quic reuseport default_server;",
    ]);
    expect(main!.match(/^\s*listen .*$/gm)!.map((l) => l.trim())).toEqual(["listen 127.0.0.1:18443 ssl;", "listen 127.0.0.1:18443 quic;"]);
    expect(site.match(/reuseport/g)).toHaveLength(1);
    expect(main).toContain(`add_header Alt-Svc 'h3=":18443"; ma=86400' always;`);
    expect(unknown).not.toMatch(/Alt-Svc/);
  });

  it("on all addresses: quic reuseport once per address:port (IPv4 and IPv6), Alt-Svc with port 443", () => {
    const site = file(render({ http3: true }, allAddresses), "conf/fastapi-edge/site.conf");
    const [, , unknown, main] = servers(site);
    expect(unknown!.match(/^\s*listen .*$/gm)!.map((l) => l.trim())).toEqual([
      "listen 443 ssl default_server;",
      "listen [::]:443 ssl default_server;",
      "listen 443 quic reuseport default_server;",
      "listen [::]:443 quic reuseport default_server;",
    ]);
    expect(main!.match(/^\s*listen .*$/gm)!.map((l) => l.trim())).toEqual([
      "listen 443 ssl;",
      "listen [::]:443 ssl;",
      "listen 443 quic;",
      "listen [::]:443 quic;",
    ]);
    expect(site.match(/reuseport/g)).toHaveLength(2);
    expect(main).toContain(`add_header Alt-Svc 'h3=":443"; ma=86400' always;`);
  });

  it("keeps HTTP/2 as it was and never turns on 0-RTT", () => {
    const on = file(render({ http3: true }), "conf/fastapi-edge/site.conf");
    const off = file(render({}), "conf/fastapi-edge/site.conf");
    expect(on.match(/^\s*http2 on;$/gm)).toEqual(off.match(/^\s*http2 on;$/gm));
    expect(on.match(/^\s*listen \S+ ssl( default_server)?;$/gm)).toEqual(off.match(/^\s*listen \S+ ssl( default_server)?;$/gm));
    const all = render({ http3: true })
      .map((f) => f.content)
      .join("\n");
    expect(all).not.toMatch(/^\s*ssl_early_data on/m);
    expect(all).not.toMatch(/^\s*quic_retry/m);
  });

  it("refuses to render QUIC for an nginx older than 1.25 (a caller overriding nginxVersion)", () => {
    const c = parseConfig({ ...base, http3: true });
    const o = { layout: testLayout("/srv/t"), listen: withAddress, retryAfter: 30 };
    expect(() => renderTlsServers(c, { ...o, nginxVersion: "1.24" })).toThrow(/http3 needs nginx 1\.25 or newer, rendering for 1\.24/);
    expect(() => renderTlsServers(c, { ...o, nginxVersion: "1.25.0" })).not.toThrow();
  });

  it("unknown Host names with the site's SNI get no response (return 444 on the TLS default server)", () => {
    const [, , unknown] = servers(file(render({ http3: true }), "conf/fastapi-edge/site.conf"));
    expect(unknown).toMatch(/^\s+return 444;$/m);
  });
});
