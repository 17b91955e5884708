// Live proof of frontedBy: real nginx running the rendered files (realip.conf
// at http level, the origin-pull CA in the TLS server) in front of the sample
// app under uvicorn, all on loopback. Linux routes all of 127/8 to lo, so a
// client socket bound to 127.0.0.9 is a "proxy" at 127.0.0.9: the stack
// trusts 127.0.0.8/29 (127.0.0.8-15), and 127.0.0.2-3 play clients that
// connect directly, from outside the trusted block.
//
// The site starts as frontedBy custom with X-Forwarded-For, then each later
// setting (CF-Connecting-IP, cloudflare, origin pulls) is pushed to the same
// nginx through files/scripts/nginx-apply.sh, as `pulumi up` would.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import https from "node:https";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { accessLogLines, childPids, type LiveSite, startLiveSite } from "../helpers/live-site";
import { ecKeyReqArgs } from "../helpers/nginx-fixture";
import { collectResponse, type HttpResponse, isAlive, sleep, waitFor } from "../helpers/proc";

const PROXY_1 = "127.0.0.9";
const PROXY_2 = "127.0.0.10";
const CLIENT_A = "127.0.0.2";
const CLIENT_B = "127.0.0.3";

interface WhoAmI {
  client: string | null;
  forwarded: Record<"x-forwarded-for" | "x-forwarded-proto" | "x-real-ip", string | null>;
}

/** Loopback ports this helper may use (the house range), free when picked. */
async function portsInRange(n: number, from = 20600, to = 20999): Promise<number[]> {
  const out: number[] = [];
  for (let p = from + Math.floor(Math.random() * 200); out.length < n && p <= to; p++) {
    const free = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once("error", () => resolve(false));
      srv.listen(p, "127.0.0.1", () => srv.close(() => resolve(true)));
    });
    if (free) out.push(p);
  }
  if (out.length < n) throw new Error(`only ${out.length} free ports in ${from}-${to}`);
  return out;
}

let site: LiveSite;
let pki: { dir: string; ca: string; good: { cert: string; key: string }; other: { cert: string; key: string } };

beforeAll(async () => {
  site = await startLiveSite({
    ports: await portsInRange(3),
    config: {
      frontedBy: "custom",
      trustedProxyCidrs: ["127.0.0.8/29"],
      rateLimits: ["/auth/token:1r/m:2"],
      limitConnPerIp: 1,
    },
  });
  pki = makeClientPki(path.join(site.root, "client-pki"));
}, 60_000);

afterAll(async () => {
  await site?.stop();
});

