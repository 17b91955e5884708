// Live test of files/scripts/app-rollout.sh. systemd is replaced by a fake
// SYSTEMCTL that (re)starts REAL uvicorn processes (through run-app.sh) per
// port and records every call, plus what all watched ports answered at the
// moment of each restart, so one-at-a-time order can be asserted.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  APP_DIR,
  SYSTEM_PYTHON,
  freePorts,
  httpJson,
  isAlive,
  run,
  script,
  stopPidFiles,
  waitForHttp,
  type RunResult,
} from "../helpers/proc";

let dir = "";
let state = "";
let wantsDir = "";
let fakeSystemctl = "";
let fakeJournalctl = "";
let ports: number[] = [];
let a = 0;
let b = 0;
let c = 0;
let extraRunning = 0;
let extraEnabledOnly = 0;

// Fake systemctl: state in $FAKE_STATE (PORT.pid, PORT.log, enabled/UNIT, calls.log).
const FAKE_SYSTEMCTL = `#!/usr/bin/env bash
set -euo pipefail
S=\${FAKE_STATE:?FAKE_STATE not set}
mkdir -p "$S/enabled"
log() { printf '%s\\n' "$*" >> "$S/calls.log"; }
port_of() {
  [[ $1 =~ ^fastapi-edge-app@([0-9]+)\\.service$ ]] || { echo "fake systemctl: bad unit '$1'" >&2; exit 5; }
  echo "\${BASH_REMATCH[1]}"
}
alive() {
  local pid st
  [[ -f $S/$1.pid ]] || return 1
  pid=$(<"$S/$1.pid")
  kill -0 "$pid" 2>/dev/null || return 1
  st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ $st != Z && $st != X ]]
}
stop_port() {
  local p=$1 pid i
  if alive "$p"; then
    pid=$(<"$S/$p.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$p" || break; sleep 0.1; done
    alive "$p" && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$S/$p.pid"
}
start_port() {
  local p=$1 module=$APP_MODULE
  [[ " \${FAKE_BROKEN_PORTS:-} " == *" $p "* ]] && module=no_such_module:app
  echo "=== start $(date +%T) ===" >> "$S/$p.log"
  setsid bash -c 'sleep "$1"; shift; exec "$@"' _ "\${FAKE_START_DELAY:-0}" \\
    env APP_MODULE="$module" "$FAKE_RUN_APP" "$p" >> "$S/$p.log" 2>&1 < /dev/null &
  echo $! > "$S/$p.pid"
}
snapshot() {
  local out=() q body code
  for q in \${FAKE_WATCH_PORTS:-}; do
    body=$(curl -s --max-time 2 -w ' %{http_code}' "http://127.0.0.1:$q/healthz" || true)
    code=\${body##* }
    if [[ $body =~ \\"version\\":\\"([^\\"]*)\\" ]]; then out+=("$q=$code:\${BASH_REMATCH[1]}"); else out+=("$q=$code"); fi
  done
  echo "\${out[*]}"
}
now=0
args=()
for x in "$@"; do
  case $x in
    --now) now=1 ;;
    --quiet | --no-pager | --all | --plain | --no-legend | --lines=* | --type=*) ;;
    *) args+=("$x") ;;
  esac
done
cmd=\${args[0]:-}
units=("\${args[@]:1}")
case $cmd in
  daemon-reload) log "daemon-reload" ;;
  enable)
    log "enable $(for u in "\${units[@]}"; do port_of "$u"; done | tr '\\n' ' ' | sed 's/ $//')"
    for u in "\${units[@]}"; do touch "$S/enabled/$u"; done ;;
  disable)
    for u in "\${units[@]}"; do
      p=$(port_of "$u"); log "disable$([[ $now == 1 ]] && echo ' --now') $p"
      rm -f "$S/enabled/$u" "\${WANTS_DIR:-/nonexistent}/$u"
      if [[ $now == 1 ]]; then stop_port "$p"; fi
    done ;;
  restart)
    p=$(port_of "\${units[0]}"); log "restart $p | $(snapshot)"
    stop_port "$p"; start_port "$p" ;;
  start)
    p=$(port_of "\${units[0]}"); log "start $p"
    alive "$p" || start_port "$p" ;;
  stop) p=$(port_of "\${units[0]}"); log "stop $p"; stop_port "$p" ;;
  is-active) alive "$(port_of "\${units[0]}")" ;;
  status)
    p=$(port_of "\${units[0]}")
    if alive "$p"; then echo "* \${units[0]} - fake: active (running) pid $(<"$S/$p.pid")"; else echo "* \${units[0]} - fake: inactive (dead)"; exit 3; fi ;;
  list-units)
    for f in "$S"/*.pid; do
      [[ -e $f ]] || continue
      p=$(basename "$f" .pid)
      alive "$p" && echo "fastapi-edge-app@$p.service loaded active running fake instance"
    done ;;
  *) echo "fake systemctl: unsupported: $*" >&2; exit 1 ;;
esac
`;

