// The real path end to end, as far as this machine allows: a blank Debian 12
// guest under QEMU reached over real SSH, real nginx, certbot, uvicorn and a
// real ACME server (Pebble), driven by the program's own host steps.
//
// The Pulumi CLI builds here (scripts/get-pulumi.sh), but the command provider
// (pulumi-resource-command 1.2.1) cannot: the Go module proxy refuses every
// version of github.com/pulumi/pulumi-command/provider (docs/engine.md). So
// the program runs under Pulumi mocks with the e2e stack's config, and each
// remote.Command / CopyToRemote it declares is executed over SSH exactly as the
// provider would: `create` as the remote command with `stdin` as its input,
// `delete` on destroy, CopyToRemote as a recursive copy. A step whose inputs
// did not change is skipped, as the engine's diff would skip it.
//
//  1. up from a blank guest   2. an unchanged plan runs nothing; re-running every
//  step anyway changes nothing (idempotence)   3. a change, under wrk load
//  4. a config nginx -t rejects fails with nginx's message, site keeps serving
//  5. certbot renew --dry-run   6. destroy, then up again   7. timings
import { ChildProcess, spawn, spawnSync } from "node:child_process";
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runProgram } from "../helpers/mocks";

const REPO = path.resolve(__dirname, "../..");
const ART = path.join(REPO, "test/artifacts");
const DOMAIN = "e2e.fastapi-edge.test";
const MIN = 60_000;

type Env = Record<string, string>;

function parseEnv(text: string): Env {
  const env: Env = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) env[m[1]!] = m[2]!;
  }
  return env;
}

function log(name: string, text: string): void {
  mkdirSync(ART, { recursive: true });
  appendFileSync(path.join(ART, "e2e.log"), `\n===== ${new Date().toISOString()} ${name}\n${text}\n`);
}

interface Run {
  code: number;
  out: string;
  seconds: number;
}

/**
 * Run a command without blocking the event loop (a synchronous wait of minutes
 * starves vitest's worker RPC), capturing stdout+stderr, bounded in time.
 */
function sh(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd: REPO, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => p.kill("SIGKILL"), opts.timeoutMs ?? 20 * MIN);
    p.on("close", (code) => {
      clearTimeout(timer);
      log(`${cmd} ${args.join(" ")}`.slice(0, 300), out);
      resolve({ code: code ?? -1, out, seconds: (Date.now() - t0) / 1000 });
    });
    p.stdin.on("error", () => undefined);
    p.stdin.end(opts.input ?? "");
  });
}

/** A harness script's KEY=VALUE output (progress goes to the log). */
async function harness(script: string, args: string[], timeoutMs: number): Promise<Env> {
  const r = await sh(path.join(REPO, "test/e2e", script), args, { timeoutMs });
  if (r.code !== 0) throw new Error(`${script} ${args.join(" ")} failed:\n${r.out}`);
  return parseEnv(r.out);
}

let work = "";
let vps: Env = {};
let pebble: Env = {};
let pebbleRoot = "";
let sshOpts: string[] = [];
const timings: Record<string, number[]> = {};
const background: ChildProcess[] = [];

function time<T>(name: string, f: () => Promise<T>): Promise<T> {
  const t0 = Date.now();
  return f().finally(() => (timings[name] ??= []).push((Date.now() - t0) / 1000));
}

function guest(command: string, input?: string): Promise<Run> {
  return sh("ssh", [...sshOpts, command], input !== undefined ? { input } : {});
}

// ------------------------------------------------------------ host steps

interface Step {
  name: string;
  kind: "command" | "copy";
  create?: string;
  update?: string;
  stdin?: string;
  del?: string;
  source?: string;
  remotePath?: string;
  /** What the engine diffs: a change re-runs the step. */
  key: string;
}

let settings: Record<string, string> = {};
let privateKey = "";
/** Inputs of the steps last applied, by name (the "state"). */
let state = new Map<string, Step>();

