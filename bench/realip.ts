// What restoring the client address costs nginx (`npx tsx bench/realip.ts`):
// one live site (test/helpers/live-site.ts) on loopback ports 20800-20999,
// a static file over TLS (nginx alone, no app), wrk rounds interleaved over
// three configs pushed through nginx-apply.sh:
//   none        frontedBy none (no realip module directives)
//   cloudflare  22 Cloudflare blocks; wrk's 127.0.0.1 matches none (every block checked)
//   restore     frontedBy custom trusting 127.0.0.0/8, wrk sends X-Forwarded-For (the address is replaced)
// Prints the median req/s and p99 per config. The machine is shared: only the
// side-by-side ratio means anything.
import net from "node:net";
import { childPids, startLiveSite, wrkFailures, type LiveSite } from "../test/helpers/live-site";
import { isAlive, waitFor } from "../test/helpers/proc";

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const DURATION_S = Number(process.env.DURATION_S ?? 6);

const CONFIGS: Record<string, { config: Record<string, unknown>; headers?: Record<string, string> }> = {
  none: { config: { frontedBy: "none", trustedProxyCidrs: "" } },
  cloudflare: { config: { frontedBy: "cloudflare", trustedProxyCidrs: "" } },
  restore: { config: { frontedBy: "custom", trustedProxyCidrs: ["127.0.0.0/8"] }, headers: { "X-Forwarded-For": "203.0.113.7" } },
};

async function freePortsInRange(n: number, from: number, to: number): Promise<number[]> {
  const out: number[] = [];
  for (let p = from; out.length < n && p <= to; p++) {
    const free = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once("error", () => resolve(false));
      srv.listen(p, "127.0.0.1", () => srv.close(() => resolve(true)));
    });
    if (free) out.push(p);
  }
  if (out.length < n) throw new Error(`no ${n} free ports in ${from}-${to}`);
  return out;
}

async function push(site: LiveSite, overrides: Record<string, unknown>): Promise<void> {
  const old = childPids(site.nginxPid());
  const res = await site.apply(site.writeStage(site.render(overrides)));
  if (res.code !== 0) throw new Error(`nginx-apply.sh failed:\n${res.stdout}${res.stderr}`);
  // An identical push does not reload: the same workers go on.
  if (childPids(site.nginxPid()).every((p) => old.includes(p))) return;
  await waitFor(() => !old.some(isAlive), "old nginx workers to exit", 30_000);
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const site = await startLiveSite({ ports: await freePortsInRange(3, 20800, 20999), config: { accessLog: false } });
  const results: Record<string, { rps: number[]; p99: number[] }> = {};
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, v] of Object.entries(CONFIGS)) {
        await push(site, v.config);
        const r = await site.wrk({
          url: site.httpsUrl("/static/style.css"),
          threads: 2,
          connections: 16,
          durationS: DURATION_S,
          latency: true,
          ...(v.headers ? { headers: v.headers } : {}),
        });
        if (wrkFailures(r) > 0) throw new Error(`${name}: wrk errors\n${r.raw}`);
        (results[name] ??= { rps: [], p99: [] }).rps.push(r.rps);
        results[name].p99.push(r.latencyMs?.p99 ?? NaN);
        console.log(`round ${round + 1} ${name}: ${r.rps.toFixed(0)} req/s, p99 ${r.latencyMs?.p99} ms`);
      }
    }
  } finally {
    await site.stop();
  }
  const base = median(results.none!.rps);
  console.log(`\nmedians over ${ROUNDS} rounds of ${DURATION_S} s (2 threads, 16 connections, TLS, /static/style.css):`);
  for (const [name, r] of Object.entries(results)) {
    const rps = median(r.rps);
    console.log(`${name.padEnd(10)} ${rps.toFixed(0).padStart(7)} req/s (x${(rps / base).toFixed(3)})  p99 ${median(r.p99).toFixed(2)} ms`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
