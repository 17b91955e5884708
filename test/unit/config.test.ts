// Config validation: property-based tests (fast-check) with injection attempts,
// plus the messages users see.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ConfigError, CONFIG_KEYS, configSchema, parseConfig } from "../../lib/config";
import { configDeclarations, generatedFiles } from "../../scripts/gen-config";
import { renderHostFiles } from "../../lib/hostfiles";
import { execFileSync } from "node:child_process";

const base = { domain: "api.example.com", email: "ops@example.com" };

/** Characters that could end a directive, open a block, quote, expand or split a word. */
const DANGEROUS = [";", "{", "}", "'", '"', "$", "`", "\\", "\n", "\r", " ", "\t", "#", "|", "&", "<", ">", "(", ")", "*", "\0"];

// Keys whose values reach nginx files or shell commands.
const STRING_KEYS = [
  "domain",
  "email",
  "staticPath",
  "clientMaxBodySize",
  "proxyReadTimeout",
  "proxyConnectTimeout",
  "websocketReadTimeout",
  "clientHeaderTimeout",
  "upstreamFailTimeout",
  "appModule",
  "appStaticDir",
  "appVersion",
  "appHealthPath",
  "appPython",
  "appSource",
  "acmeDirectoryUrl",
  "acmeCaBundle",
  "hostAddress",
  "hostUser",
  "instanceType",
  "amiId",
  "route53ZoneId",
  "nginxVersion",
  "sshPublicKey",
  "hostKey",
  "alertEmail",
  "acmeProfile",
] as const;
const LIST_KEYS = ["sshAllowedCidrs", "websocketPaths", "rateLimits", "scannerPaths", "appPackages"] as const;

function errorOf(raw: Record<string, unknown>): string {
  try {
    parseConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.message;
    throw e;
  }
  return "";
}

