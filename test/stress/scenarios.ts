// The four stress scenarios of "Keep the proxy's promises under stress", as
// functions that start real processes on 127.0.0.1 (test/helpers/live-site.ts:
// Debian's nginx with the rendered config, the sample app under uvicorn via
// files/scripts/run-app.sh), drive them, stop everything by PID, and return
// the figures. test/stress/*.test.ts assert on them; bench/stress.ts prints
// them and writes bench/STRESS.md.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { RawConfig } from "../../lib/config";
import { rolloutSettleSeconds } from "../../lib/hostfiles";
import { childPids, startLiveSite, wrkFailures, type LiveSite, type WrkResult } from "../helpers/live-site";
import { fakeSystemdEnv } from "../helpers/fake-systemd";
import { freePorts, httpJson, isAlive, run, script, sleep, stopPidFiles, type RunResult } from "../helpers/proc";
import type { KindStats, SlowClients } from "./slow-clients";
import {
  cpuTicks,
  establishedOn,
  median,
  nginxMemory,
  nginxWorkerFds,
  nofileLimit,
  rssKb,
  startJsonChild,
  type ChildEvent,
  type JsonChild,
  type NginxMemory,
} from "./kit";

export type Log = (line: string) => void;
const quiet: Log = () => undefined;

/** Lines of the site's nginx error log matching `re`. */
export function errorLogLines(site: LiveSite, re: RegExp): string[] {
  if (!existsSync(site.errorLog)) return [];
  return readFileSync(site.errorLog, "utf8")
    .split("\n")
    .filter((l) => re.test(l));
}

export function wrkLine(r: WrkResult): string {
  const e = r.errors;
  const lat = r.latencyMs ? `, p50 ${r.latencyMs.p50.toFixed(2)} ms, p99 ${r.latencyMs.p99.toFixed(2)} ms` : "";
  return `${r.requests} requests, ${r.rps.toFixed(0)}/s${lat}, non-2xx ${e.status}, socket errors connect ${e.connect} read ${e.read} write ${e.write} timeout ${e.timeout}`;
}

// ===================================================================== 1

export interface ConnectionsOptions {
  workerConnections: number;
  /** Idle keep-alive TLS connections to open and hold. */
  count?: number;
  /** Stop opening after this long (the rest count as not attempted). */
  rampDeadlineMs?: number;
  /** The normal load run while they are held. */
  wrkSeconds?: number;
  /** Connections sampled with one request each at the end. */
  probe?: number;
  log?: Log;
}

export interface RampEvent extends ChildEvent {
  attempted: number;
  opened: number;
  failed: number;
  stillOpen: number;
  errors: Record<string, number>;
  ms: number;
}

export interface HolderStatus extends ChildEvent {
  held: number;
  open: number;
  closedByServer: number;
  lateErrors: Record<string, number>;
  rssKb: number;
}

export interface ProbeEvent extends ChildEvent {
  sampled: number;
  ok: number;
  failed: number;
  statuses: Record<string, number>;
  errors: Record<string, number>;
}

export interface ConnectionsFigures {
  workerConnections: number;
  workerRlimitNofile: number;
  /** RLIMIT_NOFILE each worker actually runs with (from /proc/PID/limits). */
  workerNofile: number[];
  count: number;
  ramp: RampEvent;
  wrk: WrkResult;
  /** The holder's view after the load: sockets still open, closed by nginx. */
  end: HolderStatus;
  /** ESTABLISHED sockets on nginx's HTTPS port after the load (ss). */
  established: number;
  probe: ProbeEvent;
  memBefore: NginxMemory;
  memHeld: NginxMemory;
  /** Open descriptors per worker while the connections are held. */
  workerFds: number[];
  /** nginx error-log lines "worker_connections are not enough". */
  notEnoughLines: number;
}

/**
 * Open `count` TLS connections to nginx, one request each (a static file, so
 * the app is not involved), hold them idle, run wrk against the app through
 * nginx meanwhile, then count what is still open and probe a sample.
 */
