// Engine benchmark: wall times of real `pulumi` commands against the local VPS (QEMU guest,
// Pebble), median of several rounds, and how many SSH sessions a no-op up opens on the host
// (goal: 0). Not a test: these machines are noisy, so it reports and asserts nothing.
//
//   npx tsx bench/engine.ts [--rounds N]      (default 3; each round starts from a blank guest)
//
// Per round: fresh up, no-op up, one-setting change (nginx text), app version change (new
// release, rolling restart), destroy, recreate. Results: bench/out/engine.json, bench/ENGINE.md.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { copyProject, engine, getEngine, guestStack, MIN, REPO, Run, sh } from "../test/e2e/engine";

const rounds = Number(process.argv[process.argv.indexOf("--rounds") + 1] ?? "3") || 3;
const OUT = path.join(REPO, "bench/out");
const CACHE =
  process.env["FASTAPI_EDGE_CACHE"] ??
  path.join(process.env["XDG_CACHE_HOME"] ?? path.join(process.env["HOME"] ?? "/root", ".cache"), "fastapi-edge");

// Its own guest and Pebble (ports, run directories), so it can run beside the e2e test and
// the local stack.
Object.assign(process.env, {
  VPS_SSH_PORT: "2422",
  VPS_HTTP_PORT: "8280",
  VPS_HTTPS_PORT: "8643",
  VPS_ACME_HTTP_PORT: "5202",
  VPS_RUN_DIR: path.join(CACHE, "run/bench-vps"),
  PEBBLE_RUN_DIR: path.join(CACHE, "run/bench-pebble"),
  PEBBLE_PORT: "14200",
  PEBBLE_MGMT_PORT: "15200",
  PEBBLE_TLS_PORT: "5201",
  PEBBLE_DNS_PORT: "8253",
  PEBBLE_CHALLTESTSRV_PORT: "8255",
});

function kv(text: string): Record<string, string> {
  return Object.fromEntries(
    text.split("\n").flatMap((l) => (/^[A-Z_]+=\S*$/.test(l) ? [[l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]] : [])),
  );
}

async function harness(script: string, ...args: string[]): Promise<Record<string, string>> {
  const r = await sh("bash", [path.join(REPO, "test/e2e", script), ...args], { timeoutMs: 40 * MIN });
  if (r.code !== 0) throw new Error(`${script} ${args.join(" ")}: ${r.out}`);
  return kv(r.out);
}

function must(r: Run, what: string): Run {
  if (r.code !== 0) throw new Error(`${what} failed:\n${r.out}`);
  return r;
}

async function main(): Promise<void> {
  mkdirSync(OUT, { recursive: true });
  const bin = await getEngine();
  await harness("vps.sh", "image");
  const pebble = await harness("pebble.sh", "start");
  const times: Record<string, number[]> = {};
  const noopSessions: number[] = [];
  const add = (k: string, r: Run) => (times[k] ??= []).push(r.seconds);
  try {
    for (let round = 1; round <= rounds; round++) {
      const vps = { ...(await harness("vps.sh", "env")), ...(await harness("vps.sh", "start")) };
      const work = mkdtempSync(path.join(tmpdir(), "fe-bench-"));
      const ssh = (cmd: string) =>
        sh("ssh", [
          "-p",
          vps["VPS_SSH_PORT"]!,
          "-i",
          vps["VPS_KEY"]!,
          "-o",
          "StrictHostKeyChecking=no",
          "-o",
          "UserKnownHostsFile=/dev/null",
          "-o",
          "BatchMode=yes",
          "-o",
          "LogLevel=ERROR", // no "Permanently added" line in the output the count is read from
          "root@127.0.0.1",
          cmd,
        ]);
      const logins = async () =>
        Number((await ssh("journalctl -u ssh.service -o cat --no-pager | grep -c '^Accepted publickey' || true")).out.trim());
      copyProject(path.join(work, "project"));
      const e = engine(bin, path.join(work, "project"), path.join(work, "state"), "bench");
      const up = (...extra: string[]) => e.pulumi(["up", "--yes", "--skip-preview", ...extra], { timeoutMs: 40 * MIN });
      must(await e.pulumi(["stack", "init"]), "stack init");
      const hostKey = readFileSync(vps["VPS_HOST_KEY_FILE"]!, "utf8").trim().split(" ").slice(0, 2).join(" ");
      const cfg = guestStack({ domain: "bench.fastapi-edge.test", vps, hostKey, pebble });
      for (const [k, v] of Object.entries(cfg)) must(await e.pulumi(["config", "set", k, v]), `config ${k}`);
      must(await e.pulumi(["config", "set", "--secret", "hostPrivateKey"], { input: readFileSync(vps["VPS_KEY"]!, "utf8") }), "config key");

      add("fresh up", must(await up(), "fresh up"));
      const before = await logins();
      add("no-op up", must(await up("--expect-no-changes"), "no-op up"));
      noopSessions.push((await logins()) - before - 1);
      must(await e.pulumi(["config", "set", "clientMaxBodySize", "20m"]), "config");
      add("one-setting change", must(await up(), "change up"));
      writeFileSync(path.join(e.dir, "files/app/static/release.txt"), `round ${round}\n`);
      must(await e.pulumi(["config", "set", "appVersion", "2"]), "config");
      add("app version change", must(await up(), "app up"));
      add("destroy", must(await e.pulumi(["destroy", "--yes", "--skip-preview"], { timeoutMs: 20 * MIN }), "destroy"));
      add("recreate", must(await up(), "recreate"));
      rmSync(work, { recursive: true, force: true });
      console.log(`round ${round}:`, JSON.stringify(Object.fromEntries(Object.entries(times).map(([k, v]) => [k, v[v.length - 1]]))));
    }
  } finally {
    await harness("vps.sh", "stop");
    await harness("pebble.sh", "stop");
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const rows = Object.entries(times).map(([k, v]) => ({ step: k, median: median(v), runs: v }));
  writeFileSync(path.join(OUT, "engine.json"), JSON.stringify({ rounds, rows, noopSessions }, null, 2));
  const md = [
    `# Engine benchmark (${new Date().toISOString().slice(0, 10)}, \`npx tsx bench/engine.ts --rounds ${rounds}\`)`,
    "",
    "Real `pulumi` commands (CLI v3.259.0, command provider 1.2.1) against a Debian 12 guest under",
    "QEMU without KVM and Pebble, on a 2-core machine shared with whatever else ran. Each round",
    "starts from a blank guest. Wall times in seconds.",
    "",
    "| step | median (s) | runs (s) |",
    "| --- | --- | --- |",
    ...rows.map((r) => `| ${r.step} | ${r.median.toFixed(1)} | ${r.runs.map((x) => x.toFixed(1)).join(", ")} |`),
    "",
    `SSH sessions a no-op \`pulumi up\` opened on the host, per round: ${noopSessions.join(", ")} (goal: 0).`,
    "",
  ].join("\n");
  writeFileSync(path.join(REPO, "bench/ENGINE.md"), md);
  console.log(md);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
