// frontedBy and what goes with it: the shipped Cloudflare ranges, config
// validation (refusals and injection attempts), the rendered realip.conf and
// origin-pull lines, and the origin-pull CA's checks.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { cidrFamily, CLOUDFLARE_FILES, cloudflareRanges, isNetworkAddress, parseCidrList } from "../../lib/cdn";
import { ConfigError, parseConfig, realIp } from "../../lib/config";
import { readOriginPullCa, renderHostFiles } from "../../lib/hostfiles";
import { renderSite } from "../../lib/nginx";
import { FILES_DIR } from "../../lib/shipped";
import { testLayout } from "../helpers/nginx-fixture";

const base = { domain: "api.example.com", email: "ops@example.com" };
const custom = { ...base, frontedBy: "custom", trustedProxyCidrs: ["10.0.0.0/8"] };
const REPO = path.resolve(__dirname, "../..");
const TEST_CA = "test/unit/fixtures/origin-pull-ca.pem";

function errorOf(raw: Record<string, unknown>): string {
  try {
    parseConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.message;
    throw e;
  }
  return "";
}

function file(files: { path: string; content: string }[], p: string): string | undefined {
  return files.find((f) => f.path === p)?.content;
}

describe("Cloudflare's ranges as shipped in files/cdn/", () => {
  for (const family of ["v4", "v6"] as const) {
    it(`cloudflare-ips-${family}.txt: every line a CIDR block of its family, host bits zero, no /0, no duplicates, sources named`, () => {
      const text = readFileSync(path.join(FILES_DIR, CLOUDFLARE_FILES[family]), "utf8");
      const lines = text.split("\n").filter((l) => l.trim() !== "");
      const data = lines.filter((l) => !l.startsWith("#"));
      expect(data.length).toBeGreaterThan(3);
      for (const l of data) {
        expect(cidrFamily(l), l).toBe(family);
        expect(isNetworkAddress(l), l).toBe(true);
        expect(l.endsWith("/0"), l).toBe(false);
      }
      expect(new Set(data).size).toBe(data.length);
      expect(parseCidrList(text, family, "x")).toEqual(data);
      expect(text).toContain(`https://www.cloudflare.com/ips-${family}`);
      expect(text).toMatch(/^# Retrieved: 20[0-9]{2}-[0-9]{2}-[0-9]{2}/m);
    });
  }

  it("holds the ranges Cloudflare published (15 IPv4, 7 IPv6)", () => {
    const r = cloudflareRanges();
    expect(r.v4).toHaveLength(15);
    expect(r.v6).toHaveLength(7);
    expect(r.v4).toContain("173.245.48.0/20");
    expect(r.v6).toContain("2a06:98c0::/29");
  });

  it("the list parser refuses what a broken download would hold", () => {
    expect(() => parseCidrList("", "v4", "f")).toThrow(/no CIDR blocks/);
    expect(() => parseCidrList("<html>error</html>\n", "v4", "f")).toThrow(/f:1: not an IPv4 CIDR block/);
    expect(() => parseCidrList("0.0.0.0/0\n", "v4", "f")).toThrow(/whole internet/);
    expect(() => parseCidrList("10.0.0.0/8\n2001:db8::/32\n", "v4", "f")).toThrow(/f:2/);
    expect(() => parseCidrList("10.0.0.1/8\n", "v4", "f")).toThrow(/host bits/);
    expect(() => parseCidrList("10.0.0.0/8\n10.0.0.0/8\n", "v4", "f")).toThrow(/twice/);
    expect(() => parseCidrList("10.0.0.0/33\n", "v4", "f")).toThrow(/not an IPv4/);
    expect(() => parseCidrList("10.0.0.0/08\n", "v4", "f")).toThrow(/not an IPv4/);
  });

  it("tells network addresses from addresses with host bits (IPv4 and IPv6)", () => {
    expect(isNetworkAddress("2606:4700::/32")).toBe(true);
    expect(isNetworkAddress("2606:4700::1/32")).toBe(false);
    expect(isNetworkAddress("2001:db8::/128")).toBe(true);
    expect(isNetworkAddress("::ffff:192.0.2.0/120")).toBe(true);
    expect(isNetworkAddress("::ffff:192.0.2.1/120")).toBe(false);
    expect(isNetworkAddress("192.0.2.7/32")).toBe(true);
    expect(isNetworkAddress("192.0.2.7/31")).toBe(false);
  });
});

describe("config: frontedBy, trustedProxyCidrs, realIpHeader, restrictHttpToCdn, originPullCaFile", () => {
  it("defaults to nothing in front, as before", () => {
    const c = parseConfig(base);
    expect(c.frontedBy).toBe("none");
    expect(c.trustedProxyCidrs).toEqual([]);
    expect(c.restrictHttpToCdn).toBe(false);
    expect(realIp(c)).toBeNull();
  });

  it("custom: X-Forwarded-For by default, read recursively; single-address headers are not", () => {
    expect(realIp(parseConfig(custom))).toEqual({
      frontedBy: "custom",
      cidrs: ["10.0.0.0/8"],
      header: "X-Forwarded-For",
      recursive: true,
    });
    expect(realIp(parseConfig({ ...custom, realIpHeader: "x-forwarded-for" }))?.recursive).toBe(true);
    expect(realIp(parseConfig({ ...custom, realIpHeader: "True-Client-IP" }))).toMatchObject({
      header: "True-Client-IP",
      recursive: false,
    });
    const cf = realIp(parseConfig({ ...base, frontedBy: "cloudflare" }));
    expect(cf).toMatchObject({ header: "CF-Connecting-IP", recursive: false });
    expect(cf?.cidrs).toHaveLength(22);
  });

  it("refuses each inconsistent combination with the key and the reason", () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ...base, frontedBy: "custom" }, /trustedProxyCidrs is required \(non-empty\) when frontedBy is custom/],
      [{ ...base, frontedBy: "custom", trustedProxyCidrs: [] }, /trustedProxyCidrs is required/],
      [{ ...base, trustedProxyCidrs: ["10.0.0.0/8"] }, /trustedProxyCidrs is only used with frontedBy custom/],
      [{ ...base, frontedBy: "cloudflare", trustedProxyCidrs: ["10.0.0.0/8"] }, /trustedProxyCidrs is only used with frontedBy custom/],
      [{ ...base, frontedBy: "cloudflare", realIpHeader: "X-Forwarded-For" }, /realIpHeader is only used with frontedBy custom/],
      [{ ...base, realIpHeader: "X-Forwarded-For" }, /realIpHeader is only used/],
      [{ ...base, frontedBy: "akamai" }, /frontedBy must be none, cloudflare or custom/],
      [{ ...custom, trustedProxyCidrs: ["0.0.0.0/0"] }, /whole internet/],
      [{ ...custom, trustedProxyCidrs: ["::/0"] }, /whole internet/],
      [{ ...custom, trustedProxyCidrs: ["10.1.2.3/8"] }, /host bits zero/],
      [{ ...custom, trustedProxyCidrs: ["10.0.0.0"] }, /CIDR block/],
      [{ ...custom, realIpHeader: "X_Real_IP" }, /letters, digits and hyphens/],
      [{ ...custom, realIpHeader: "Forwarded" }, /RFC 7239/],
      [{ ...custom, realIpHeader: "Host" }, /realIpHeader must be/],
      [
        { domain: "api.example.com", frontend: "alb", route53ZoneId: "Z0123456789ABC", frontedBy: "cloudflare" },
        /frontedBy must be none with frontend alb/,
      ],
      [
        { domain: "api.example.com", frontend: "alb", route53ZoneId: "Z0123456789ABC", originPullCaFile: TEST_CA },
        /originPullCaFile is refused with frontend alb/,
      ],
      [{ ...base, originPullCaFile: TEST_CA }, /originPullCaFile needs frontedBy cloudflare or custom/],
      [{ ...custom, originPullCaFile: "ca.key" }, /originPullCaFile must be a local path to a PEM file/],
      [{ ...base, restrictHttpToCdn: true }, /restrictHttpToCdn needs frontedBy cloudflare or custom/],
      [{ ...custom, restrictHttpToCdn: true, hostMode: "existing", hostAddress: "203.0.113.5" }, /restrictHttpToCdn needs hostMode ec2/],
      [
        { domain: "api.example.com", frontend: "alb", route53ZoneId: "Z0123456789ABC", restrictHttpToCdn: true },
        /restrictHttpToCdn needs frontedBy/,
      ],
    ];
    for (const [raw, re] of cases) expect(errorOf(raw), JSON.stringify(raw)).toMatch(re);
  });

  it("counts security group rules per family against AWS's default quota of 60", () => {
    // Cloudflare: 2 x 15 IPv4 + 2 x 7 IPv6, room for SSH blocks.
    expect(errorOf({ ...base, frontedBy: "cloudflare", restrictHttpToCdn: true, sshAllowedCidrs: ["198.51.100.7/32"] })).toBe("");
    const many = Array.from({ length: 30 }, (_, i) => `10.${i}.0.0/16`);
    expect(errorOf({ ...custom, trustedProxyCidrs: many, restrictHttpToCdn: true })).toBe("");
    expect(errorOf({ ...custom, trustedProxyCidrs: many, restrictHttpToCdn: true, sshAllowedCidrs: ["198.51.100.7/32"] })).toMatch(
      /restrictHttpToCdn would need 61 IPv4 inbound rules \(2 ports x 30 ranges \+ 1 SSH\), over AWS's default quota of 60/,
    );
    // IPv6 counts separately.
    const v6 = [...many.slice(0, 29), "2001:db8::/32", "2001:db9::/32"];
    expect(errorOf({ ...custom, trustedProxyCidrs: v6, restrictHttpToCdn: true, sshAllowedCidrs: ["198.51.100.7/32"] })).toBe("");
  });

  it("refuses injection attempts in every new key (;, braces, quotes, $, newlines...)", () => {
    const payloads = [
      "10.0.0.0/8; real_ip_header X",
      "10.0.0.0/8}server{",
      "10.0.0.0/8\nset_real_ip_from 0.0.0.0/0",
      "'10.0.0.0/8'",
      '"10.0.0.0/8"',
      "$remote_addr",
      "10.0.0.0/8 0.0.0.0/0",
      "X-Forwarded-For; real_ip_recursive on",
      "X-Forwarded-For\nset_real_ip_from 0.0.0.0/0;",
      "X-Forwarded-For}",
      "{X}",
      "X-'a'",
      'X-"a"',
      "X-$a",
      "$http_x",
      "X-Forwarded-For ",
      "`id`.pem",
      "$(reboot).pem",
      "ca.pem; rm -rf /",
      "ca.pem\nssl_verify_client off;",
      "c a.pem",
    ];
    for (const p of payloads) {
      expect(errorOf({ ...base, frontedBy: "custom", trustedProxyCidrs: [p] }), `trustedProxyCidrs ${JSON.stringify(p)}`).not.toBe("");
      expect(errorOf({ ...custom, realIpHeader: p }), `realIpHeader ${JSON.stringify(p)}`).not.toBe("");
      expect(errorOf({ ...custom, originPullCaFile: p }), `originPullCaFile ${JSON.stringify(p)}`).not.toBe("");
      expect(errorOf({ ...base, frontedBy: p }), `frontedBy ${JSON.stringify(p)}`).not.toBe("");
    }
    // A comma list cannot smuggle a /0 in as a second item either.
    expect(errorOf({ ...custom, trustedProxyCidrs: "10.0.0.0/8,0.0.0.0/0" })).toMatch(/whole internet/);
  });

  it("refuses any dangerous character anywhere in realIpHeader or a trusted block (property)", () => {
    const DANGEROUS = [";", "{", "}", "'", '"', "$", "`", "\\", "\n", "\r", " ", "\t", "#", "|", "&", "<", ">", "(", ")", "*", "\0"];
    fc.assert(
      fc.property(fc.string({ maxLength: 12 }), fc.constantFrom(...DANGEROUS), fc.string({ maxLength: 12 }), (pre, bad, post) => {
        expect(errorOf({ ...custom, realIpHeader: `X-${pre}${bad}${post}` })).not.toBe("");
        expect(errorOf({ ...custom, trustedProxyCidrs: [`10.0.0.0/8${pre}${bad}${post}`] })).not.toBe("");
        expect(errorOf({ ...custom, originPullCaFile: `a${pre}${bad}${post}.pem` })).not.toBe("");
      }),
      { numRuns: 1000 },
    );
  });
});

