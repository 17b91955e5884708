// Stress promise 4: a rolling redeploy (files/scripts/app-rollout.sh with a
// new APP_VERSION, one process at a time, each waited for on /healthz with
// EXPECT_VERSION) under wrk load through nginx fails no request, and every
// response after the rollout returns comes from the new version.
//
// systemd is replaced by test/helpers/fake-systemctl.sh (real uvicorn
// processes via run-app.sh, SIGTERM on stop), as in test/live/rollout.test.ts.
// The script runs with SETTLE_SECONDS = upstream fail_timeout + 2 (see
// rolloutSettleSeconds in scenarios.ts and docs/stress.md): without a pause
// between instances nginx has no live upstream while the second restarts.
// STRESS_ROLLOUT_SCRIPT=/path/to/app-rollout.sh runs a candidate script instead.
import { describe, expect, it } from "vitest";
import { wrkFailures } from "../helpers/live-site";
import { rolloutScenario } from "./scenarios";

const log = (l: string): void => console.log(`[rollout] ${l}`);

describe("rolling redeploy under load", () => {
  it("0 failed requests, and only the new version answers after the rollout", async () => {
    const f = await rolloutScenario({ rolloutScript: process.env.STRESS_ROLLOUT_SCRIPT || undefined, polls: 200, log });
    log(`rollout output:\n${f.rollout.stdout}${f.rollout.stderr}`);
    log(`error log: ${JSON.stringify(f.errorLog)}`);
    expect(f.rollout.code, f.rollout.stderr).toBe(0);
    expect(f.wrk.requests).toBeGreaterThan(1000);
    expect(wrkFailures(f.wrk), `${JSON.stringify(f.wrk.errors)}; nginx "no live upstreams" lines: ${f.errorLog.noLiveUpstreams}`).toBe(0);
    expect(f.errorLog.noLiveUpstreams).toBe(0);
    expect(f.after).toEqual({ [`200 ${f.toVersion}`]: f.polls });
  }, 180_000);
});
