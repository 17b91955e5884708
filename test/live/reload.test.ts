// Reload under load: while wrk runs against the live site, push 10 changed
// configs (client_max_body_size 100k, 200k, ... 1000k) through
// files/scripts/nginx-apply.sh (candidate nginx -t, install, live nginx -t,
// reload), then a broken candidate, which must be refused while the old
// config keeps serving.
//
// Two wrk runs share the load:
// - one request per TLS connection (`Connection: close`): what nginx's
//   graceful reload promises. Every request that reaches nginx is answered
//   by an old or a new worker. The bar: 0 non-2xx, 0 socket errors.
// - keep-alive connections: an old worker finishes the request in flight
//   and then closes the connection (nginx 1.22 does this on every graceful
//   shutdown, without a `Connection: close` header), so a client that has
//   already sent its next request on it loses that one. wrk does not retry
//   (browsers and most HTTP/1.1 clients retry idempotent requests; HTTP/2
//   clients get GOAWAY). Asserted: no error responses, nothing refused, and
//   at most one lost request per connection per reload; the count is printed.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { childPids, startLiveSite, wrkFailures, type LiveSite, type WrkResult } from "../helpers/live-site";
import { sleep, waitFor } from "../helpers/proc";

const PUSHES = 10;
const STRICT_CONNS = 10;
const KEEPALIVE_CONNS = 10;

let site: LiveSite;

beforeAll(async () => {
  site = await startLiveSite({});
});

afterAll(async () => {
  await site?.stop();
});

async function postStatus(bytes: number): Promise<number> {
  const r = await site.https("/api/whoami", {
    method: "POST",
    body: Buffer.alloc(bytes, 0x62),
    headers: { "Content-Type": "application/octet-stream" },
  });
  return r.status;
}

/** The body limit in force: just over it is 413, just under it reaches the app (405). */
async function waitForLimit(kb: number): Promise<void> {
  await waitFor(
    async () => (await postStatus(kb * 1024 + 512)) === 413 && (await postStatus(kb * 1024 - 512)) === 405,
    `client_max_body_size ${kb}k to be in force`,
    20_000,
    200,
  );
}

function summary(name: string, r: WrkResult): string {
  const e = r.errors;
  return `${name}: ${r.requests} requests, ${r.rps.toFixed(0)}/s, non-2xx ${e.status}, socket errors connect ${e.connect} read ${e.read} write ${e.write} timeout ${e.timeout}`;
}

describe("nginx-apply.sh under load", () => {
  it(`${PUSHES} config pushes while wrk runs: 0 failed requests; then a broken candidate is refused and the old config keeps serving`, async () => {
    const url = site.httpsUrl("/api/hello");
    const strict = await site.startWrk({ url, connections: STRICT_CONNS, threads: 1, durationS: 600, headers: { Connection: "close" } });
    const keepalive = await site.startWrk({ url, connections: KEEPALIVE_CONNS, threads: 1, durationS: 600 });
    let strictRes: WrkResult | null = null;
    let keepaliveRes: WrkResult | null = null;
    const master = site.nginxPid();
    try {
      await sleep(1_000);
      for (let i = 1; i <= PUSHES; i++) {
        const kb = i * 100;
        const res = await site.apply(site.writeStage(site.render({ clientMaxBodySize: `${kb}k` })));
        expect(res.code, `push ${i}: ${res.stderr}`).toBe(0);
        expect(res.stdout).toMatch(/nginx config applied: 1 file\(s\) changed/);
        expect(readFileSync(`${site.fixture.confDir}/fastapi-edge/http.conf`, "utf8")).toContain(`client_max_body_size ${kb}k;`);
        await waitForLimit(kb);
      }

      // A broken candidate: an invalid directive injected into a rendered file.
      const before = site.snapshotConf();
      const workersBefore = childPids(master).sort();
      const broken = site
        .render({ clientMaxBodySize: "64k" })
        .map((f) =>
          f.path === "conf/fastapi-edge/http.conf" ? { ...f, content: `${f.content}\nfastapi_edge_no_such_directive on;\n` } : f,
        );
      const refused = await site.apply(site.writeStage(broken));
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain("candidate nginx config rejected by nginx -t; live config unchanged");
      expect(refused.stderr).toMatch(/\[emerg\].*unknown directive "fastapi_edge_no_such_directive" in \S+\/fastapi-edge\/http\.conf:\d+/);
      expect(refused.stdout).not.toMatch(/config applied/);
      expect(site.snapshotConf()).toEqual(before);
      // no reload happened: same master, same workers, the last good limit still in force
      await sleep(500);
      expect(site.nginxPid()).toBe(master);
      expect(childPids(master).sort()).toEqual(workersBefore);
      expect(await postStatus(PUSHES * 100 * 1024 - 512)).toBe(405);
      expect((await site.https("/api/hello")).status).toBe(200);
      await sleep(1_000);
    } finally {
      strictRes = await strict.stop();
      keepaliveRes = await keepalive.stop();
    }
    console.log(summary("one request per connection", strictRes));
    console.log(summary("keep-alive", keepaliveRes));

    // The bar, for what a reload promises: nothing failed.
    expect(strictRes.requests).toBeGreaterThan(100);
    expect(wrkFailures(strictRes)).toBe(0);
    // Keep-alive: no error response, nothing refused or timed out; only the
    // request a client had in flight on a connection an old worker closed.
    expect(keepaliveRes.requests).toBeGreaterThan(1_000);
    expect(keepaliveRes.errors.status).toBe(0);
    expect(keepaliveRes.errors.connect).toBe(0);
    expect(keepaliveRes.errors.timeout).toBe(0);
    expect(keepaliveRes.errors.read + keepaliveRes.errors.write).toBeLessThanOrEqual(KEEPALIVE_CONNS * PUSHES);
  }, 300_000);
});
