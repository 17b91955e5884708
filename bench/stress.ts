// Stress figures for "Keep the proxy's promises under stress": runs the four
// scenarios of test/stress/scenarios.ts against real processes on 127.0.0.1
// (Debian's nginx with the rendered config, the sample app under uvicorn) and
// prints the figures as Markdown, also written to bench/STRESS.md (a partial
// run, with a subset or an option, to bench/out/STRESS-partial.md instead).
//
//   npx tsx bench/stress.ts                      # everything (about 5 minutes)
//   npx tsx bench/stress.ts connections slow     # a subset: connections slow failover rollout
//   npx tsx bench/stress.ts slow --byte-interval-ms=100   # a faster slow-client attack
//
// STRESS_ROLLOUT_SCRIPT=/path/to/app-rollout.sh measures a candidate rollout
// script instead of files/scripts/app-rollout.sh.
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { wrkFailures } from "../test/helpers/live-site";
import { fmtMiB } from "../test/stress/kit";
import {
  connectionsScenario,
  failoverScenario,
  rolloutScenario,
  slowClientsScenario,
  type ConnectionsFigures,
  type FailoverFigures,
  type PhaseFigures,
  type RolloutFigures,
  type SlowFigures,
} from "../test/stress/scenarios";

const ALL = ["connections", "slow", "failover", "rollout"] as const;
type Name = (typeof ALL)[number];

const OUT = path.join(__dirname, "STRESS.md");
/** Where a partial run (a subset, or options) goes instead: bench/out/ is git-ignored. */
const OUT_PARTIAL = path.join(__dirname, "out", "STRESS-partial.md");
const log = (l: string): void => console.error(`  ${l}`);

function ms(x: number): string {
  return Number.isFinite(x) ? `${x.toFixed(x < 10 ? 2 : 1)} ms` : "n/a";
}

function runs(p: PhaseFigures): string {
  return p.p99s.map((x) => x.toFixed(1)).join(" / ");
}

function machine(): string {
  const nginx = /nginx\/([0-9.]+)/.exec(spawnSync("nginx", ["-v"], { encoding: "utf8" }).stderr)?.[1] ?? "?";
  const wrk = spawnSync("wrk", ["-v"], { encoding: "utf8" });
  const wrkV = /wrk ([^ ]+)/.exec(`${wrk.stdout}${wrk.stderr}`)?.[1] ?? "?";
  const uvicorn = spawnSync("/usr/bin/python3", ["-c", "import uvicorn; print(uvicorn.__version__)"], { encoding: "utf8" }).stdout.trim();
  const hard = spawnSync("bash", ["-c", "ulimit -Hn"], { encoding: "utf8" }).stdout.trim();
  return `${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${os.release()}, nginx ${nginx}, uvicorn ${uvicorn}, wrk ${wrkV}, Node ${process.version}, open-file hard limit ${hard}; load average at start ${os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}`;
}

function connectionsSection(rows: ConnectionsFigures[]): string[] {
  const out = [
    "## 1. 10,000 idle keep-alive TLS connections",
    "",
    "One child process opens 10,000 TLS connections to nginx (100 handshakes at a time), sends one",
    "keep-alive request for a static file on each, and holds them idle while wrk (16 connections,",
    "GET /api/hello through nginx to the app) runs. Then: how many are still open (the client's",
    "view and `ss` ESTABLISHED on nginx's port), and one request on 200 of them.",
    "",
    '| worker_connections | opened / attempted | ramp | wrk requests | wrk failures | open at end | closed by nginx | ss ESTABLISHED | probe 200/200 | "not enough" log lines | nginx RSS idle | nginx RSS held | per connection |',
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const f of rows) {
    const per = (f.memHeld.totalKb - f.memBefore.totalKb) / Math.max(1, f.end.open);
    out.push(
      `| ${f.workerConnections} | ${f.ramp.opened} / ${f.ramp.attempted} | ${(f.ramp.ms / 1000).toFixed(1)} s | ${f.wrk.requests} | ${wrkFailures(f.wrk)} | ${f.end.open} | ${f.end.closedByServer} | ${f.established} | ${f.probe.ok}/${f.probe.sampled} | ${f.notEnoughLines} | ${fmtMiB(f.memBefore.totalKb)} | ${fmtMiB(f.memHeld.totalKb)} | ${per.toFixed(1)} KiB |`,
    );
  }
  const big = rows.find((r) => r.workerConnections >= 10_000);
  if (big) {
    out.push(
      "",
      `With ${big.workerConnections}: worker descriptors while held ${big.workerFds.join(" + ")} (accept is not balanced between workers, so size worker_connections for the whole load on one worker); workers' RLIMIT_NOFILE ${big.workerNofile.join(", ")} (worker_rlimit_nofile ${big.workerRlimitNofile}; see docs/stress.md if lower).`,
    );
  }
  out.push("");
  return out;
}