/** The local path of a FileArchive input (its `path` is a promise in the SDK's asset object). */
async function archivePath(v: unknown): Promise<string> {
  const p = typeof v === "object" && v !== null ? (v as { path?: unknown }).path : undefined;
  const resolved = p instanceof Promise ? ((await p) as unknown) : p;
  if (typeof resolved === "string") return resolved;
  throw new Error(`CopyToRemote source is not a file archive: ${JSON.stringify(v)}`);
}

/** The program's host steps for a config, in the order it declares (and depends on) them. */
async function plan(extra: Record<string, string> = {}): Promise<Step[]> {
  const run = await runProgram({ ...settings, ...extra }, { secrets: { hostPrivateKey: privateKey }, stack: "e2e" });
  const steps: Step[] = [];
  for (const r of run.resources) {
    const i = r.inputs as Record<string, unknown>;
    if (r.type === "command:remote:Command") {
      const step: Step = { name: r.name, kind: "command", create: String(i["create"]), key: "" };
      if (typeof i["update"] === "string") step.update = i["update"];
      if (typeof i["stdin"] === "string") step.stdin = i["stdin"];
      if (typeof i["delete"] === "string") step.del = i["delete"];
      step.key = JSON.stringify([i["create"], i["stdin"], i["triggers"]]);
      steps.push(step);
    } else if (r.type === "command:remote:CopyToRemote") {
      const source = await archivePath(i["source"]);
      steps.push({ name: r.name, kind: "copy", source, remotePath: String(i["remotePath"]), key: JSON.stringify([source, i["remotePath"], i["triggers"]]) });
    }
  }
  expect(steps.map((s) => s.name)).toEqual(["bootstrap-wait-ssh", "bootstrap-install", "app-upload", "app-deploy", "nginx-acme-bootstrap", "nginx-certificate", "nginx-site"]);
  return steps;
}

interface ApplyResult {
  ran: string[];
  failed?: { step: string; out: string };
}

/** Run the steps whose inputs changed, in order, as the command provider would; stop at the first failure. */
async function apply(steps: Step[], opts: { force?: boolean } = {}): Promise<ApplyResult> {
  const ran: string[] = [];
  for (const s of steps) {
    const prev = state.get(s.name);
    if (!opts.force && prev && prev.key === s.key) continue;
    ran.push(s.name);
    let r: Run;
    if (s.kind === "copy") {
      r = await sh("scp", ["-q", "-r", ...scpOpts(), s.source!, `root@127.0.0.1:${s.remotePath}`]);
    } else {
      const cmd = prev && s.update ? s.update : s.create!;
      r = await guest(cmd, s.stdin ?? "");
    }
    if (r.code !== 0) return { ran, failed: { step: s.name, out: r.out } };
    state.set(s.name, s);
  }
  return { ran };
}

/** pulumi destroy: delete commands in reverse order. */
async function destroy(): Promise<string[]> {
  const ran: string[] = [];
  for (const s of [...state.values()].reverse()) {
    if (s.del) {
      ran.push(s.name);
      const r = await guest(s.del);
      expect(r.code, `${s.name} delete: ${r.out}`).toBe(0);
    }
  }
  state = new Map();
  return ran;
}

