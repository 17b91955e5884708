// HTTP/3 over QUIC, end to end on 127.0.0.1: the rendered site (http3: true)
// on real nginx 1.26 (Debian 13's, edge-trixie chroot) and 1.30 (Debian
// unstable's, edge-sid chroot), the sample FastAPI app behind it, and real
// HTTP/3 clients:
//   - curl --http3-only from the same chroot (trixie: curl 8.14 with OpenSSL's
//     QUIC stack; sid: curl 8.23 with ngtcp2);
//   - headless Chromium (the host's Debian package) forced onto QUIC for the
//     origin, reading performance entries' nextHopProtocol.
// The HTTP/2 path over TCP must be unchanged, and carry Alt-Svc; unknown
// names must be refused over QUIC as over TCP.
//
// Needs root (chroot; the first chroot build takes minutes).
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHROOT_BUILD_TIMEOUT_MS, ChrootSite, getChroot, inChroot, startChrootSite } from "../helpers/chroot-site";

interface CurlResult {
  exit: number | null;
  body: string;
  /** -w: "%{http_version} %{response_code}" */
  version: string;
  status: string;
  headers: string;
  stderr: string;
}

const MARK = "\n--fe-curl--";

/** curl inside a chroot against the site: name pinned to 127.0.0.1, the site's CA trusted. */
function curl(root: string, site: ChrootSite, args: string[], o: { name?: string; pathname?: string; ca?: boolean } = {}): CurlResult {
  const name = o.name ?? site.domain;
  const r = inChroot(
    root,
    [
      "curl",
      "-sS",
      "-v",
      "--max-time",
      "15",
      "--resolve",
      `${name}:${site.httpsPort}:127.0.0.1`,
      ...(o.ca === false ? ["-k"] : ["--cacert", site.caInside]),
      "-w",
      `${MARK}%{http_version} %{response_code}`,
      ...args,
      `https://${name}:${site.httpsPort}${o.pathname ?? "/api/hello"}`,
    ],
    { timeoutMs: 30_000 },
  );
  const at = r.stdout.lastIndexOf(MARK);
  const [version = "", status = ""] = r.stdout.slice(at + MARK.length).split(" ");
  // -v prints the response headers as "< name: value" lines.
  const headers = r.stderr
    .split(/\r?\n/)
    .filter((l) => l.startsWith("< "))
    .map((l) => l.slice(2).trimEnd())
    .join("\n");
  return { exit: r.status, body: r.stdout.slice(0, at), version, status, headers, stderr: r.stderr };
}

const ALT_SVC = (port: number): string => `h3=":${port}"; ma=86400`;