function slowSection(f: SlowFigures): string[] {
  const c = f.clients;
  const row = (name: string, t: SlowFigures["proxy"]): string =>
    `| ${name} | ${ms(t.idle.medianP99)} (${runs(t.idle)}) | ${ms(t.attack.medianP99)} (${runs(t.attack)}) | x${t.p99Ratio.toFixed(2)} | ${ms(t.idle.medianP50)} -> ${ms(t.attack.medianP50)} | ${t.idle.medianRps.toFixed(0)} -> ${t.attack.medianRps.toFixed(0)} | ${t.idle.failures} / ${t.attack.failures} | ${t.appConnectionsIdle} -> ${t.during.appConnections} | ${fmtMiB(t.appRssIdleKb)} -> ${fmtMiB(t.during.appRssKb)} |`;
  const a = (t: SlowFigures["proxy"]): string => {
    const s = t.during.attack.stats;
    const c = t.during.cores;
    return `header senders ${s.header.connects} connects / ${s.header.closedByServer} closed by the server; body senders ${s.body.connects} / ${s.body.closedByServer}; readers ${s.reader.connects} / ${s.reader.closedByServer}, ${(s.reader.bytesRead / 2 ** 20).toFixed(1)} MiB read in ${(t.during.attack.elapsedMs / 1000).toFixed(0)} s. CPU while measured under attack: attack client ${c.attacker.toFixed(2)}, nginx ${c.nginx.toFixed(2)}, app ${c.app.toFixed(2)} cores`;
  };
  return [
    "## 2. Slow clients: through nginx vs straight at uvicorn",
    "",
    `The attack: ${c.headerSenders} clients send a request header one byte per ${c.byteIntervalMs} ms, ${c.bodySenders} send a`,
    `POST /auth/token body one byte per ${c.byteIntervalMs} ms, ${c.slowReaders} GET /api/bytes?n=${c.responseBytes} and read ${c.readBytes} bytes`,
    `per ${c.readIntervalMs} ms. Normal clients: wrk, 1 thread, 16 connections, GET /api/hello, ${f.sampleSeconds} s per run; p99 is the`,
    "median of the runs (each run's p99 in brackets). One app process in both cases (the same one).",
    "",
    "| target | p99 idle | p99 under attack | ratio | p50 | requests/s | wrk failures idle / attack | app ESTABLISHED idle -> attack | app RSS idle -> attack |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    row("nginx (TLS)", f.proxy),
    row("uvicorn direct", f.direct),
    "",
    `- through nginx: ${a(f.proxy)}`,
    `- direct: ${a(f.direct)}`,
    "",
  ];
}

function failoverSection(f: FailoverFigures): string[] {
  return [
    "## 3. Failover: kill -9 of one of two app processes under load",
    "",
    "wrk (2 threads, 16 connections, GET /api/hello through nginx); after 3 s one app process is",
    "killed with SIGKILL; a supervisor loop in the test restarts it after RestartSec=1 (systemd's",
    "Restart=on-failure, simulated).",
    "",
    "| wrk requests | non-2xx | socket errors | responses cut mid-write | back (healthy) after | rejoined after | requests served since restart | max_fails / fail_timeout | error log: disabled / prematurely closed / reset / refused |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    `| ${f.wrk.requests} | ${f.wrk.errors.status} | ${f.wrk.errors.connect + f.wrk.errors.read + f.wrk.errors.write + f.wrk.errors.timeout} | ${f.errorLog.midResponse} | ${(f.backMs / 1000).toFixed(1)} s | ${(f.rejoinMs / 1000).toFixed(1)} s | ${f.rejoinRequests} | ${f.maxFails} / ${f.failTimeout} | ${f.errorLog.disabled} / ${f.errorLog.premature} / ${f.errorLog.reset} / ${f.errorLog.refused} |`,
    "",
    '"Cut mid-write": responses whose header had reached nginx when the process died; nginx cannot retry',
    "those (at most one per kill: a uvicorn process writes one response at a time). See docs/stress.md.",
    "",
  ];
}