function scpOpts(): string[] {
  return ["-P", vps["VPS_SSH_PORT"]!, "-i", vps["VPS_KEY"]!, "-o", `UserKnownHostsFile=${path.join(work, "known_hosts")}`, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"];
}

// ------------------------------------------------------------ checks

function curl(args: string[]): Promise<Run> {
  return sh("curl", ["-sS", "--max-time", "30", "--resolve", `${DOMAIN}:${vps["VPS_HTTPS_PORT"]}:127.0.0.1`, "--resolve", `${DOMAIN}:${vps["VPS_HTTP_PORT"]}:127.0.0.1`, ...args]);
}

const httpsUrl = (p: string) => `https://${DOMAIN}:${vps["VPS_HTTPS_PORT"]}${p}`;

async function assertServing(): Promise<void> {
  const r = await curl(["--cacert", pebbleRoot, "-w", "\n%{http_code}", httpsUrl("/api/whoami")]);
  expect(r.out, r.out).toMatch(/\n200$/);
  const body = JSON.parse(r.out.slice(0, r.out.lastIndexOf("\n"))) as { scheme: string };
  expect(body.scheme).toBe("https");
}

/**
 * wrk against the HTTPS site; the name resolves in a private mount namespace
 * (no global /etc/hosts edit). Every request on a new connection: on a reload,
 * nginx's old workers close idle keep-alive connections, and a request a client
 * writes onto one at that instant is lost before nginx reads it (the HTTP
 * keep-alive race that real clients answer by retrying idempotent requests;
 * wrk does not retry, and counted 2-3 such read errors in this emulated guest).
 * New connections go to the listening socket, which a reload never closes.
 */
function startWrk(seconds: number): { proc: ChildProcess; result: Promise<string> } {
  const hosts = path.join(work, "hosts");
  writeFileSync(hosts, `127.0.0.1 localhost ${DOMAIN}\n`);
  const script = `mount --bind ${hosts} /etc/hosts && exec wrk -t1 -c8 -d${seconds}s --timeout 15s -H 'Connection: close' https://${DOMAIN}:${vps["VPS_HTTPS_PORT"]}/api/hello`;
  const proc = spawn("unshare", ["-m", "sh", "-c", script], { stdio: ["ignore", "pipe", "pipe"] });
  background.push(proc);
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  return { proc, result: new Promise<string>((res) => proc.on("exit", () => res(out))) };
}

function wrkFailures(out: string): { requests: number; errors: number; non2xx: number } {
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? "0");
  const e = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = e ? e.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? "0");
  return { requests, errors, non2xx };
}

// ------------------------------------------------------------ lifecycle

beforeAll(async () => {
  mkdirSync(ART, { recursive: true });
  writeFileSync(path.join(ART, "e2e.log"), "");
  await harness("vps.sh", ["image"], 40 * MIN);
  await harness("vps.sh", ["stop"], MIN);
  vps = { ...(await harness("vps.sh", ["env"], MIN)), ...(await harness("vps.sh", ["start"], 10 * MIN)) };
  await harness("pebble.sh", ["stop"], MIN);
  pebble = await harness("pebble.sh", ["start"], 2 * MIN);

  work = mkdtempSync(path.join(tmpdir(), "fe-e2e-"));
  pebbleRoot = path.join(work, "pebble-root.pem");
  const root = await sh("curl", ["-sf", "--cacert", pebble["ACME_CA_BUNDLE"]!, pebble["PEBBLE_ROOT_URL"]!]);
  expect(root.code, root.out).toBe(0);
  writeFileSync(pebbleRoot, root.out);
  // The host key is pinned, as the program's hostKey setting pins it for the provider.
  const hostKey = readFileSync(vps["VPS_HOST_KEY_FILE"]!, "utf8").trim().split(" ").slice(0, 2).join(" ");
  writeFileSync(path.join(work, "known_hosts"), `[127.0.0.1]:${vps["VPS_SSH_PORT"]} ${hostKey}\n`);
  sshOpts = ["-p", vps["VPS_SSH_PORT"]!, "-i", vps["VPS_KEY"]!, "-o", `UserKnownHostsFile=${path.join(work, "known_hosts")}`, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "root@127.0.0.1"];
  privateKey = readFileSync(vps["VPS_KEY"]!, "utf8");
  settings = {
    domain: DOMAIN,
    email: "ops@example.test",
    hostMode: "existing",
    hostAddress: "127.0.0.1",
    hostPort: vps["VPS_SSH_PORT"]!,
    hostUser: "root",
    hostKey,
    acme: "custom",
    acmeDirectoryUrl: pebble["ACME_DIRECTORY_URL_FOR_GUEST"]!,
    acmeCaBundle: pebble["ACME_CA_BUNDLE"]!,
    appProcesses: "2",
  };
}, 60 * MIN);