export async function connectionsScenario(o: ConnectionsOptions): Promise<ConnectionsFigures> {
  const log = o.log ?? quiet;
  const count = o.count ?? 10_000;
  const rampDeadlineMs = o.rampDeadlineMs ?? 60_000;
  // keepalive_timeout is raised from 65s only so that the first connections
  // are still inside it when a slow ramp on a busy machine ends: the promise
  // under test is capacity (worker_connections and descriptors).
  const site = await startLiveSite({ config: { workerConnections: o.workerConnections, keepaliveTimeout: "300s" } });
  let holder: JsonChild | null = null;
  try {
    const master = site.nginxPid();
    const memBefore = nginxMemory(master);
    const workers = nginxWorkerFds(master).length;
    log(`nginx ${workers} workers, worker_connections ${o.workerConnections}; RSS before ${(memBefore.totalKb / 1024).toFixed(1)} MiB`);
    holder = startJsonChild("conn-holder.ts", {
      port: site.httpsPort,
      servername: site.domain,
      hostHeader: site.domain,
      caFile: site.caCert,
      count,
      concurrency: 100,
      openTimeoutMs: 5000,
      deadlineMs: rampDeadlineMs,
      openPath: "/static/style.css",
    });
    const ramp = await holder.next<RampEvent>("ramped", rampDeadlineMs + 30_000);
    log(
      `opened ${ramp.opened}/${ramp.attempted} in ${ramp.ms} ms (failed ${ramp.failed}, still open ${ramp.stillOpen}) ${JSON.stringify(ramp.errors)}`,
    );
    const memHeld = nginxMemory(master);
    const workerFds = nginxWorkerFds(master);
    const wrk = await site.wrk({
      url: site.httpsUrl("/api/hello"),
      connections: 16,
      threads: 2,
      durationS: o.wrkSeconds ?? 8,
      timeoutS: 5,
    });
    log(`wrk while held: ${wrkLine(wrk)}`);
    holder.send({ cmd: "status" });
    const end = await holder.next<HolderStatus>("status", 10_000);
    const established = await establishedOn(site.httpsPort);
    holder.send({ cmd: "probe", n: o.probe ?? 200, path: "/api/hello" });
    const probe = await holder.next<ProbeEvent>("probe", 60_000);
    log(
      `end: ${end.open} open, ${end.closedByServer} closed by nginx, ss ESTABLISHED ${established}; probe ${probe.ok}/${probe.sampled} ok`,
    );
    return {
      workerConnections: o.workerConnections,
      workerRlimitNofile: o.workerConnections * 2 + 1024,
      workerNofile: childPids(master).map(nofileLimit),
      count,
      ramp,
      wrk,
      end,
      established,
      probe,
      memBefore,
      memHeld,
      workerFds,
      notEnoughLines: errorLogLines(site, /worker_connections are not enough/).length,
    };
  } finally {
    await holder?.stop();
    await site.stop();
  }
}

// ===================================================================== 2

export interface SlowOptions extends Partial<SlowClientSettings> {
  /**
   * wrk runs under attack through nginx; as many idle runs again, half
   * before and half after the attack (so a noisy spell on the machine hits
   * both sides). The medians of the p99s are compared.
   */
  samples?: number;
  /** The same for uvicorn direct (reported only). */
  directSamples?: number;
  sampleSeconds?: number;
  log?: Log;
}

export interface PhaseFigures {
  p50s: number[];
  p99s: number[];
  rps: number[];
  medianP50: number;
  medianP99: number;
  medianRps: number;
  /** Sum over the runs of wrk's non-2xx and socket errors. */
  failures: number;
  runs: WrkResult[];
}

export interface AttackEvent extends ChildEvent {
  elapsedMs: number;
  stats: Record<"header" | "body" | "reader", KindStats>;
}

export interface AttackFigures {
  /** The attackers' own counts when the phase ended. */
  attack: AttackEvent;
  /** ESTABLISHED sockets on the app's port during the attack (ss). */
  appConnections: number;
  appRssKb: number;
  nginxRssKb: number;
  /** CPU used while the normal load was measured under attack, in cores. */
  cores: { attacker: number; nginx: number; app: number };
}

export interface TargetFigures {
  idle: PhaseFigures;
  attack: PhaseFigures;
  during: AttackFigures;
  /** attack.medianP99 / idle.medianP99 */
  p99Ratio: number;
  appConnectionsIdle: number;
  appRssIdleKb: number;
}

/** The slow clients, and the size of the response the slow readers ask for. */
export interface SlowClientSettings extends SlowClients {
  responseBytes: number;
}