function rolloutSection(f: RolloutFigures): string[] {
  const rel = path.relative(path.join(__dirname, ".."), f.script);
  return [
    "## 4. Rolling redeploy under load",
    "",
    `Two app processes under a fake systemctl (real uvicorn via run-app.sh); wrk (2 threads, 16`,
    `connections, GET /api/version through nginx) while \`${rel}\` rolls them from ${f.fromVersion} to ${f.toVersion}`,
    `(EXPECT_VERSION, SETTLE_SECONDS=${f.settleSeconds}); then ${f.polls} polls of /api/version through nginx.`,
    "",
    '| rollout exit | rollout time | wrk requests | non-2xx | socket errors | polls after the rollout | "no live upstreams" log lines | max_fails / fail_timeout |',
    "| ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    `| ${f.rollout.code} | ${(f.rollout.ms / 1000).toFixed(1)} s | ${f.wrk.requests} | ${f.wrk.errors.status} | ${f.wrk.errors.connect + f.wrk.errors.read + f.wrk.errors.write + f.wrk.errors.timeout} | ${Object.entries(
      f.after,
    )
      .map(([k, v]) => `${v}x ${k}`)
      .join(", ")} | ${f.errorLog.noLiveUpstreams} | ${f.maxFails} / ${f.failTimeout} |`,
    "",
    /waiting [0-9]+s before the next instance/.test(f.rollout.stdout)
      ? "The script paused SETTLE_SECONDS between instances."
      : 'The script did not pause between instances (it has no SETTLE_SECONDS): see docs/stress.md, "Rolling redeploy".',
    "",
  ];
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = args.find((a) => a.startsWith("--byte-interval-ms="));
  const byteIntervalMs = opt ? Number(opt.split("=")[1]) : undefined;
  if (byteIntervalMs !== undefined && !(byteIntervalMs >= 10)) throw new Error("--byte-interval-ms must be a number >= 10");
  const wanted = args.filter((a) => !a.startsWith("--"));
  for (const w of wanted) if (!(ALL as readonly string[]).includes(w)) throw new Error(`unknown scenario ${w} (known: ${ALL.join(" ")})`);
  const pick = (n: Name): boolean => wanted.length === 0 || wanted.includes(n);
  const t0 = Date.now();
  const md: string[] = [
    "# Stress figures",
    "",
    `Machine: ${machine()}.`,
    "",
    "Generated by `npx tsx bench/stress.ts`; what each figure proves and the settings behind it: docs/stress.md.",
    "",
  ];
  if (pick("connections")) {
    console.error("connections: workerConnections 16384");
    const big = await connectionsScenario({ workerConnections: 16384, rampDeadlineMs: 90_000, log });
    console.error("connections: workerConnections 768");
    const small = await connectionsScenario({ workerConnections: 768, rampDeadlineMs: 40_000, wrkSeconds: 5, log });
    md.push(...connectionsSection([big, small]));
  }
  if (pick("slow")) {
    console.error("slow clients");
    md.push(...slowSection(await slowClientsScenario({ log, ...(byteIntervalMs ? { byteIntervalMs } : {}) })));
  }
  if (pick("failover")) {
    console.error("failover");
    md.push(...failoverSection(await failoverScenario({ log })));
  }
  if (pick("rollout")) {
    console.error("rollout");
    md.push(...rolloutSection(await rolloutScenario({ rolloutScript: process.env.STRESS_ROLLOUT_SCRIPT || undefined, log })));
  }
  md.push(`Total time ${((Date.now() - t0) / 1000).toFixed(0)} s.`, "");
  const text = md.join("\n");
  console.log(text);
  const out = wanted.length === 0 && args.length === 0 ? OUT : OUT_PARTIAL;
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, text);
  console.error(`wrote ${path.relative(process.cwd(), out)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