// Fake journalctl: -u UNIT -n N --no-pager -> tail of that port's log.
const FAKE_JOURNALCTL = `#!/usr/bin/env bash
set -euo pipefail
unit= n=10
while (( $# )); do
  case $1 in -u) unit=$2; shift 2 ;; -n) n=$2; shift 2 ;; *) shift ;; esac
done
[[ $unit =~ @([0-9]+)\\.service$ ]] || exit 1
tail -n "$n" "$FAKE_STATE/\${BASH_REMATCH[1]}.log"
`;

function rollout(args: string[], extra: Record<string, string> = {}): Promise<RunResult> {
  return run(script("app-rollout.sh"), args, {
    env: {
      ...process.env,
      SYSTEMCTL: fakeSystemctl,
      JOURNALCTL: fakeJournalctl,
      WANTS_DIR: wantsDir,
      FAKE_STATE: state,
      FAKE_RUN_APP: script("run-app.sh"),
      FAKE_WATCH_PORTS: [a, b, c].join(" "),
      APP_MODULE: "main:app",
      APP_DIR,
      FORWARDED_ALLOW_IPS: "127.0.0.1",
      PYTHON: SYSTEM_PYTHON,
      PYTHONDONTWRITEBYTECODE: "1",
      HEALTH_INTERVAL: "0.2",
      ...extra,
    },
    timeoutMs: 180_000,
  });
}

function fake(args: string[], extra: Record<string, string> = {}): Promise<RunResult> {
  return run(fakeSystemctl, args, {
    env: {
      ...process.env,
      FAKE_STATE: state,
      FAKE_RUN_APP: script("run-app.sh"),
      APP_MODULE: "main:app",
      APP_DIR,
      FORWARDED_ALLOW_IPS: "127.0.0.1",
      PYTHON: SYSTEM_PYTHON,
      PYTHONDONTWRITEBYTECODE: "1",
      ...extra,
    },
  });
}

function calls(): string[] {
  const p = path.join(state, "calls.log");
  return existsSync(p) ? readFileSync(p, "utf8").split("\n").filter((l) => l !== "") : [];
}

function resetCalls(): void {
  rmSync(path.join(state, "calls.log"), { force: true });
}

function pidOf(port: number): number {
  const p = path.join(state, `${port}.pid`);
  return existsSync(p) ? Number.parseInt(readFileSync(p, "utf8"), 10) : 0;
}

async function versionOf(port: number): Promise<string> {
  return (await httpJson<{ version: string }>(`http://127.0.0.1:${port}/healthz`)).json.version;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-rollout-test-"));
  state = path.join(dir, "state");
  wantsDir = path.join(dir, "wants");
  mkdirSync(state);
  mkdirSync(wantsDir);
  fakeSystemctl = path.join(dir, "systemctl");
  fakeJournalctl = path.join(dir, "journalctl");
  writeFileSync(fakeSystemctl, FAKE_SYSTEMCTL);
  writeFileSync(fakeJournalctl, FAKE_JOURNALCTL);
  chmodSync(fakeSystemctl, 0o755);
  chmodSync(fakeJournalctl, 0o755);
  ports = await freePorts(5);
  [a, b, c, extraRunning, extraEnabledOnly] = ports;
});