describe("rendering", () => {
  const layout = testLayout("/srv/t");
  const listen = { address: null, http: 80, https: 443 };

  it("nothing in front: no realip.conf and no include, so existing stacks render as before", () => {
    const files = renderHostFiles(parseConfig(base), { phase: "full" }).nginx;
    expect(file(files, "conf/fastapi-edge/realip.conf")).toBeUndefined();
    expect(files.map((f) => f.content).join("\n")).not.toMatch(/real_ip|ssl_verify_client|origin-pull/);
  });

  it("cloudflare: every shipped range, CF-Connecting-IP, included at http level", () => {
    const files = renderHostFiles(parseConfig({ ...base, frontedBy: "cloudflare" }), { phase: "full" }).nginx;
    const conf = file(files, "conf/fastapi-edge/realip.conf")!;
    const r = cloudflareRanges();
    expect(conf.split("\n").filter((l) => l.startsWith("set_real_ip_from "))).toEqual(
      [...r.v4, ...r.v6].map((c) => `set_real_ip_from ${c};`),
    );
    expect(conf).toMatch(/^real_ip_header CF-Connecting-IP;$/m);
    expect(conf).toMatch(/^real_ip_recursive off;$/m);
    expect(file(files, "conf/fastapi-edge/http.conf")).toMatch(/^include fastapi-edge\/realip\.conf;$/m);
    // Not in the HTTP-only bootstrap (its text never depends on settings).
    const boot = renderHostFiles(parseConfig({ ...base, frontedBy: "cloudflare" }), { phase: "acme-bootstrap" }).nginx;
    expect(boot.map((f) => f.content).join("\n")).not.toMatch(/real_ip/);
  });

  it("custom X-Forwarded-For: recursive on; the app's forwarded headers are $remote_addr, never the client's chain", () => {
    const files = renderHostFiles(parseConfig({ ...custom, trustedProxyCidrs: ["10.0.0.0/8", "2001:db8::/32"] }), { phase: "full" }).nginx;
    const conf = file(files, "conf/fastapi-edge/realip.conf")!;
    expect(conf).toMatch(/^set_real_ip_from 10\.0\.0\.0\/8;\nset_real_ip_from 2001:db8::\/32;\nreal_ip_header X-Forwarded-For;$/m);
    expect(conf).toMatch(/^real_ip_recursive on;$/m);
    const headers = file(files, "conf/fastapi-edge/snippets/proxy-headers.conf")!;
    expect(headers).toMatch(/^proxy_set_header X-Forwarded-For \$remote_addr;$/m);
    // proxyForwardedHeaders minimal (default): X-Real-IP is cleared, so a client's own never reaches the app.
    expect(headers).toMatch(/^proxy_set_header X-Real-IP "";$/m);
    const extended = file(
      renderHostFiles(parseConfig({ ...custom, trustedProxyCidrs: ["10.0.0.0/8"], proxyForwardedHeaders: "extended" }), { phase: "full" })
        .nginx,
      "conf/fastapi-edge/snippets/proxy-headers.conf",
    )!;
    expect(extended).toMatch(/^proxy_set_header X-Real-IP \$remote_addr;$/m);
    expect(headers).not.toMatch(/^[^#]*proxy_add_x_forwarded_for/m);
    // Rate and connection limits key on the (restored) $binary_remote_addr.
    const http = file(
      renderHostFiles(parseConfig({ ...custom, limitConnPerIp: 10 }), { phase: "full" }).nginx,
      "conf/fastapi-edge/http.conf",
    )!;
    expect(http.match(/_zone \$binary_remote_addr /g)).toHaveLength(2);
  });

  it("origin pulls: the CA travels in the stage and only the site's TLS server requires a client certificate", () => {
    const c = parseConfig({ ...custom, originPullCaFile: TEST_CA });
    const pem = readOriginPullCa(c, REPO)!;
    const files = renderSite(c, { layout, listen, originPullCaPem: pem });
    expect(file(files, "conf/fastapi-edge/origin-pull-ca.pem")).toBe(pem);
    const site = file(files, "conf/fastapi-edge/site.conf")!;
    const servers = site.split(/^server \{$/m).slice(1);
    const withVerify = servers.filter((s) => /ssl_verify_client on;/.test(s));
    expect(withVerify).toHaveLength(1);
    expect(withVerify[0]).toMatch(/server_name api\.example\.com;/);
    expect(withVerify[0]).toMatch(/ssl_client_certificate fastapi-edge\/origin-pull-ca\.pem;/);
    // Port 80 (ACME, redirect) and the default servers are untouched.
    for (const s of servers.filter((x) => !x.includes("ssl_verify_client"))) expect(s).not.toMatch(/ssl_client_certificate/);
    // A site that names the CA cannot be rendered without its text.
    expect(() => renderSite(c, { layout, listen })).toThrow(/originPullCaFile is set/);
  });
});

describe("readOriginPullCa", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "fe-opca-"));
  const openssl = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const cfg = (f: string) => parseConfig({ ...custom, originPullCaFile: f });
  const write = (name: string, text: string) => {
    writeFileSync(path.join(dir, name), text);
    return path.join(dir, name);
  };

  it("returns the certificates alone, re-encoded (no other text of the file reaches the host)", () => {
    const src = readFileSync(path.join(REPO, TEST_CA), "utf8");
    const f = write("with-text.pem", `Subject: whatever\n${src}\ntrailing notes\n`);
    const pem = readOriginPullCa(cfg(f), REPO)!;
    expect(pem).toBe(src.replace(/\n?$/, "\n"));
    expect(pem).not.toMatch(/whatever|trailing/);
    expect(readOriginPullCa(parseConfig(custom), REPO)).toBeUndefined();
  });

  it("refuses a missing file, no certificate, a broken one, a leaf that is no CA, and any private key", () => {
    expect(() => readOriginPullCa(cfg(path.join(dir, "missing.pem")), REPO)).toThrow(/originPullCaFile .*cannot read it \(ENOENT\)/);
    expect(() => readOriginPullCa(cfg(write("empty.pem", "hello\n")), REPO)).toThrow(/no -----BEGIN CERTIFICATE----- block/);
    expect(() =>
      readOriginPullCa(cfg(write("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")), REPO),
    ).toThrow(/certificate 1 does not parse/);
    openssl(
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "k.pem",
        "-out",
        "leaf.pem",
      ].concat(["-days", "1", "-subj", "/CN=leaf", "-addext", "basicConstraints=critical,CA:FALSE"]),
    );
    expect(() => readOriginPullCa(cfg(path.join(dir, "leaf.pem")), REPO)).toThrow(/no certificate in it is a CA/);
    const withKey = write("with-key.pem", readFileSync(path.join(REPO, TEST_CA), "utf8") + readFileSync(path.join(dir, "k.pem"), "utf8"));
    expect(() => readOriginPullCa(cfg(withKey), REPO)).toThrow(/private key/);
  });
});
