// Unknown Host names with the site's own SNI, on the host's nginx (Debian 12:
// 1.22): the TLS handshake succeeds (the name is ours), then nginx picks the
// server by Host, lands in the default server, and must answer nothing
// (return 444) over HTTP/1.1 and HTTP/2 alike. Before, it served nginx's
// built-in root: a 404 page from our certificate's host.
// The same over HTTP/3 on nginx 1.26 and 1.30 is in http3.test.ts.
import http2 from "node:http2";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLiveSite, type LiveSite } from "../helpers/live-site";

let site: LiveSite;

beforeAll(async () => {
  site = await startLiveSite({});
}, 120_000);

afterAll(async () => {
  await site?.stop();
});

/** One HTTP/2 request with the site's SNI and the given :authority. */
function h2(authority: string): Promise<{ status: number | null; body: string; error: string | null }> {
  return new Promise((resolve) => {
    const session = http2.connect(`https://127.0.0.1:${site.httpsPort}`, { servername: site.domain, ca: readFileSync(site.caCert) });
    const done = (r: { status: number | null; body: string; error: string | null }): void => {
      session.close();
      resolve(r);
    };
    session.on("error", (e: Error) => done({ status: null, body: "", error: e.message }));
    const req = session.request({ ":path": "/api/hello", ":authority": authority });
    let status: number | null = null;
    let body = "";
    req.on("response", (h) => {
      status = Number(h[":status"]);
    });
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => done({ status, body, error: null }));
    req.on("error", (e: Error) => done({ status, body, error: e.message }));
    req.setTimeout(10_000, () => done({ status, body, error: "timeout" }));
    req.end();
  });
}

describe("the site's SNI with an unknown Host (nginx 1.22 on the host)", () => {
  it("HTTP/1.1: no response at all", async () => {
    const r = await site.raw("GET /api/hello HTTP/1.1\r\nHost: unknown.example.test\r\n\r\n");
    expect(r.bytes.toString()).toBe("");
    expect(r.closed).not.toBe("timeout");
    // Control: the same connection shape with the site's Host is answered.
    const ok = await site.raw(`GET /api/hello HTTP/1.1\r\nHost: ${site.domain}\r\nConnection: close\r\n\r\n`);
    expect(ok.bytes.toString()).toMatch(/^HTTP\/1\.1 200 /);
  });

  it("HTTP/2: the stream is reset, no status, no body", async () => {
    const r = await h2("unknown.example.test");
    expect(r.status).toBeNull();
    expect(r.body).toBe("");
    expect(r.error).toMatch(/RST_STREAM|NGHTTP2_PROTOCOL_ERROR|stream error/i);
    const ok = await h2(site.domain);
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toMatchObject({ message: "hello, world" });
  });
});
