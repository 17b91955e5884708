// Stress promise 3: with two app processes under load (wrk, GET through
// nginx), `kill -9` of one loses no idempotent request: nginx retries it on
// the other (proxy_next_upstream error timeout http_502 http_503). The killed
// process is started again after RestartSec (systemd's Restart=on-failure,
// simulated by a bounded supervisor loop: there is no systemd here) and
// rejoins: its /_stats request count grows again once upstream fail_timeout
// has passed. Figures: docs/stress.md; `npx tsx bench/stress.ts`.
//
// One case nginx cannot retry: a response whose header had already reached
// nginx when the process died (uvicorn writes the header and the body with
// separate writes). nginx has then committed to that response, cuts it, and
// closes the client connection (wrk counts a read error; nginx logs
// "upstream prematurely closed connection while reading upstream"). A
// uvicorn process writes one response at a time, so a kill cuts at most one.
// The test counts those apart and allows that one; every other failure fails it.
import { describe, expect, it } from "vitest";
import { wrkFailures } from "../helpers/live-site";
import { failoverScenario } from "./scenarios";

const log = (l: string): void => console.log(`[failover] ${l}`);

describe("failover: kill -9 of an app process under load", () => {
  it("0 failed GET requests; the process is restarted and rejoins", async () => {
    const f = await failoverScenario({ restartSec: 1, log });
    log(`error log: ${JSON.stringify(f.errorLog)}`);
    expect(f.wrk.requests).toBeGreaterThan(1000);
    const e = f.wrk.errors;
    // Nothing refused, timed out or answered with an error status...
    expect(e.status).toBe(0);
    expect(e.connect + e.write + e.timeout, JSON.stringify(e)).toBe(0);
    // ...and a cut connection only for the response the killed process was
    // writing (at most one; usually none).
    expect(f.errorLog.midResponse).toBeLessThanOrEqual(1);
    expect(e.read, `read errors ${e.read}, cut responses in nginx's log ${f.errorLog.midResponse}`).toBeLessThanOrEqual(
      f.errorLog.midResponse,
    );
    if (wrkFailures(f.wrk) > 0) log(`${wrkFailures(f.wrk)} request cut mid-response by the kill (nginx had its header; not retryable)`);
    expect(f.restarts).toBe(1);
    expect(f.restartedPid).not.toBe(f.killedPid);
    expect(f.restartedPid).toBeGreaterThan(0);
    // nginx noticed: the killed process's requests failed over to the other one.
    expect(f.errorLog.disabled + f.errorLog.premature + f.errorLog.reset + f.errorLog.refused).toBeGreaterThan(0);
    // Rejoined: the new process served requests through nginx.
    expect(f.rejoinMs).toBeGreaterThan(0);
    expect(f.rejoinRequests).toBeGreaterThanOrEqual(50);
  }, 120_000);
});