describe.each(["trixie", "sid"] as const)("HTTP/3 on the %s chroot's nginx", (which) => {
  let root = "";
  let site: ChrootSite;

  beforeAll(async () => {
    root = getChroot(which);
    site = await startChrootSite(root, { config: { http3: true } });
  }, CHROOT_BUILD_TIMEOUT_MS + 60_000);

  afterAll(async () => {
    await site?.stop();
  });

  it("curl --http3-only gets the app's response over HTTP/3, and nginx logged it as HTTP/3.0", () => {
    const r = curl(root, site, ["--http3-only"]);
    expect(r.exit, r.stderr).toBe(0);
    expect(r.version).toBe("3");
    expect(r.status).toBe("200");
    expect(JSON.parse(r.body)).toMatchObject({ message: "hello, world" });
    // The site's headers travel over h3 too.
    expect(r.headers).toMatch(/^strict-transport-security: max-age=63072000; includeSubDomains$/im);
    expect(r.headers.split("\n").filter((l) => /^alt-svc:/i.test(l))).toEqual([`alt-svc: ${ALT_SVC(site.httpsPort)}`]);
    const log = readFileSync(path.join(site.root, site.prefix, "var/log/nginx/fastapi-edge.access.log"), "utf8");
    const lines = log
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { method: string; path: string; protocol: string; status: number });
    expect(lines.some((l) => l.method === "GET" && l.path === "/api/hello" && l.protocol === "HTTP/3.0" && l.status === 200)).toBe(true);
  });

  it("the QUIC handshake uses the post-quantum group too: a client offering only X25519MLKEM768 gets h3", async () => {
    const pq = curl(root, site, ["--http3-only", "--curves", "X25519MLKEM768"]);
    expect(pq.exit, pq.stderr).toBe(0);
    expect([pq.version, pq.status]).toEqual(["3", "200"]);
    // Control: the same nginx with the classical list (as rendered for OpenSSL 3.0) refuses that client.
    const classic = await startChrootSite(root, { config: { http3: true }, opensslVersion: "3.0" });
    try {
      const r = curl(root, classic, ["--http3-only", "--curves", "X25519MLKEM768"]);
      expect(r.exit).not.toBe(0);
      expect(r.status).toBe("000");
      expect(curl(root, classic, ["--http3-only"]).status).toBe("200");
    } finally {
      await classic.stop();
    }
  });

  it("HTTP/2 and HTTP/1.1 over TCP are unchanged and advertise h3 with Alt-Svc on the HTTPS port", () => {
    const h2 = curl(root, site, ["--http2"]);
    expect(h2.exit, h2.stderr).toBe(0);
    expect([h2.version, h2.status]).toEqual(["2", "200"]);
    expect(JSON.parse(h2.body)).toMatchObject({ message: "hello, world" });
    expect(h2.stderr).toMatch(/ALPN: server accepted h2/);
    const h1 = curl(root, site, ["--http1.1"]);
    expect([h1.version, h1.status]).toEqual(["1.1", "200"]);
    for (const r of [h2, h1]) {
      // HTTP/1.1 keeps nginx's spelling (Alt-Svc); HTTP/2 and 3 send lower case.
      const alt = r.headers
        .split("\n")
        .filter((l) => /^alt-svc:/i.test(l))
        .map((l) => l.replace(/^alt-svc:/i, "alt-svc:"));
      expect(alt).toEqual([`alt-svc: ${ALT_SVC(site.httpsPort)}`]);
    }
    // Errors too (`always`): a 404 from the app.
    const missing = curl(root, site, ["--http2"], { pathname: "/no-such-page" });
    expect(missing.status).toBe("404");
    expect(missing.headers).toMatch(/^alt-svc: /im);
  });

  it("an unknown SNI name over QUIC is refused in the handshake (TLS alert 112), as over TCP; so is no SNI at all", () => {
    // --trace-config all: the QUIC layer's own messages (the close reason).
    const unknown = curl(root, site, ["--http3-only", "--trace-config", "all"], { name: "unknown.example.test", ca: false, pathname: "/" });
    expect(unknown.exit).not.toBe(0);
    expect(unknown.status).toBe("000");
    expect(unknown.body).toBe("");
    // sid's curl (ngtcp2) names the alert; trixie's (OpenSSL QUIC) only says the connection was shut down.
    expect(unknown.stderr).toMatch(which === "sid" ? /crypto error, tls alert=112/ : /QUIC connection has been shut down/);
    const tcp = curl(root, site, ["--http2"], { name: "unknown.example.test", ca: false, pathname: "/" });
    expect(tcp.status).toBe("000");
    expect(tcp.stderr).toMatch(/unrecognized name|alert number 112/i);
    // An IP address sends no SNI.
    const r = inChroot(root, [
      "curl",
      "-sS",
      "-k",
      "--max-time",
      "15",
      "--http3-only",
      "-w",
      "%{response_code}",
      `https://127.0.0.1:${site.httpsPort}/`,
    ]);
    expect(r.status).not.toBe(0);
    expect(r.stdout).toBe("000");
  });

  it("the site's SNI with an unknown Host (:authority) gets no response over HTTP/3, HTTP/2 or HTTP/1.1 (444)", () => {
    for (const proto of ["--http3-only", "--http2", "--http1.1"]) {
      const r = curl(root, site, [proto, "-H", "Host: unknown.example.test"]);
      expect(r.exit, `${proto}: ${r.stderr}`).not.toBe(0);
      expect(r.status, proto).toBe("000");
      expect(r.body, proto).toBe("");
      // h3 and h2: the stream is reset; HTTP/1.1: the connection is reset with nothing sent.
      expect(r.stderr, proto).toMatch(proto === "--http1.1" ? /Connection reset by peer/ : /stream \d+ (was )?(reset|not closed cleanly)/);
    }
    // Control: the same request with the site's Host is answered.
    expect(curl(root, site, ["--http3-only", "-H", `Host: ${site.domain}`]).status).toBe("200");
  });
});