afterAll(() => {
  for (const p of background) if (p.exitCode === null) p.kill("SIGKILL");
  spawnSync(path.join(REPO, "test/e2e/pebble.sh"), ["stop"], { stdio: "ignore" });
  spawnSync(path.join(REPO, "test/e2e/vps.sh"), ["stop"], { stdio: "ignore" });
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const summary = Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, { runs: v, median: median(v) }]));
  writeFileSync(path.join(ART, "e2e-timings.json"), JSON.stringify(summary, null, 2));
  console.log("e2e timings (s):", JSON.stringify(summary));
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("end to end against a local VPS (program's host steps over real SSH)", () => {
  it("1. up from a blank guest: packages, certificate from Pebble via HTTP-01, app, full site", async () => {
    expect((await guest("command -v nginx || echo blank")).out).toContain("blank");
    const steps = await plan();
    const r = await time("fresh up", () => apply(steps));
    expect(r.failed, r.failed?.out).toBeUndefined();
    await assertServing();
    const issuer = await sh("sh", ["-c", `echo | openssl s_client -connect 127.0.0.1:${vps["VPS_HTTPS_PORT"]} -servername ${DOMAIN} 2>/dev/null | openssl x509 -noout -issuer`]);
    expect(issuer.out).toMatch(/Pebble/i);
    const http = await curl(["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", `http://${DOMAIN}:${vps["VPS_HTTP_PORT"]}/api/hello`]);
    expect(http.out).toMatch(/^301 https:\/\/e2e\.fastapi-edge\.test\/api\/hello/);
    expect((await guest("systemctl is-active fastapi-edge-app@8000 fastapi-edge-app@8001 nginx")).out.trim().split("\n")).toEqual(["active", "active", "active"]);
  }, 40 * MIN);

  it("2. an unchanged plan runs nothing; re-running every step anyway changes nothing", async () => {
    const steps = await plan();
    const noop = await time("no-op up", () => apply(steps));
    expect(noop).toEqual({ ran: [] });
    // Idempotence, as Molecule checks roles: run every step again.
    const again = await apply(steps, { force: true });
    expect(again.failed, again.failed?.out).toBeUndefined();
    const out = readFileSync(path.join(ART, "e2e.log"), "utf8");
    expect(out).toMatch(/no changes.*nginx not reloaded/);
    expect(out).toMatch(/already installed/);
    await assertServing();
  }, 20 * MIN);

  it("3. a changed setting re-runs only the site push, under load with 0 failed requests", async () => {
    const body = path.join(work, "body.bin");
    writeFileSync(body, Buffer.alloc(11 * 1024 * 1024, 97));
    const post = async () => (await curl(["--cacert", pebbleRoot, "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", `@${body}`, httpsUrl("/api/hello")])).out;
    expect(await post()).toBe("413");
    const steps = await plan({ clientMaxBodySize: "20m" });
    const before = state.get("nginx-site")!.stdin!.split("\n");
    const after = steps.find((s) => s.name === "nginx-site")!.stdin!.split("\n");
    const removed = before.filter((l) => !after.includes(l));
    const added = after.filter((l) => !before.includes(l));
    expect(removed).toEqual(["client_max_body_size 10m;"]);
    expect(added).toEqual(["client_max_body_size 20m;"]);

    const load = startWrk(600);
    await new Promise((r) => setTimeout(r, 3000));
    const r = await time("change up", () => apply(steps));
    await new Promise((res) => setTimeout(res, 3000));
    load.proc.kill("SIGINT");
    const wrkOut = await load.result;
    const wrk = wrkFailures(wrkOut);
    log("wrk during change", `${JSON.stringify(wrk)}\n${wrkOut}`);
    expect(r).toEqual({ ran: ["nginx-site"] });
    expect(wrk.requests).toBeGreaterThan(50);
    expect(wrk.errors).toBe(0);
    expect(wrk.non2xx).toBe(0);
    expect(await post()).not.toBe("413");
    settings.clientMaxBodySize = "20m";
  }, 20 * MIN);

  it("4. a config nginx -t rejects fails with nginx's own message; the old config keeps serving", async () => {
    const steps = await plan({ proxyReadTimeout: "90s" });
    const site = steps.find((s) => s.name === "nginx-site")!;
    // Test-only injection: a directive nginx does not know, in the pushed text.
    site.stdin = site.stdin!.replace("proxy_read_timeout 90s;", "proxy_read_timeout 90s;\n    fastapi_edge_broken_directive on;");
    site.key += "broken";
    const r = await apply(steps);
    expect(r.failed?.step).toBe("nginx-site");
    expect(r.failed?.out).toMatch(/unknown directive "fastapi_edge_broken_directive"/);
    expect(r.failed?.out).toMatch(/candidate nginx config rejected by nginx -t; live config unchanged/);
    await assertServing();
    expect((await guest("grep -rl fastapi_edge_broken_directive /etc/nginx || echo clean")).out).toContain("clean");
    expect((await guest("grep -h proxy_read_timeout /etc/nginx/fastapi-edge/site.conf | head -1")).out).toContain("60s");
    // The next good push of the same change succeeds.
    const fixed = await apply(await plan({ proxyReadTimeout: "90s" }));
    expect(fixed).toEqual({ ran: ["nginx-site"] });
    settings.proxyReadTimeout = "90s";
    await assertServing();
  }, 20 * MIN);

  it("5. certbot renew --dry-run succeeds against Pebble; the deploy hook and timer are installed", async () => {
    // --dry-run switches to Let's Encrypt staging unless --server is given again.
    const r = await guest(`REQUESTS_CA_BUNDLE=/etc/fastapi-edge/acme-ca.pem certbot renew --dry-run --no-random-sleep-on-renew --server ${settings.acmeDirectoryUrl} 2>&1`);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/Congratulations, all (simulated )?renewals succeeded/);
    expect((await guest("test -x /etc/letsencrypt/renewal-hooks/deploy/fastapi-edge-reload-nginx.sh && echo hook-ok")).out).toContain("hook-ok");
    expect((await guest("systemctl show certbot.service -p Environment")).out).toContain("REQUESTS_CA_BUNDLE=/etc/fastapi-edge/acme-ca.pem");
    expect((await guest("systemctl is-enabled certbot.timer")).out).toContain("enabled");
  }, 10 * MIN);

  it("6. destroy removes what the program put on the host; up again serves (staging recreate)", async () => {
    const ran = await time("destroy", () => destroy());
    expect(ran).toEqual(["nginx-site", "app-deploy"]);
    const left = await guest("systemctl list-units --all --plain --no-legend 'fastapi-edge-app@*' | wc -l; ls /etc/nginx/fastapi-edge 2>&1 | head -1; test -e /opt/fastapi-edge/app && echo app-left || echo app-gone; ls /etc/letsencrypt/live/; grep -c sites-enabled /etc/nginx/nginx.conf");
    expect(left.out).toMatch(/^0\n/);
    expect(left.out).toMatch(/No such file/);
    expect(left.out).toContain("app-gone");
    expect(left.out).toContain(DOMAIN); // certificates are kept on purpose
    expect(left.out.trim().split("\n").pop()).not.toBe("0"); // the distribution's nginx.conf is back
    const r = await time("recreate up", async () => apply(await plan()));
    expect(r.failed, r.failed?.out).toBeUndefined();
    await assertServing();
  }, 30 * MIN);

  it("7. timings are recorded", () => {
    for (const k of ["fresh up", "no-op up", "change up", "recreate up"]) expect(timings[k]?.length, k).toBeGreaterThan(0);
  });
});
