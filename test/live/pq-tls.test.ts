// Post-quantum key exchange on the default target: the site rendered for
// Debian 13 (OpenSSL 3.5: ssl_ecdh_curve X25519MLKEM768:X25519:prime256v1:secp384r1)
// on Debian 13's real nginx 1.26 (edge-trixie chroot) on 127.0.0.1, and real
// clients:
//   - OpenSSL 3.5 s_client from the same chroot negotiates X25519MLKEM768;
//   - the host's OpenSSL 3.0 client (no hybrid group) connects with X25519;
//   - a client offering only NIST P-256 still connects (TLS 1.3 and 1.2);
//   - testssl.sh (the host's 3.0.8) stays clean, as in tls-scan.test.ts.
// And why the group list sits at http level: nginx negotiates with the groups
// of the address's default server, so a list set only in the site's server
// is ignored (shown with a deliberately edited tree).
//
// Needs root (chroot; the first chroot build takes minutes). The testssl scan
// takes 2-3 minutes; its JSON and text stay in test/artifacts/.
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StageFile } from "../../lib/nginx";
import { CHROOT_BUILD_TIMEOUT_MS, ChrootSite, getChroot, inChroot, startChrootSite } from "../helpers/chroot-site";
import { artifactPath } from "../helpers/live-site";
import { run } from "../helpers/proc";

interface Hello {
  out: string;
  code: number | null;
}

/** One handshake with an s_client (the chroot's, or the host's when root is null); stdin empty, so it closes at once. */
async function sClient(root: string | null, site: ChrootSite, args: string[], servername = site.domain): Promise<Hello> {
  const argv = [
    "s_client",
    "-connect",
    `127.0.0.1:${site.httpsPort}`,
    "-servername",
    servername,
    "-CAfile",
    root ? site.caInside : site.caHost,
    "-verify_return_error",
    ...args,
  ];
  if (root) {
    const r = inChroot(root, ["openssl", ...argv]);
    return { out: `${r.stdout}${r.stderr}`, code: r.status };
  }
  const r = await run("openssl", argv, { input: "", timeoutMs: 20_000 });
  return { out: `${r.stdout}${r.stderr}`, code: r.code };
}

/** The key exchange a handshake used, as s_client prints it (3.5: "Negotiated TLS1.3 group"; 3.0: "Server Temp Key"). */
function keyExchange(h: Hello): { group: string | null; tempKey: string | null; protocol: string | null } {
  return {
    group: /^Negotiated TLS1\.3 group: (\S+)$/m.exec(h.out)?.[1] ?? null,
    tempKey: /^(?:Server|Peer) Temp Key: (.+)$/m.exec(h.out)?.[1] ?? null,
    // "New, TLSv1.3, Cipher is ..." is printed right after the handshake; the
    // SSL-Session block's "Protocol" line only once a TLS 1.3 ticket has arrived (racy).
    protocol: /^New, (TLSv[0-9.]+), Cipher is /m.exec(h.out)?.[1] ?? null,
  };
}

describe("post-quantum key exchange on nginx 1.26 with OpenSSL 3.5 (edge-trixie)", () => {
  let root = "";
  let site: ChrootSite;

  beforeAll(async () => {
    root = getChroot("trixie");
    site = await startChrootSite(root);
  }, CHROOT_BUILD_TIMEOUT_MS + 60_000);

  afterAll(async () => {
    await site?.stop();
  });

  it("is rendered with X25519MLKEM768 first, once, at http level", () => {
    const http = site.files.find((f) => f.path === "conf/fastapi-edge/http.conf")!.content;
    expect(http).toMatch(/^ssl_ecdh_curve X25519MLKEM768:X25519:prime256v1:secp384r1;$/m);
  });

  it("OpenSSL 3.5's client negotiates X25519MLKEM768 (asked for first, and by default)", async () => {
    for (const args of [["-groups", "X25519MLKEM768:X25519"], []]) {
      const h = await sClient(root, site, args);
      expect(h.code, h.out).toBe(0);
      expect(h.out).toMatch(/Verify return code: 0 \(ok\)/);
      expect(keyExchange(h), args.join(" ")).toMatchObject({ group: "X25519MLKEM768", protocol: "TLSv1.3" });
    }
  });

  it("the host's OpenSSL 3.0 client, which has no hybrid group, connects with X25519", async () => {
    const version = await run("openssl", ["version"]);
    expect(version.stdout).toMatch(/^OpenSSL 3\.[0-4]\./);
    const h = await sClient(null, site, []);
    expect(h.code, h.out).toBe(0);
    expect(keyExchange(h)).toMatchObject({ tempKey: "X25519, 253 bits", protocol: "TLSv1.3" });
  });

  it("a client offering only NIST P-256 connects, over TLS 1.3 and TLS 1.2", async () => {
    for (const args of [
      ["-groups", "P-256"],
      ["-groups", "P-256", "-tls1_2"],
    ]) {
      const h = await sClient(null, site, args);
      expect(h.code, h.out).toBe(0);
      expect(keyExchange(h).tempKey, args.join(" ")).toBe("ECDH, prime256v1, 256 bits");
      expect(keyExchange(h).protocol).toBe(args.includes("-tls1_2") ? "TLSv1.2" : "TLSv1.3");
    }
  });

  it("a client offering only the hybrid group gets it; unknown names are still refused in the handshake", async () => {
    const only = await sClient(root, site, ["-groups", "X25519MLKEM768"]);
    expect(keyExchange(only).group).toBe("X25519MLKEM768");
    const unknown = await sClient(root, site, ["-groups", "X25519MLKEM768:X25519"], "unknown.example.test");
    expect(unknown.code).not.toBe(0);
    expect(unknown.out).toMatch(/unrecognized name|alert number 112/i);
  });
});