export interface SlowFigures {
  clients: SlowClientSettings;
  sampleSeconds: number;
  proxy: TargetFigures;
  direct: TargetFigures;
}

async function measure(site: LiveSite, url: string, n: number, seconds: number, log: Log, tag: string): Promise<WrkResult[]> {
  const runs: WrkResult[] = [];
  for (let i = 0; i < n; i++) {
    const r = await site.wrk({ url, connections: 16, threads: 1, durationS: seconds, latency: true, timeoutS: 5 });
    log(`  ${tag} #${i + 1}: ${wrkLine(r)}`);
    runs.push(r);
  }
  return runs;
}

function summarize(runs: WrkResult[]): PhaseFigures {
  const p50s = runs.map((r) => r.latencyMs?.p50 ?? NaN);
  const p99s = runs.map((r) => r.latencyMs?.p99 ?? NaN);
  const rps = runs.map((r) => r.rps);
  return {
    p50s,
    p99s,
    rps,
    medianP50: median(p50s),
    medianP99: median(p99s),
    medianRps: median(rps),
    failures: runs.reduce((a, r) => a + wrkFailures(r), 0),
    runs,
  };
}

/**
 * Normal clients (wrk, GET /api/hello) measured idle and while 1000 slow
 * clients attack, first through nginx (TLS), then straight at uvicorn (the
 * same single app process). The attack runs in a child process; each phase
 * ends on its own after a bounded time.
 */
