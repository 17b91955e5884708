import { describe, expect, it } from "vitest";
import { parseConfig } from "../../lib/config";
import { renderHostFiles } from "../../lib/hostfiles";
import { renderAcmeBootstrap, renderSite, versionAtLeast } from "../../lib/nginx";
import { makeNginxFixture, nginxTest, RENDER_VARIANTS } from "../helpers/nginx-fixture";

const base = { domain: "api.example.test", email: "ops@example.test" };
const listen = { address: "127.0.0.1", http: 18080, https: 18443 };

function fileText(files: { path: string; content: string }[], p: string): string {
  const f = files.find((x) => x.path === p);
  if (!f) throw new Error(`no ${p} in ${files.map((x) => x.path).join(", ")}`);
  return f.content;
}

describe("renderer", () => {
  it("compares nginx versions", () => {
    expect(versionAtLeast("1.25.1", "1.25.1")).toBe(true);
    expect(versionAtLeast("1.26", "1.25.1")).toBe(true);
    expect(versionAtLeast("1.24", "1.25.1")).toBe(false);
    expect(versionAtLeast("1.22.1", "1.25.1")).toBe(false);
  });

  it("fixes what the seed guide gets wrong", () => {
    const c = parseConfig(base);
    const set = renderHostFiles(c, { phase: "full" });
    const all = set.nginx.map((f) => f.content).join("\n");
    // keepalive only engages with HTTP/1.1 and a cleared Connection header
    expect(all).toMatch(/keepalive 32;/);
    expect(all).toMatch(/keepalive_requests 10000;/);
    expect(all).toMatch(/proxy_http_version 1\.1;/);
    expect(fileText(set.nginx, "conf/fastapi-edge/site.conf")).toMatch(
      /location \/ \{\n\s+include fastapi-edge\/snippets\/proxy\.conf;\n\s+proxy_set_header Connection "";/,
    );
    // Mozilla intermediate, not HIGH:!aNULL:!MD5
    expect(all).not.toMatch(/^\s*ssl_ciphers HIGH/m);
    expect(all).toMatch(/ssl_protocols TLSv1\.2 TLSv1\.3;/);
    expect(all).toMatch(/ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:/);
    // rate limit answers 429, maintenance page is 503 with Retry-After
    expect(all).toMatch(/limit_req_status 429;/);
    expect(all).toMatch(/error_page 502 503 504 =503 \/_fastapi_edge\/maintenance\.html;/);
    expect(all).toMatch(/add_header Retry-After 30 always;/);
    // the edge overwrites forwarded headers instead of appending the client's
    expect(all).toMatch(/X-Forwarded-For \$remote_addr;/);
    expect(all).not.toMatch(/^\s*proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for/m);
    expect(all).toMatch(/server_tokens off;/);
    expect(all).toMatch(/ssl_reject_handshake on;/);
    expect(all).toMatch(/return 444;/);
    // rendered main config uses relative includes only
    for (const m of fileText(set.nginx, "conf/nginx.conf").matchAll(/include ([^;]+);/g)) expect(m[1]!.startsWith("/")).toBe(false);
  });

  it("repeats HSTS in every location that sets its own headers", () => {
    const site = fileText(renderSite(parseConfig(base), fixtureOpts()), "conf/fastapi-edge/site.conf");
    const tlsServer = site.slice(site.indexOf("ssl_certificate "));
    const locations = tlsServer.split(/\n    location /).slice(1);
    for (const loc of locations) {
      if (/add_header/.test(loc)) expect(loc).toMatch(/Strict-Transport-Security/);
    }
  });

  it("emits listen ... http2 before 1.25.1 and `http2 on` from 1.25.1", () => {
    const c = parseConfig(base);
    const old = fileText(renderSite(c, { ...fixtureOpts(), nginxVersion: "1.24" }), "conf/fastapi-edge/site.conf");
    const cur = fileText(renderSite(c, { ...fixtureOpts(), nginxVersion: "1.26" }), "conf/fastapi-edge/site.conf");
    expect(old).toMatch(/listen 443 ssl http2;/);
    expect(old).not.toMatch(/http2 on;/);
    expect(cur).toMatch(/http2 on;/);
    expect(cur).not.toMatch(/ssl http2/);
  });

  it("bootstrap phase serves only HTTP and the ACME webroot", () => {
    const files = renderAcmeBootstrap({ ...fixtureOpts(), domain: parseConfig(base).domain });
    const all = files.map((f) => f.content).join("\n");
    expect(all).not.toMatch(/ssl_certificate|listen[^;]*443/);
    expect(all).toMatch(/acme-challenge/);
  });

  it("renders the default stack files for npm run render", () => {
    const set = renderHostFiles(parseConfig(base), { phase: "full" });
    const paths = [...set.nginx.map((f) => f.path), ...set.system.map((f) => f.path)];
    expect(paths).toEqual(
      expect.arrayContaining([
        "conf/nginx.conf",
        "conf/fastapi-edge/site.conf",
        "conf/fastapi-edge/http.conf",
        "/etc/fastapi-edge/app.env",
        "/etc/systemd/system/fastapi-edge-app@.service",
      ]),
    );
    expect(fileText(set.system, "/etc/systemd/system/nginx.service.d/fastapi-edge.conf")).toMatch(/LimitNOFILE=33792/);
  });

  it("proxyForwardedHeaders: minimal sends only what uvicorn reads and clears the rest; extended sets them", () => {
    const headers = (raw: Record<string, unknown>): string[] =>
      renderHostFiles(parseConfig({ ...base, ...raw }), { phase: "full" })
        .nginx.find((f) => f.path === "conf/fastapi-edge/snippets/proxy-headers.conf")!
        .content.split("\n")
        .filter((l) => l.startsWith("proxy_set_header "));
    expect(headers({})).toEqual([
      "proxy_set_header Host $host;",
      "proxy_set_header X-Forwarded-For $remote_addr;",
      "proxy_set_header X-Forwarded-Proto $scheme;",
      'proxy_set_header X-Real-IP "";',
      'proxy_set_header X-Forwarded-Host "";',
      'proxy_set_header X-Forwarded-Port "";',
      'proxy_set_header Forwarded "";',
    ]);
    expect(headers({ proxyForwardedHeaders: "extended" })).toEqual([
      "proxy_set_header Host $host;",
      "proxy_set_header X-Forwarded-For $remote_addr;",
      "proxy_set_header X-Forwarded-Proto $scheme;",
      "proxy_set_header X-Real-IP $remote_addr;",
      "proxy_set_header X-Forwarded-Host $host;",
      "proxy_set_header X-Forwarded-Port $server_port;",
      'proxy_set_header Forwarded "";',
    ]);
    expect(() => parseConfig({ ...base, proxyForwardedHeaders: "all" })).toThrow(/proxyForwardedHeaders must be minimal or extended/);
  });

  it("ALB mode renders no nginx files", () => {
    const set = renderHostFiles(parseConfig({ ...base, frontend: "alb", route53ZoneId: "Z123ABC" }), {
      phase: "full",
      forwardedAllowIps: "10.0.0.0/16",
    });
    expect(set.nginx).toEqual([]);
    expect(fileText(set.system, "/etc/fastapi-edge/app.env")).toMatch(/FORWARDED_ALLOW_IPS=10\.0\.0\.0\/16/);
  });
});

function fixtureOpts() {
  return {
    layout: {
      nginxConfDir: "/etc/nginx",
      acmeWebroot: "/var/www/letsencrypt",
      maintenanceDir: "/var/www/fastapi-edge",
      staticDir: "/opt/fastapi-edge/app/static",
      logDir: "/var/log/nginx",
      pidFile: "/run/nginx.pid",
      certDir: "/etc/letsencrypt/live/x",
      workerUser: "www-data",
      loadDistroModules: true,
      tempDir: null,
      appSocketDir: "/run/fastapi-edge",
    },
    listen: { address: null, http: 80, https: 443 },
  };
}

// Every variant checked by the real nginx (Debian's 1.22) with throwaway certificates.

describe("nginx -t of every rendered variant (real nginx)", () => {
  for (const [name, extra] of Object.entries(RENDER_VARIANTS)) {
    for (const phase of ["full", "acme-bootstrap"] as const) {
      it(`${name} (${phase}, nginx 1.22 syntax)`, () => {
        const c = parseConfig({ ...base, ...extra });
        const fx = makeNginxFixture(c, { listen, phase, nginxVersion: "1.22", opensslVersion: "3.0" });
        expect(nginxTest(fx.confDir)).toBe("");
      });
    }
  }
  it("production layout renders and tests with the distro tree", () => {
    // The real /etc/nginx layout: includes modules-enabled, runs as www-data.
    const c = parseConfig(base);
    const fx = makeNginxFixture(c, { listen: { address: null, http: 80, https: 443 }, nginxVersion: "1.22", opensslVersion: "3.0" });
    expect(nginxTest(fx.confDir)).toBe("");
  });
});