describe("where ssl_ecdh_curve takes effect (edited trees, nginx 1.26)", () => {
  let root = "";
  const sites: ChrootSite[] = [];
  beforeAll(() => {
    root = getChroot("trixie");
  }, CHROOT_BUILD_TIMEOUT_MS + 60_000);
  afterAll(async () => {
    for (const s of sites) await s.stop();
  });

  /** The rendered tree with the http-level line removed and `secp384r1` alone set in one server. */
  const moveGroups = (into: "site" | "default") => (files: StageFile[]) =>
    files.map((f) => {
      if (f.path === "conf/fastapi-edge/http.conf") return { ...f, content: f.content.replace(/^ssl_ecdh_curve .*$/m, "") };
      if (f.path !== "conf/fastapi-edge/site.conf") return f;
      const content =
        into === "site"
          ? f.content.replace(/(ssl_certificate_key [^;]+;)/, "$1\n    ssl_ecdh_curve secp384r1;")
          : f.content.replace("ssl_reject_handshake on;", "ssl_reject_handshake on;\n    ssl_ecdh_curve secp384r1;");
      if (content === f.content) throw new Error("edit did not apply");
      return { ...f, content };
    });

  for (const [into, expected] of [
    ["site", "X25519, 253 bits"],
    ["default", "ECDH, secp384r1, 384 bits"],
  ] as const) {
    it(`groups set only in the ${into} server: a client offering X25519 and secp384r1 gets ${expected}`, async () => {
      const s = await startChrootSite(root, { edit: moveGroups(into) });
      sites.push(s);
      for (const args of [
        ["-groups", "X25519:secp384r1"],
        ["-groups", "X25519:secp384r1:P-256", "-tls1_2"],
      ]) {
        const h = await sClient(root, s, args);
        expect(h.code, h.out).toBe(0);
        expect(keyExchange(h).tempKey, args.join(" ")).toBe(expected);
      }
    });
  }
});

// testssl.sh 3.0.8 (the host's Debian 12 package) predates the hybrid group.
// It must still scan the site cleanly; what it reports for the groups is
// pinned below, so a newer testssl that lists X25519MLKEM768 shows up here.
const EXPECTED_NOT_CONFIG = new Set(["cipher_order", "cert_expirationStatus", "cert_notAfter", "cert_revocation"]);
const BAD = new Set(["MEDIUM", "HIGH", "CRITICAL"]);

interface Finding {
  id: string;
  severity: string;
  finding: string;
}

describe("testssl.sh against the post-quantum site (nginx 1.26, OpenSSL 3.5)", () => {
  let site: ChrootSite;
  let findings: Finding[] = [];
  let exit: number | null = null;

  beforeAll(async () => {
    site = await startChrootSite(getChroot("trixie"));
    const stamp = `${new Date().toISOString().replace(/[-:]/g, "").slice(0, 15)}-${site.httpsPort}`;
    const json = artifactPath(`testssl-pq-${stamp}.json`);
    rmSync(json, { force: true });
    const args = ["--quiet", "--color", "0", "--warnings", "batch", "--nodns", "none", "--ip", "127.0.0.1", "--jsonfile", json];
    const scan = await run("testssl", [...args, "--add-ca", site.caHost, `https://${site.domain}:${site.httpsPort}/`], {
      env: { ...process.env, MAX_OSSL_FAIL: "10", MAX_SOCKET_FAIL: "10" },
      timeoutMs: 1_500_000,
    });
    exit = scan.code;
    writeFileSync(
      artifactPath(`testssl-pq-${stamp}.txt`),
      `exit ${scan.code} after ${scan.ms} ms\n${scan.stdout}\n--- stderr\n${scan.stderr}`,
    );
    if (!existsSync(json)) throw new Error(`testssl wrote no JSON (exit ${scan.code}):\n${scan.stderr.slice(-2000)}`);
    findings = JSON.parse(readFileSync(json, "utf8")) as Finding[];
    console.log(`testssl (PQ site): exit ${scan.code}, ${Math.round(scan.ms / 1000)} s, ${json}`);
  }, 1_600_000 + CHROOT_BUILD_TIMEOUT_MS);

  afterAll(async () => {
    await site?.stop();
  });

  const byId = (id: string): Finding => {
    const f = findings.find((x) => x.id === id);
    if (!f) throw new Error(`testssl reported no ${id}`);
    return f;
  };

  it("completes (no fatal error) and finds only TLS 1.2 and 1.3, forward secrecy everywhere", () => {
    expect(exit).not.toBeNull();
    expect(exit!).toBeLessThan(240);
    for (const id of ["SSLv2", "SSLv3", "TLS1", "TLS1_1"]) expect(byId(id).finding, id).toBe("not offered");
    expect(byId("TLS1_2").finding).toBe("offered");
    expect(byId("TLS1_3").finding).toMatch(/^offered/);
    expect(byId("PFS").severity).toBe("OK");
    expect(byId("cert_chain_of_trust").severity).toBe("OK");
  });

  it("reports nothing MEDIUM or worse about the configuration", () => {
    const bad = findings.filter((f) => BAD.has(f.severity) && !EXPECTED_NOT_CONFIG.has(f.id));
    expect(bad.map((f) => `${f.id}: ${f.severity} ${f.finding}`)).toEqual([]);
  });

  it("3.0.8 does not know X25519MLKEM768: it lists only the classical groups, rated OK", () => {
    const curves = byId("PFS_ECDHE_curves");
    expect(curves.severity).toBe("OK");
    expect(curves.finding.split(/\s+/).sort()).toEqual(["X25519", "prime256v1", "secp384r1"]);
  });
});