export async function slowClientsScenario(o: SlowOptions = {}): Promise<SlowFigures> {
  const log = o.log ?? quiet;
  const samples = o.samples ?? 5;
  const directSamples = o.directSamples ?? 3;
  const sampleSeconds = o.sampleSeconds ?? 3;
  const clients: SlowClientSettings = {
    headerSenders: o.headerSenders ?? 250,
    bodySenders: o.bodySenders ?? 250,
    slowReaders: o.slowReaders ?? 500,
    byteIntervalMs: o.byteIntervalMs ?? 500,
    readIntervalMs: o.readIntervalMs ?? 1000,
    readBytes: o.readBytes ?? 4096,
    responseBytes: o.responseBytes ?? 1_000_000,
  };
  // One app process, as in the direct comparison. The rate limit on
  // /auth/token is turned off: it would answer the slow POSTs with 429 before
  // reading any body, and the point is nginx buffering the body.
  const site = await startLiveSite({ appProcesses: 1, config: { rateLimits: [] } });
  const rampMs = 3000;
  // After the ramp, wait until the attack's opening burst is over: the app
  // has received every slow reader's request (and generated its 1 MB
  // response, which nginx spools), then 2 s more; at most 20 s. On this
  // 2-core machine the burst stalls everything for a few seconds, through
  // nginx or not: it is the cost of 500 real requests, not of slowness.
  const maxSettleMs = 20_000;
  try {
    const appPort = site.appPorts[0]!;
    const appPid = site.appPids().get(appPort)!;
    const urls = { proxy: site.httpsUrl("/api/hello"), direct: site.appUrl("/api/hello") };
    // Warm-up (TLS session cache, upstream keepalive, Python code paths).
    await site.wrk({ url: urls.proxy, connections: 16, threads: 2, durationS: 2 });
    await site.wrk({ url: urls.direct, connections: 16, threads: 2, durationS: 1 });
    const out: Partial<Record<"proxy" | "direct", TargetFigures>> = {};
    for (const target of ["proxy", "direct"] as const) {
      const n = target === "proxy" ? samples : directSamples;
      log(`${target}: idle`);
      const idleRuns = await measure(site, urls[target], Math.ceil(n / 2), sampleSeconds, log, `${target} idle`);
      const appConnectionsIdle = await establishedOn(appPort);
      const appRssIdleKb = rssKb(appPid);
      const phaseMs = rampMs + maxSettleMs + n * (sampleSeconds + 3) * 1000 + 10_000;
      await site.resetStats();
      const attacker = startJsonChild(
        "slow-clients.ts",
        {
          port: target === "proxy" ? site.httpsPort : appPort,
          tls: target === "proxy" ? { servername: site.domain, caFile: site.caCert } : null,
          hostHeader: target === "proxy" ? site.domain : `127.0.0.1:${appPort}`,
          ...clients,
          headerPath: "/api/hello",
          bodyPath: "/auth/token",
          bodyBytes: 100_000,
          readerPath: `/api/bytes?n=${clients.responseBytes}`,
          rampMs,
          durationMs: phaseMs,
          // Niced: the attack client stands in for remote machines; on these
          // two shared cores it should not take the CPU the server needs (the
          // CPU nginx and the app spend on the attack is still measured).
        },
        { nice: 19 },
      );
      try {
        // A readiness wait, not a measurement: the niced attacker can starve for a while on
        // two cores shared with other work.
        await attacker.next("ramped", rampMs + 60_000);
        const t0 = Date.now();
        let seen = 0;
        while (Date.now() - t0 < maxSettleMs) {
          seen = (await httpJson<{ requests: number }>(site.appUrl("/_stats"))).json.requests;
          if (seen >= clients.slowReaders) break;
          await sleep(250);
        }
        await sleep(2000);
        log(`${target}: under attack (the app saw ${seen} attack requests; settled after ${Date.now() - t0} ms)`);
        const cpuPids = { attacker: [attacker.pid], nginx: childPids(site.nginxPid()), app: [appPid] };
        const ticks = (k: keyof typeof cpuPids): number => cpuPids[k].reduce((a, p) => a + cpuTicks(p), 0);
        const c0 = { attacker: ticks("attacker"), nginx: ticks("nginx"), app: ticks("app"), at: Date.now() };
        const attack = summarize(await measure(site, urls[target], n, sampleSeconds, log, `${target} attack`));
        const secs = (Date.now() - c0.at) / 1000;
        const cores = {
          attacker: (ticks("attacker") - c0.attacker) / 100 / secs,
          nginx: (ticks("nginx") - c0.nginx) / 100 / secs,
          app: (ticks("app") - c0.app) / 100 / secs,
        };
        const appConnections = await establishedOn(appPort);
        const appRssKb = rssKb(appPid);
        const nginxRssKb = nginxMemory(site.nginxPid()).totalKb;
        attacker.send({ cmd: "exit" });
        const done = await attacker.next<AttackEvent>("done", 10_000);
        log(
          `${target}: app ESTABLISHED ${appConnectionsIdle} idle -> ${appConnections} under attack; app RSS ${(appRssIdleKb / 1024).toFixed(0)} -> ${(appRssKb / 1024).toFixed(0)} MiB`,
        );
        log(`${target}: attackers ${JSON.stringify(done.stats)}`);
        log(
          `${target}: CPU while measured under attack: attacker ${cores.attacker.toFixed(2)}, nginx ${cores.nginx.toFixed(2)}, app ${cores.app.toFixed(2)} cores`,
        );
        await attacker.stop();
        // Let the app and nginx drop the attackers' connections, then idle again.
        await sleep(1000);
        log(`${target}: idle again`);
        idleRuns.push(...(await measure(site, urls[target], Math.ceil(n / 2), sampleSeconds, log, `${target} idle`)));
        const idle = summarize(idleRuns);
        out[target] = {
          idle,
          attack,
          during: { attack: done, appConnections, appRssKb, nginxRssKb, cores },
          p99Ratio: attack.medianP99 / idle.medianP99,
          appConnectionsIdle,
          appRssIdleKb,
        };
      } finally {
        await attacker.stop();
      }
    }
    return { clients, sampleSeconds, proxy: out.proxy!, direct: out.direct! };
  } finally {
    await site.stop();
  }
}

// ===================================================================== 3

export interface FailoverOptions {
  /** systemd's RestartSec for the simulated Restart=on-failure. */
  restartSec?: number;
  log?: Log;
}

export interface FailoverFigures {
  wrk: WrkResult;
  killedPid: number;
  restartedPid: number;
  restarts: number;
  /** From kill -9 until the restarted process answered /healthz. */
  backMs: number;
  /** From kill -9 until nginx sent it requests again (its /_stats grew). */
  rejoinMs: number;
  /** Requests the restarted process served before the load stopped. */
  rejoinRequests: number;
  failTimeout: string;
  maxFails: number;
  errorLog: {
    disabled: number;
    premature: number;
    reset: number;
    refused: number;
    /**
     * Responses cut after nginx had their header ("... while reading
     * upstream", not "... while reading response header from upstream"):
     * nginx cannot pass those to the next server.
     */
    midResponse: number;
  };
}