/** A CA standing for the CDN's origin-pull CA, a client certificate from it, and one from another CA. */
function makeClientPki(dir: string): typeof pki {
  mkdirSync(dir, { recursive: true });
  const openssl = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const client = (caName: string, name: string) => {
    openssl(ecKeyReqArgs({ keyout: `${caName}.key`, out: `${caName}.pem`, days: 30, subj: `/CN=${caName}` }));
    openssl(ecKeyReqArgs({ keyout: `${name}.key`, out: `${name}.csr`, subj: `/CN=${name}` }));
    writeFileSync(path.join(dir, "client.ext"), "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n");
    openssl([
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${caName}.pem`,
      "-CAkey",
      `${caName}.key`,
      "-CAcreateserial",
      "-out",
      `${name}.pem`,
      "-days",
      "30",
      "-extfile",
      "client.ext",
    ]);
    return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
  };
  const good = client("origin-pull-ca", "cdn-edge");
  const other = client("some-other-ca", "stranger");
  return { dir, ca: path.join(dir, "origin-pull-ca.pem"), good, other };
}

/** HTTPS to the site from a chosen source address, with optional headers and client certificate. */
function request(
  p: string,
  o: { from: string; headers?: Record<string, string>; method?: string; body?: string; clientCert?: { cert: string; key: string } },
): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port: site.httpsPort,
        path: p,
        method: o.method ?? "GET",
        servername: site.domain,
        ca: readFileSync(site.caCert),
        agent: false,
        localAddress: o.from,
        headers: { Host: site.domain, ...(o.headers ?? {}) },
        ...(o.clientCert ? { cert: readFileSync(o.clientCert.cert), key: readFileSync(o.clientCert.key) } : {}),
      },
      (res) => collectResponse(res, resolve, reject),
    );
    req.setTimeout(15_000, () => req.destroy(new Error(`timeout: ${p}`)));
    req.on("error", reject);
    req.end(o.body);
  });
}

async function whoami(from: string, headers: Record<string, string> = {}, nonce = ""): Promise<WhoAmI> {
  // The nonce rides in the User-Agent: the access log never records query strings.
  const r = await request("/api/whoami", { from, headers: nonce ? { "User-Agent": `realip-test n=${nonce}`, ...headers } : headers });
  expect(r.status, r.text).toBe(200);
  return JSON.parse(r.text) as WhoAmI;
}

/** What the app sees and is told: the client address and X-Forwarded-For equal `ip`; X-Real-IP is cleared (proxyForwardedHeaders minimal). */
function expectSeenAs(j: WhoAmI, ip: string, label: string): void {
  expect(j.client, label).toBe(ip);
  expect(j.forwarded["x-forwarded-for"], label).toBe(ip);
  expect(j.forwarded["x-real-ip"], label).toBeNull();
  expect(j.forwarded["x-forwarded-proto"], label).toBe("https");
}

/** POST /auth/token (1r/m, burst 2: three pass, then 429) n times; the statuses. */
async function token(from: string, headers: Record<string, string>, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = await request("/auth/token", {
      from,
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", ...headers },
      body: "username=u",
    });
    out.push(r.status);
  }
  return out;
}

/** The client address ($remote_addr) the access log recorded for the request carrying `nonce`. */
async function logLine(nonce: string): Promise<string> {
  for (let i = 0; i < 20; i++) {
    const lines = accessLogLines(site, `realip-test n=${nonce}"`);
    if (lines.length) return (JSON.parse(lines[0]!) as { client: string }).client;
    await sleep(50);
  }
  throw new Error(`no access-log line for ${nonce}`);
}

/**
 * Push a new config through nginx-apply.sh, then wait until the previous
 * generation of workers has exited: nginx-apply.sh returns once new workers
 * run, and an old worker can still accept a connection for a moment after.
 */
async function push(overrides: Record<string, unknown>): Promise<void> {
  const old = childPids(site.nginxPid());
  const res = await site.apply(site.writeStage(site.render(overrides)));
  expect(res.code, res.stdout + res.stderr).toBe(0);
  await waitFor(() => !old.some(isAlive), "the old nginx workers to exit", 15_000);
}

describe("frontedBy custom, X-Forwarded-For, trusted 127.0.0.8/29", () => {
  it("a trusted proxy's X-Forwarded-For becomes the client address: the app, its headers and the access log see it", async () => {
    const j = await whoami(PROXY_1, { "X-Forwarded-For": "203.0.113.1" }, "trusted-1");
    expectSeenAs(j, "203.0.113.1", "via trusted proxy");
    // The access log's client ($remote_addr) is the restored address, not the proxy's.
    expect(await logLine("trusted-1")).toBe("203.0.113.1");
    // Another address inside the block is trusted too; one just outside (127.0.0.16) is not.
    expectSeenAs(await whoami("127.0.0.15", { "X-Forwarded-For": "203.0.113.2" }), "203.0.113.2", "127.0.0.15");
    expectSeenAs(await whoami("127.0.0.16", { "X-Forwarded-For": "203.0.113.2" }), "127.0.0.16", "127.0.0.16");
  });

  it("the same header from an untrusted address changes nothing (app, headers, log)", async () => {
    const spoofs: Record<string, string>[] = [
      { "X-Forwarded-For": "203.0.113.1" },
      { "X-Forwarded-For": "203.0.113.1, 127.0.0.9" },
      { "X-Real-IP": "203.0.113.1" },
      { "CF-Connecting-IP": "203.0.113.1" },
    ];
    for (const [i, headers] of spoofs.entries()) {
      const label = JSON.stringify(headers);
      expectSeenAs(await whoami(CLIENT_A, headers, `untrusted-${i}`), CLIENT_A, label);
      expect(await logLine(`untrusted-${i}`), label).toBe(CLIENT_A);
    }
  });

  it("chains are read from the right past trusted hops; what a client wrote itself is never taken", async () => {
    const cases: [string, string][] = [
      // client forged 203.0.113.66, the first proxy appended the real 198.51.100.7
      ["203.0.113.66, 198.51.100.7", "198.51.100.7"],
      // client, then a second trusted hop inside the block
      ["198.51.100.7, 127.0.0.12", "198.51.100.7"],
      ["203.0.113.66, 198.51.100.7, 127.0.0.12, 127.0.0.13", "198.51.100.7"],
      ["2001:db8::7", "2001:db8::7"],
    ];
    for (const [xff, want] of cases) {
      // The app gets one address, never the chain: nothing the client wrote is passed on.
      expectSeenAs(await whoami(PROXY_1, { "X-Forwarded-For": xff }), want, xff);
    }
    // A trusted proxy sending junk: no address to restore, the proxy's own stays.
    expectSeenAs(await whoami(PROXY_1, { "X-Forwarded-For": "not-an-address" }), PROXY_1, "junk");
    // No header at all from a trusted proxy: the proxy's own address.
    expectSeenAs(await whoami(PROXY_1), PROXY_1, "no header");
  });

  it("rate limits count per restored address: two header addresses through one proxy get separate buckets, one address through two proxies shares one", async () => {
    const H1 = { "X-Forwarded-For": "198.51.100.21" };
    const H2 = { "X-Forwarded-For": "198.51.100.22" };
    expect(await token(PROXY_1, H1, 4)).toEqual([200, 200, 200, 429]);
    expect(await token(PROXY_1, H2, 1)).toEqual([200]);
    expect(await token(PROXY_2, H1, 1)).toEqual([429]);
    // The proxy's own address has its own bucket, untouched by the clients behind it.
    expect(await token(PROXY_1, {}, 1)).toEqual([200]);
  });

  it("from an untrusted address the header picks no bucket: the limit is per that address", async () => {
    expect(await token(CLIENT_B, { "X-Forwarded-For": "198.51.100.31" }, 4)).toEqual([200, 200, 200, 429]);
    expect(await token(CLIENT_B, { "X-Forwarded-For": "198.51.100.32" }, 1)).toEqual([429]);
    expect(await token(CLIENT_B, {}, 1)).toEqual([429]);
  });

  it("limit_conn (limitConnPerIp 1) counts per restored address too", async () => {
    const slow = (from: string, ip: string) => request("/api/slow?ms=1500", { from, headers: { "X-Forwarded-For": ip } });
    // Two clients behind one proxy: both served at once.
    const apart = await Promise.all([slow(PROXY_1, "198.51.100.41"), slow(PROXY_1, "198.51.100.42")]);
    expect(apart.map((r) => r.status).sort()).toEqual([200, 200]);
    // One client through two proxies at once: the second is over the limit.
    const same = await Promise.all([slow(PROXY_1, "198.51.100.43"), slow(PROXY_2, "198.51.100.43")]);
    expect(same.map((r) => r.status).sort()).toEqual([200, 429]);
  });

  it("unknown Host names and scanner paths are still closed without a response (444) for restored clients", async () => {
    const raw = (host: string, p: string) =>
      new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = [];
        const s = net.connect({ host: "127.0.0.1", port: site.httpPort, localAddress: PROXY_1 }, () =>
          s.write(`GET ${p} HTTP/1.1\r\nHost: ${host}\r\nX-Forwarded-For: 198.51.100.50\r\nConnection: close\r\n\r\n`),
        );
        s.on("data", (c: Buffer) => chunks.push(c));
        s.on("close", () => resolve(Buffer.concat(chunks)));
        s.on("error", () => resolve(Buffer.concat(chunks)));
      });
    expect((await raw("unknown.example.test", "/")).length).toBe(0);
    expect((await raw(site.domain, "/")).toString()).toMatch(/^HTTP\/1\.1 301 /);
    const scanner = await request("/wp-login.php", { from: PROXY_1, headers: { "X-Forwarded-For": "198.51.100.50" } }).then(
      () => "answered",
      (e: Error) => e.message,
    );
    expect(scanner).toMatch(/socket hang up|ECONNRESET/);
  });
});