// Headless Chromium, a browser's QUIC stack (Chromium 156 from Debian 12's
// security archive): forced onto QUIC for the site's origin (there is no
// Alt-Svc cache on a first visit), trusting the test certificate by its
// public key, with the site's name mapped to 127.0.0.1.
const chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => existsSync(p));

describe.skipIf(chromium === undefined)("HTTP/3 with headless Chromium (nginx 1.26, edge-trixie)", () => {
  let root = "";
  let site: ChrootSite;
  let profiles: string[] = [];

  beforeAll(async () => {
    root = getChroot("trixie");
    site = await startChrootSite(root, { config: { http3: true } });
    // A page that reports how it and a fetch of the API travelled.
    writeFileSync(
      path.join(site.root, site.prefix, "opt/fastapi-edge/app/static/h3.html"),
      [
        '<!doctype html><html><body><pre id="out">pending</pre><script>',
        'const nav = performance.getEntriesByType("navigation")[0].nextHopProtocol;',
        'fetch("/api/hello").then((r) => r.json()).then((j) => {',
        '  const e = performance.getEntriesByType("resource").find((x) => x.name.includes("/api/hello"));',
        '  document.getElementById("out").textContent = `nav=${nav} api=${e ? e.nextHopProtocol : "?"} msg=${j.message}`;',
        '}).catch((err) => { document.getElementById("out").textContent = `nav=${nav} error=${err}`; });',
        "</script></body></html>",
      ].join("\n"),
    );
  }, CHROOT_BUILD_TIMEOUT_MS + 60_000);

  afterAll(async () => {
    await site?.stop();
    for (const p of profiles) rmSync(p, { recursive: true, force: true });
    profiles = [];
  });

  const load = (forceQuic: boolean): string => {
    // SPKI pin of the site's leaf certificate (what --ignore-certificate-errors-spki-list takes).
    const cert = path.join(path.dirname(site.caHost), "cert.pem");
    const der = execFileSync("openssl", ["x509", "-in", cert, "-pubkey", "-noout"]);
    const spki = execFileSync("sh", ["-c", "openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"], { input: der })
      .toString()
      .trim();
    const profile = mkdtempSync("/tmp/fe-chromium-");
    profiles.push(profile);
    const origin = `${site.domain}:${site.httpsPort}`;
    const r = spawnSync(
      chromium!,
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        `--user-data-dir=${profile}`,
        `--host-resolver-rules=MAP ${site.domain} 127.0.0.1`,
        ...(forceQuic ? [`--origin-to-force-quic-on=${origin}`] : []),
        `--ignore-certificate-errors-spki-list=${spki}`,
        "--virtual-time-budget=5000",
        "--dump-dom",
        `https://${origin}/static/h3.html`,
      ],
      { encoding: "utf8", timeout: 90_000 },
    );
    const m = /<pre id="out">([^<]*)<\/pre>/.exec(r.stdout);
    if (!m) throw new Error(`no result from chromium (exit ${r.status}):\n${r.stdout.slice(0, 2000)}\n${r.stderr.slice(-2000)}`);
    return m[1]!;
  };

  it("loads the page and the API over h3 when QUIC is forced for the origin", () => {
    expect(load(true)).toBe("nav=h3 api=h3 msg=hello, world");
  }, 120_000);

  it("a first visit without forcing goes over TCP (h2): Alt-Svc only takes effect on later connections", () => {
    expect(load(false)).toBe("nav=h2 api=h2 msg=hello, world");
  }, 120_000);
});