describe("config validation", () => {
  it("accepts the defaults with only the required keys", () => {
    const c = parseConfig(base);
    expect(c.frontend).toBe("nginx");
    expect(c.rateLimits).toEqual([{ path: "/auth/token", rate: "5r/m", burst: 10 }]);
    expect(c.scannerPaths).toEqual(["/wp-login.php", "/wp-admin", "/xmlrpc.php"]);
    expect(c.sshAllowedCidrs).toEqual([]);
  });

  it("documents every key on the schema itself", () => {
    for (const k of CONFIG_KEYS) expect(configSchema.shape[k].description, k).toBeTruthy();
  });

  it("Pulumi.yaml and the README's config table are what the schema generates (npm run gen-config)", () => {
    for (const f of generatedFiles()) expect(f.current, `${f.file} is stale: run npm run gen-config`).toBe(f.generated);
  });

  it("the defaults Pulumi.yaml declares parse to the schema's own defaults", () => {
    const declared: Record<string, unknown> = {};
    for (const [k, d] of Object.entries(configDeclarations())) if (d.default !== undefined) declared[k] = d.default;
    expect(Object.keys(declared)).not.toContain("domain");
    expect(parseConfig({ ...declared, ...base })).toEqual(parseConfig(base));
  });

  it("names the key, the accepted form and the bad value", () => {
    expect(errorOf({ ...base, clientMaxBodySize: "10M;" })).toMatch(
      /fastapi-edge:clientMaxBodySize must be an nginx size such as 512k, 10m or 4096.*\(got "10M;"\)/,
    );
    expect(errorOf({ ...base, rateLimits: ["/auth/token 5r/m"] })).toMatch(/fastapi-edge:rateLimits.*PATH:RATE:BURST/);
    expect(errorOf({ email: "a@b.co" })).toMatch(/fastapi-edge:domain is required/);
    expect(errorOf({ ...base, frontend: "caddy" })).toMatch(/fastapi-edge:frontend must be nginx or alb/);
    expect(errorOf({ ...base, nope: "1" })).toMatch(/fastapi-edge:nope: unknown config key/);
    expect(errorOf({ ...base, frontend: "alb" })).toMatch(/fastapi-edge:route53ZoneId is required when frontend is alb/);
    expect(errorOf({ domain: "api.example.com" })).toMatch(/fastapi-edge:email is required when frontend is nginx/);
    expect(errorOf({ ...base, hostMode: "existing" })).toMatch(/fastapi-edge:hostAddress is required/);
    expect(errorOf({ ...base, appProcesses: "0" })).toMatch(/appProcesses must be a whole number from 1 to 16/);
    expect(errorOf({ ...base, sshAllowedCidrs: ["0.0.0.0/0"] })).toMatch(/never opened to 0\.0\.0\.0\/0/);
  });

  it("validates CIDR blocks with zod's validators: malformed IPv6 shapes are refused, real blocks pass", () => {
    // :::::/64, ffff/64 and 2001:db8:::1/64 passed the old hand-written IPv6 expression.
    for (const bad of [
      ":::::/64",
      "ffff/64",
      "2001:db8:::1/64",
      "2001:db8::/129",
      "203.0.113.4/33",
      "203.0.113.256/32",
      "1.2.3/24",
      "2001:db8::",
    ]) {
      expect(errorOf({ ...base, sshAllowedCidrs: [bad] }), bad).toMatch(
        /fastapi-edge:sshAllowedCidrs must be a CIDR block such as 203\.0\.113\.4\/32 or 2001:db8::\/48/,
      );
    }
    const good = ["2001:db8::/48", "203.0.113.4/32", "198.51.100.0/24", "2001:db8:0:1::1/128"];
    expect(parseConfig({ ...base, sshAllowedCidrs: good }).sshAllowedCidrs).toEqual(good);
    // ::/0 is a well-formed block: sshAllowedCidrs refuses it as the whole internet, not for its form.
    for (const world of ["::/0", "0.0.0.0/0", "0::/0", "0:0:0:0:0:0:0:0/0", "203.0.113.4/0"]) {
      const e = errorOf({ ...base, sshAllowedCidrs: [world] });
      expect(e, world).toMatch(/fastapi-edge:sshAllowedCidrs must be a narrower block than the whole internet/);
      expect(e, world).not.toMatch(/must be a CIDR block/);
    }
  });

  it("hostAddress takes an IPv4 address (zod's validator), a DNS name or localhost", () => {
    const existing = { ...base, hostMode: "existing" };
    for (const ok of ["203.0.113.4", "0.0.0.0", "host.example.com", "localhost"]) {
      expect(parseConfig({ ...existing, hostAddress: ok }).hostAddress, ok).toBe(ok);
    }
    for (const bad of ["2001:db8::1", "host", "-x.example.com", "203.0.113.4:22", "203.0.113.4/32"]) {
      expect(errorOf({ ...existing, hostAddress: bad }), bad).toMatch(/fastapi-edge:hostAddress must be an IPv4 address or DNS name/);
    }
  });

  it("reads Pulumi's string forms: JSON arrays, comma lists, numbers and booleans", () => {
    const c = parseConfig({
      ...base,
      sshAllowedCidrs: '["198.51.100.0/24","2001:db8::/48"]',
      scannerPaths: "/a,/b",
      appProcesses: "3",
      accessLog: "false",
    });
    expect(c.sshAllowedCidrs).toEqual(["198.51.100.0/24", "2001:db8::/48"]);
    expect(c.scannerPaths).toEqual(["/a", "/b"]);
    expect(c.appProcesses).toBe(3);
    expect(c.accessLog).toBe(false);
  });

  it("refuses any dangerous character in any value that reaches nginx or a shell (property)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...STRING_KEYS),
        fc.string({ maxLength: 20 }),
        fc.constantFrom(...DANGEROUS),
        fc.string({ maxLength: 20 }),
        (key, pre, bad, post) => {
          const value = `${pre}${bad}${post}`;
          expect(errorOf({ ...base, [key]: value }), `${key}=${JSON.stringify(value)}`).not.toBe("");
        },
      ),
      { numRuns: 3000 },
    );
  });

  it("refuses dangerous characters inside list items (property)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...LIST_KEYS),
        fc.constantFrom("/ok", "/auth/token:5r/m:10", "10.0.0.0/8", "nginx"),
        fc.constantFrom(...DANGEROUS),
        (key, good, bad) => {
          expect(errorOf({ ...base, [key]: [good, `${good}${bad}x`] })).not.toBe("");
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("acmeProfile: a lowercase profile token on certbot 4.0+ (hostOs debian-13), refused elsewhere with the certbot version", () => {
    for (const p of ["classic", "tlsserver", "shortlived", "short-lived-2"])
      expect(parseConfig({ ...base, acmeProfile: p }).acmeProfile).toBe(p);
    expect(parseConfig(base).acmeProfile).toBeUndefined();
    for (const bad of ["ShortLived", "short lived", "-x", "tls_server", "shortlived;reboot", "x".repeat(64), "--required-profile=x"]) {
      expect(errorOf({ ...base, acmeProfile: bad }), bad).toContain(
        "fastapi-edge:acmeProfile must be an ACME profile name: a lowercase token such as classic, tlsserver or shortlived",
      );
    }
    expect(errorOf({ ...base, hostOs: "debian-12", acmeProfile: "shortlived" })).toContain(
      "fastapi-edge:acmeProfile needs certbot 4.0 or newer (ACME profiles), but hostOs debian-12 (Debian 12 (bookworm)) packages certbot 2.1: use hostOs debian-13 or unset acmeProfile",
    );
    expect(errorOf({ ...base, hostOs: "ubuntu-24.04", acmeProfile: "tlsserver" })).toMatch(
      /acmeProfile needs certbot 4\.0 or newer .* hostOs ubuntu-24\.04 \(Ubuntu 24\.04 LTS \(noble\)\) packages certbot 2\.9/,
    );
    // Without a profile, older certbot stays fine.
    expect(parseConfig({ ...base, hostOs: "debian-12" }).hostOs).toBe("debian-12");
    expect(errorOf({ domain: "api.example.com", frontend: "alb", route53ZoneId: "Z0123456789ABC", acmeProfile: "tlsserver" })).toContain(
      "fastapi-edge:acmeProfile applies to frontend nginx only",
    );
  });

  it("certExpiryAlarmPercent: 1 to 50, default 25; the retired certExpiryAlarmDays is refused with what replaced it", () => {
    expect(parseConfig(base).certExpiryAlarmPercent).toBe(25);
    expect(parseConfig({ ...base, certExpiryAlarmPercent: "33" }).certExpiryAlarmPercent).toBe(33);
    for (const bad of ["0", "51", "33.3", "25%", "ten"]) {
      expect(errorOf({ ...base, certExpiryAlarmPercent: bad }), bad).toContain(
        "fastapi-edge:certExpiryAlarmPercent must be a whole number from 1 to 50",
      );
    }
    const retired = errorOf({ ...base, certExpiryAlarmDays: "21", bogusKey: "1" });
    expect(retired).toContain("fastapi-edge:certExpiryAlarmDays was replaced by certExpiryAlarmPercent");
    expect(retired).toContain("fastapi-edge:bogusKey: unknown config key");
    expect(retired).not.toContain("certExpiryAlarmDays: unknown config key");
  });

  it("classic injection payloads never validate", () => {
    const payloads = [
      "api.example.com; return 200",
      "x}server{listen 1",
      "$(reboot)",
      "`id`",
      "api.example.com\ninclude /etc/passwd;",
      "10m; add_header X 1",
      "/static/ ; alias /",
      "5r/m zone=x",
      "main:app --reload",
      "/usr/bin/python3 -c 'x'",
      "../../etc",
      "/a/../b",
      "//evil",
    ];
    for (const p of payloads) {
      // appSource and acmeCaBundle are local paths on the deployer's machine: ../ is legitimate there.
      const keys =
        p.includes("..") || p.startsWith("//") ? STRING_KEYS.filter((k) => k !== "appSource" && k !== "acmeCaBundle") : STRING_KEYS;
      for (const key of keys) expect(errorOf({ ...base, [key]: p }), `${key}=${JSON.stringify(p)}`).not.toBe("");
    }
  });

  it("every valid generated config renders files that the real nginx accepts (property)", () => {
    // Arbitrary valid values, rendered and checked by nginx -t for a sample of runs.
    const path = fc.stringMatching(/^\/[a-z0-9]{1,8}(\/[a-z0-9_-]{1,8}){0,2}\/?$/);
    const arb = fc.record({
      clientMaxBodySize: fc.stringMatching(/^[1-9][0-9]{0,3}[km]?$/),
      proxyReadTimeout: fc.stringMatching(/^[1-9][0-9]{0,3}(ms|s|m)$/),
      appProcesses: fc.integer({ min: 1, max: 16 }),
      upstreamKeepalive: fc.integer({ min: 0, max: 64 }),
      websocketPaths: fc.uniqueArray(
        path.map((p) => `/ws${p}`),
        { maxLength: 3 },
      ),
      rateLimits: fc
        .uniqueArray(
          path.map((p) => `/rl${p}`),
          { maxLength: 3 },
        )
        .chain((ps) =>
          fc.tuple(
            ...ps.map((p) =>
              fc
                .tuple(fc.integer({ min: 1, max: 100 }), fc.constantFrom("s", "m"), fc.integer({ min: 0, max: 50 }))
                .map(([n, u, b]) => `${p}:${n}r/${u}:${b}`),
            ),
          ),
        ),
      scannerPaths: fc.uniqueArray(
        path.map((p) => `/scan${p}`),
        { maxLength: 3 },
      ),
      maintenanceMode: fc.boolean(),
      limitConnPerIp: fc.integer({ min: 0, max: 100 }),
    });
    let checked = 0;
    fc.assert(
      fc.property(arb, (extra) => {
        // Checked by this machine's nginx (Debian 12's 1.22), so rendered for Debian 12.
        const c = parseConfig({ ...base, hostOs: "debian-12", ...extra });
        const set = renderHostFiles(c, { phase: "full" });
        expect(set.nginx.length).toBeGreaterThan(3);
        if (checked++ < 25) nginxCheck(set.nginx);
      }),
      { numRuns: 150 },
    );
  });
});