describe("frontedBy custom with a single-address header (CF-Connecting-IP)", () => {
  beforeAll(async () => {
    await push({ realIpHeader: "CF-Connecting-IP" });
  }, 120_000);

  it("the configured header is honoured from a trusted proxy, X-Forwarded-For no longer is", async () => {
    expectSeenAs(await whoami(PROXY_1, { "CF-Connecting-IP": "203.0.113.50" }), "203.0.113.50", "CF-Connecting-IP");
    expectSeenAs(await whoami(PROXY_1, { "X-Forwarded-For": "203.0.113.51" }), PROXY_1, "XFF ignored");
    expectSeenAs(await whoami(CLIENT_A, { "CF-Connecting-IP": "203.0.113.52" }), CLIENT_A, "untrusted");
  });
});

describe("frontedBy cloudflare", () => {
  beforeAll(async () => {
    await push({ frontedBy: "cloudflare", trustedProxyCidrs: "", realIpHeader: "" });
  }, 120_000);

  it("nginx runs with every shipped range (nginx -t passed in nginx-apply.sh) and trusts only them", async () => {
    const conf = readFileSync(path.join(site.fixture.confDir, "fastapi-edge/realip.conf"), "utf8");
    const from = conf.split("\n").filter((l) => l.startsWith("set_real_ip_from "));
    expect(from).toHaveLength(22);
    expect(conf).toContain("real_ip_header CF-Connecting-IP;");
    // Loopback is not Cloudflare: the header changes nothing, whoever sends it.
    expectSeenAs(await whoami(PROXY_1, { "CF-Connecting-IP": "203.0.113.60" }), PROXY_1, "127.0.0.9 is no longer trusted");
    expectSeenAs(await whoami(CLIENT_A, { "CF-Connecting-IP": "203.0.113.60" }), CLIENT_A, "untrusted");
  });
});