interface Supervisor {
  restarts(): number;
  lastBackAt(): number;
  stop(): Promise<void>;
}

/**
 * systemd's Restart=on-failure for one app process, simulated: poll its PID;
 * when it is gone, wait RestartSec and start it again (run-app.sh, same port).
 * Bounded: at most `maxRestarts`, and it stops when told to.
 */
function supervise(site: LiveSite, index: number, restartSec: number, maxRestarts: number, log: Log): Supervisor {
  let stopped = false;
  let restarts = 0;
  let backAt = 0;
  const port = site.appPorts[index]!;
  const loop = (async () => {
    while (!stopped && restarts < maxRestarts) {
      const pid = site.appPids().get(port) ?? 0;
      if (pid !== 0 && !isAlive(pid)) {
        log(`supervisor: app ${port} (pid ${pid}) exited; restarting in ${restartSec}s`);
        await sleep(restartSec * 1000);
        if (stopped) break;
        await site.stopApp(index); // forget the dead process
        await site.startApp(index); // run-app.sh, waits for /healthz
        restarts++;
        backAt = Date.now();
        log(`supervisor: app ${port} back as pid ${site.appPids().get(port)}`);
      }
      await sleep(100);
    }
  })();
  return {
    restarts: () => restarts,
    lastBackAt: () => backAt,
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

/** Two app processes under wrk (GET through nginx); kill -9 one; it is restarted and rejoins. */
export async function failoverScenario(o: FailoverOptions = {}): Promise<FailoverFigures> {
  const log = o.log ?? quiet;
  const site = await startLiveSite({ appProcesses: 2 });
  try {
    const victimPort = site.appPorts[1]!;
    const wrk = await site.startWrk({ url: site.httpsUrl("/api/hello"), connections: 16, threads: 2, durationS: 300, timeoutS: 10 });
    let result: WrkResult | null = null;
    const sup = supervise(site, 1, o.restartSec ?? 1, 3, log);
    try {
      await sleep(3000);
      const killedPid = site.appPids().get(victimPort)!;
      const t0 = Date.now();
      process.kill(killedPid, "SIGKILL");
      log(`kill -9 ${killedPid} (app on ${victimPort}) under load`);
      // Back: the supervisor restarted it and it answers /healthz.
      const backDeadline = Date.now() + 30_000;
      while (sup.restarts() === 0 && Date.now() < backDeadline) await sleep(100);
      if (sup.restarts() === 0) throw new Error("the supervisor did not restart the killed app within 30 s");
      const backMs = sup.lastBackAt() - t0;
      // Rejoin: nginx sends it requests again (fail_timeout after its last failure).
      const base = (await httpJson<{ requests: number }>(site.appUrl("/_stats", 1))).json.requests;
      let rejoinMs = -1;
      let now = base;
      const rejoinDeadline = Date.now() + 30_000;
      while (Date.now() < rejoinDeadline) {
        now = (await httpJson<{ requests: number }>(site.appUrl("/_stats", 1))).json.requests;
        if (now >= base + 50) {
          rejoinMs = Date.now() - t0;
          break;
        }
        await sleep(250);
      }
      await sleep(2000);
      const rejoinRequests = (await httpJson<{ requests: number }>(site.appUrl("/_stats", 1))).json.requests;
      result = await wrk.stop();
      log(`wrk: ${wrkLine(result)}`);
      log(`back after ${backMs} ms, rejoined after ${rejoinMs} ms, ${rejoinRequests} requests since the restart`);
      return {
        wrk: result,
        killedPid,
        restartedPid: site.appPids().get(victimPort) ?? 0,
        restarts: sup.restarts(),
        backMs,
        rejoinMs,
        rejoinRequests,
        failTimeout: site.config.upstreamFailTimeout,
        maxFails: site.config.upstreamMaxFails,
        errorLog: {
          disabled: errorLogLines(site, /upstream server temporarily disabled/).length,
          premature: errorLogLines(site, /upstream prematurely closed/).length,
          reset: errorLogLines(site, /Connection reset by peer/).length,
          refused: errorLogLines(site, /Connection refused/).length,
          midResponse: errorLogLines(site, /while reading upstream,/).length,
        },
      };
    } finally {
      await sup.stop();
      if (result === null) await wrk.stop().catch(() => undefined);
    }
  } finally {
    await site.stop();
  }
}

// ===================================================================== 4

export interface RolloutOptions {
  /** Stack config for the rendered nginx (defaults otherwise). */
  config?: RawConfig;
  /** The rollout script (default files/scripts/app-rollout.sh). */
  rolloutScript?: string;
  /** Polls of /api/version through nginx after the rollout returns. */
  polls?: number;
  log?: Log;
}

export interface RolloutFigures {
  script: string;
  settleSeconds: number;
  fromVersion: string;
  toVersion: string;
  rollout: RunResult;
  wrk: WrkResult;
  /** Responses to the polls after the rollout, by "status version". */
  after: Record<string, number>;
  polls: number;
  failTimeout: string;
  maxFails: number;
  errorLog: { noLiveUpstreams: number; disabled: number; refused: number };
}

/**
 * Two app processes managed by a fake systemctl (real uvicorn via run-app.sh)
 * behind nginx; under wrk load (GET /api/version through nginx) the rollout
 * script restarts them one at a time with a new APP_VERSION. Then polls.
 */
export async function rolloutScenario(o: RolloutOptions = {}): Promise<RolloutFigures> {
  const log = o.log ?? quiet;
  const rolloutScript = o.rolloutScript ?? script("app-rollout.sh");
  const dir = mkdtempSync(path.join(os.tmpdir(), "fe-stress-rollout-"));
  const state = path.join(dir, "state");
  mkdirSync(state);
  let site: LiveSite | null = null;
  try {
    const ports = await freePorts(2);
    const env = (version: string, settle: number): NodeJS.ProcessEnv =>
      fakeSystemdEnv(state, {
        WANTS_DIR: path.join(dir, "wants"),
        APP_VERSION: version,
        // As components/app.ts runs it.
        HEALTH_PATH: "/healthz",
        EXPECT_VERSION: version,
        HEALTH_INTERVAL: "0.2",
        SETTLE_SECONDS: String(settle),
      });
    const first = await run(rolloutScript, ports.map(String), { env: env("1.0.0", 0), timeoutMs: 120_000 });
    if (first.code !== 0) throw new Error(`initial rollout failed:\n${first.stdout}\n${first.stderr}`);
    site = await startLiveSite({ reuseAppPorts: ports, config: o.config ?? {} });
    const settleSeconds = rolloutSettleSeconds(site.config);
    const wrk = await site.startWrk({ url: site.httpsUrl("/api/version"), connections: 16, threads: 2, durationS: 300, timeoutS: 10 });
    let result: WrkResult | null = null;
    try {
      await sleep(2000);
      log(
        `rolling ${ports.join(" ")} to 2.0.0 under load (${path.relative(process.cwd(), rolloutScript)}, SETTLE_SECONDS=${settleSeconds})`,
      );
      const rollout = await run(rolloutScript, ports.map(String), { env: env("2.0.0", settleSeconds), timeoutMs: 180_000 });
      log(`rollout exit ${rollout.code} after ${rollout.ms} ms`);
      const after: Record<string, number> = {};
      const polls = o.polls ?? 200;
      for (let i = 0; i < polls; i++) {
        const r = await site.https("/api/version");
        let v = "?";
        try {
          v = (JSON.parse(r.text) as { version: string }).version;
        } catch {
          v = r.text.includes("maintenance page") ? "maintenance page" : "not JSON";
        }
        const k = `${r.status} ${v}`;
        after[k] = (after[k] ?? 0) + 1;
      }
      await sleep(500);
      result = await wrk.stop();
      log(`wrk: ${wrkLine(result)}; after: ${JSON.stringify(after)}`);
      return {
        script: rolloutScript,
        settleSeconds,
        fromVersion: "1.0.0",
        toVersion: "2.0.0",
        rollout,
        wrk: result,
        after,
        polls,
        failTimeout: site.config.upstreamFailTimeout,
        maxFails: site.config.upstreamMaxFails,
        errorLog: {
          noLiveUpstreams: errorLogLines(site, /no live upstreams/).length,
          disabled: errorLogLines(site, /upstream server temporarily disabled/).length,
          refused: errorLogLines(site, /Connection refused/).length,
        },
      };
    } finally {
      if (result === null) await wrk.stop().catch(() => undefined);
    }
  } finally {
    await site?.stop();
    await stopPidFiles(state);
    rmSync(dir, { recursive: true, force: true });
  }
}