// nginx -t of production-layout files inside a scratch tree (paths rewritten).
import { mkdtempSync, mkdirSync, writeFileSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as nodePath from "node:path";
import { makeCa } from "../helpers/nginx-fixture";
let ca: { cert: string; key: string } | undefined;
function nginxCheck(files: { path: string; content: string }[]): void {
  const root = mkdtempSync(nodePath.join(tmpdir(), "fe-prop-"));
  ca ??= makeCa(nodePath.join(root, "ca"), ["api.example.com"]);
  const conf = nodePath.join(root, "etc/nginx");
  mkdirSync(conf, { recursive: true });
  copyFileSync("/etc/nginx/mime.types", nodePath.join(conf, "mime.types"));
  for (const f of files) {
    if (!f.path.startsWith("conf/")) continue;
    const text = f.content
      .replace(/\/etc\/letsencrypt\/live\/[^/]+\/fullchain\.pem/g, ca.cert)
      .replace(/\/etc\/letsencrypt\/live\/[^/]+\/privkey\.pem/g, ca.key)
      .replace(/\/var\/log\/nginx/g, root)
      .replace(/\/run\/nginx\.pid/g, `${root}/nginx.pid`)
      .replace(/^include modules-enabled\/\*\.conf;$/m, "")
      .replace(/^user www-data;$/m, "");
    const dest = nodePath.join(conf, f.path.slice(5));
    mkdirSync(nodePath.dirname(dest), { recursive: true });
    writeFileSync(dest, text);
  }
  execFileSync("nginx", ["-t", "-q", "-c", nodePath.join(conf, "nginx.conf")], { stdio: "pipe" });
}