describe("authenticated origin pulls (originPullCaFile)", () => {
  beforeAll(async () => {
    await push({ originPullCaFile: pki.ca });
  }, 120_000);

  it("a client without a certificate, or with one from another CA, gets 400 and never reaches the app", async () => {
    await site.resetStats();
    const none = await request("/api/whoami", { from: CLIENT_A });
    expect(none.status).toBe(400);
    expect(none.text).toMatch(/No required SSL certificate was sent/);
    const other = await request("/api/whoami", { from: CLIENT_A, clientCert: pki.other });
    expect(other.status).toBe(400);
    expect(other.text).toMatch(/SSL certificate error/);
    expect((await site.stats()).requests).toBe(0);
  });

  it("a client with a certificate from the configured CA is served (and its restored address still applies)", async () => {
    const r = await request("/api/whoami", { from: CLIENT_A, clientCert: pki.good });
    expect(r.status, r.text).toBe(200);
    expectSeenAs(JSON.parse(r.text) as WhoAmI, CLIENT_A, "with certificate");
  });

  it("port 80 still serves ACME challenges and the redirect; unknown SNI names are still refused in the handshake", async () => {
    const dir = path.join(site.acmeWebroot, ".well-known/acme-challenge");
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, "tok-realip"), "tok-realip.thumb");
    const acme = await site.http("/.well-known/acme-challenge/tok-realip");
    expect(acme.status).toBe(200);
    expect(acme.text).toBe("tok-realip.thumb");
    expect((await site.http("/")).status).toBe(301);
    const unknown = await site.raw("GET / HTTP/1.1\r\nHost: unknown.example.test\r\n\r\n", { servername: "unknown.example.test" });
    expect(unknown.bytes.length).toBe(0);
    expect(unknown.error).toMatch(/unrecognized name|alert number 112/i);
  });
});
