// Stress promise 1: nginx holds 10,000 concurrent idle keep-alive TLS
// connections (worker_connections 16384, worker_rlimit_nofile 2*16384+1024)
// while a normal wrk load through it sees 0 errors; with the distribution's
// worker_connections 768 the same run loses connections.
//
// The connections come from test/stress/conn-holder.ts in a child process with
// its open-file limit raised to the hard limit. Each sends one request for a
// static file (so nginx moves it to keep-alive and the app is not involved),
// then idles. Figures and their meaning: docs/stress.md; `npx tsx bench/stress.ts`.
import { describe, expect, it } from "vitest";
import { wrkFailures } from "../helpers/live-site";
import { connectionsScenario } from "./scenarios";

const COUNT = 10_000;
const log = (l: string): void => console.log(`[connections] ${l}`);

describe("10,000 idle keep-alive TLS connections through nginx", () => {
  it("workerConnections 16384: all 10,000 held while wrk sees 0 errors; nginx RSS reported", async () => {
    const f = await connectionsScenario({ workerConnections: 16384, count: COUNT, rampDeadlineMs: 90_000, wrkSeconds: 8, log });
    const perConnKb = (f.memHeld.totalKb - f.memBefore.totalKb) / COUNT;
    log(
      `nginx RSS ${(f.memBefore.totalKb / 1024).toFixed(1)} MiB -> ${(f.memHeld.totalKb / 1024).toFixed(1)} MiB with ${COUNT} held (${perConnKb.toFixed(1)} KiB each); worker fds ${f.workerFds.join(", ")}; worker RLIMIT_NOFILE ${f.workerNofile.join(", ")}`,
    );
    expect(f.ramp.opened, JSON.stringify(f.ramp)).toBe(COUNT);
    expect(f.ramp.failed).toBe(0);
    // The normal load ran and nothing failed.
    expect(f.wrk.requests).toBeGreaterThan(1000);
    expect(wrkFailures(f.wrk), JSON.stringify(f.wrk.errors)).toBe(0);
    // All 10,000 still open at the end: the client's view, the kernel's, and a
    // request on a sample of them (through nginx to the app).
    expect(f.end.open).toBe(COUNT);
    expect(f.end.closedByServer).toBe(0);
    expect(f.established).toBeGreaterThanOrEqual(COUNT);
    expect(f.probe.sampled).toBe(200);
    expect(f.probe.ok, JSON.stringify(f.probe)).toBe(200);
    expect(f.notEnoughLines).toBe(0);
    // The connections live in nginx: its workers hold one descriptor each.
    expect(f.workerFds.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(COUNT);
    expect(f.memHeld.totalKb).toBeGreaterThan(f.memBefore.totalKb);
  }, 240_000);

  it("workerConnections 768 (the distribution default): connections are dropped and nginx logs 'worker_connections are not enough'", async () => {
    const f = await connectionsScenario({ workerConnections: 768, count: COUNT, rampDeadlineMs: 40_000, wrkSeconds: 5, log });
    log(
      `768: attempted ${f.ramp.attempted}, opened ${f.ramp.opened}, failed ${f.ramp.failed}; at the end ${f.end.open} open, ${f.end.closedByServer} closed by nginx; ${f.notEnoughLines} "not enough" log lines; wrk failures ${wrkFailures(f.wrk)}`,
    );
    // The run pushed well past the capacity of two workers.
    expect(f.ramp.attempted).toBeGreaterThan(4 * 768);
    // nginx cannot hold them: at most 768 per worker survive.
    expect(f.end.open).toBeLessThanOrEqual(f.workerFds.length * 768);
    expect(f.end.open).toBeLessThan(COUNT);
    expect(f.established).toBeLessThan(COUNT);
    // nginx closed held keep-alive connections to make room for new ones.
    expect(f.end.closedByServer + f.ramp.failed).toBeGreaterThanOrEqual(f.ramp.attempted - f.workerFds.length * 768);
    expect(f.notEnoughLines).toBeGreaterThan(0);
  }, 180_000);
});