afterAll(async () => {
  await stopPidFiles(state);
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

describe("app-rollout.sh", () => {
  it("restarts one instance at a time, waits for health + version, and prunes extra instances", async () => {
    // An instance on a port that is no longer wanted (running), and one that is
    // only enabled (link in the wants dir).
    const started = await fake(["start", `fastapi-edge-app@${extraRunning}.service`], { APP_VERSION: "0.9.0" });
    expect(started.code, started.stderr).toBe(0);
    await waitForHttp(`http://127.0.0.1:${extraRunning}/healthz`, 20_000);
    const extraPid = pidOf(extraRunning);
    writeFileSync(path.join(wantsDir, `fastapi-edge-app@${extraEnabledOnly}.service`), "");
    resetCalls();

    const t0 = Date.now();
    const res = await rollout([String(a), String(b), String(c)], { APP_VERSION: "1.0.0", EXPECT_VERSION: "1.0.0", FAKE_START_DELAY: "1" });
    const elapsed = Date.now() - t0;
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
    expect(calls()).toEqual([
      "daemon-reload",
      `enable ${a} ${b} ${c}`,
      `restart ${a} | ${a}=000 ${b}=000 ${c}=000`,
      `restart ${b} | ${a}=200:1.0.0 ${b}=000 ${c}=000`,
      `restart ${c} | ${a}=200:1.0.0 ${b}=200:1.0.0 ${c}=000`,
      `disable --now ${extraRunning}`,
      `disable --now ${extraEnabledOnly}`,
    ]);
    // each instance starts 1 s after its restart: the script really waited
    expect(elapsed).toBeGreaterThanOrEqual(3000);
    expect(res.stdout).toMatch(new RegExp(`\\[3/3\\] fastapi-edge-app@${c}\\.service healthy after \\d+s \\(version 1\\.0\\.0\\)`));
    for (const p of [a, b, c]) expect(await versionOf(p)).toBe("1.0.0");
    expect(isAlive(extraPid)).toBe(false);
    expect(existsSync(path.join(state, "enabled", `fastapi-edge-app@${a}.service`))).toBe(true);
  });

  it("a second rollout upgrades every instance while the others keep serving", async () => {
    const before = [a, b, c].map(pidOf);
    resetCalls();
    const res = await rollout(["--no-prune", String(a), String(b), String(c)], { APP_VERSION: "1.0.1", EXPECT_VERSION: "1.0.1" });
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
    const restarts = calls().filter((l) => l.startsWith("restart"));
    expect(restarts).toEqual([
      `restart ${a} | ${a}=200:1.0.0 ${b}=200:1.0.0 ${c}=200:1.0.0`,
      `restart ${b} | ${a}=200:1.0.1 ${b}=200:1.0.0 ${c}=200:1.0.0`,
      `restart ${c} | ${a}=200:1.0.1 ${b}=200:1.0.1 ${c}=200:1.0.0`,
    ]);
    expect(calls().some((l) => l.startsWith("disable"))).toBe(false);
    const after = [a, b, c].map(pidOf);
    after.forEach((pid, i) => expect(pid).not.toBe(before[i]));
    before.forEach((pid) => expect(isAlive(pid)).toBe(false));
  });

  it("fails loudly with the journal tail when an instance never gets healthy, leaving later ports untouched", async () => {
    const cPid = pidOf(c);
    resetCalls();
    const t0 = Date.now();
    const res = await rollout([String(a), String(b), String(c)], { APP_VERSION: "1.0.2", HEALTH_TIMEOUT: "3", FAKE_BROKEN_PORTS: String(b) });
    expect(res.code).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(3000);
    expect(res.stderr).toContain(`fastapi-edge-app@${b}.service not healthy at http://127.0.0.1:${b}/healthz after 3s`);
    expect(res.stderr).toMatch(/journalctl -u fastapi-edge-app@\d+\.service \(last 50 lines\)/);
    expect(res.stderr).toMatch(/Error loading ASGI app|No module named|Could not import module/);
    expect(res.stderr).toContain(`rollout stopped at fastapi-edge-app@${b}.service (remaining ports untouched)`);
    expect(calls().filter((l) => l.startsWith("restart")).map((l) => l.split(" ")[1])).toEqual([String(a), String(b)]);
    expect(calls().some((l) => l.startsWith("disable"))).toBe(false);
    expect(await versionOf(a)).toBe("1.0.2");
    expect(pidOf(c)).toBe(cPid);
    expect(await versionOf(c)).toBe("1.0.1");
  });

  it("fails when the instance reports a version other than EXPECT_VERSION", async () => {
    resetCalls();
    const res = await rollout([String(a), String(b), String(c)], { APP_VERSION: "1.0.3", EXPECT_VERSION: "2.0.0", HEALTH_TIMEOUT: "2" });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain("HTTP 200 but version '1.0.3' != expected '2.0.0'");
    expect(calls().filter((l) => l.startsWith("restart")).map((l) => l.split(" ")[1])).toEqual([String(a)]);
  });

  it("--prune-only stops instances not in the list without restarting any", async () => {
    resetCalls();
    const res = await rollout(["--prune-only", String(a)]);
    expect(res.code, res.stderr).toBe(0);
    expect(calls().filter((l) => !l.startsWith("disable"))).toEqual([]);
    expect(calls()).toEqual(expect.arrayContaining([`disable --now ${c}`]));
    expect(calls().some((l) => l === `disable --now ${a}`)).toBe(false);
    expect(pidOf(c)).toBe(0);
    expect(await versionOf(a)).toBe("1.0.3");
  });

  it("rejects bad usage with exit 64", async () => {
    expect((await rollout([])).code).toBe(64);
    expect((await rollout(["80a"])).code).toBe(64);
    expect((await rollout(["70000"])).code).toBe(64);
    expect((await rollout(["--bogus", "8000"])).code).toBe(64);
    expect(calls().filter((l) => l.startsWith("restart"))).toEqual([]);
  });
});
