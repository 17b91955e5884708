// npm run logs -- --stack NAME [--since 1h] [--html FILE] [--top N] [--json]
// npm run logs -- --file PATH [--since 1h] [--html FILE] ...
// npm run logs -- --ssh-host HOST [--ssh-port 22] [--ssh-user root] [--ssh-key FILE] [--ssh-host-key LINE] [--log PATH] ...
//
// Reads the nginx access log of a stack's host over SSH with the stack's own
// connection (pulumi config / stack output, secrets included; the host key
// pinned when the stack pins it), or a local copy, or a host given by flags
// (the same SSH code path), and prints the report of lib/logreport.ts. With
// --html, GoAccess (Debian package goaccess) writes an HTML report with
// charts of the same lines. Exit: 0 ok, 1 failure, 2 usage.
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { goaccessArgs } from "../lib/goaccess";
import { buildReport, formatReport, parseLog, parseSince } from "../lib/logreport";
import {
  HOST_ACCESS_LOG,
  knownHostsLine,
  PulumiConfigJson,
  PulumiOutputsJson,
  remoteWindowCommand,
  sshArgs,
  SshTarget,
  stackSshTarget,
  validateLogPath,
  validateTarget,
} from "../lib/logsource";

const REPO = path.resolve(__dirname, "..");
const STACK_RE = /^[A-Za-z0-9_.-]{1,100}$/;

class UsageError extends Error {}

function usage(msg: string): never {
  throw new UsageError(
    `${msg}\nusage: npm run logs -- (--stack NAME | --file PATH | --ssh-host HOST [--ssh-port N] [--ssh-user U] [--ssh-key FILE] [--ssh-host-key LINE])\n` +
      "                       [--log PATH] [--since 90s|30m|1h|7d] [--html FILE] [--top N] [--json]",
  );
}

/** A flag's validation: its error is a usage error (exit 2). */
function flag<T>(check: () => T): T {
  try {
    return check();
  } catch (e) {
    usage((e as Error).message);
  }
}

/**
 * Runs `pulumi ARGS` with the engine environment of scripts/pulumi-env.sh
 * (FASTAPI_EDGE_BACKEND picks the state backend) in the current directory,
 * the project whose Pulumi.STACK.yaml holds the stack's config (npm run
 * runs in the package root; a copy of the project works too).
 */
function pulumiJson(args: string[]): unknown {
  // pulumi-env.sh sets the backend from FASTAPI_EDGE_BACKEND; a PULUMI_BACKEND_URL already
  // in the environment (CI) is passed on rather than replaced by the local default.
  const backend = process.env["FASTAPI_EDGE_BACKEND"] ?? process.env["PULUMI_BACKEND_URL"];
  const res = spawnSync("bash", ["-c", '. "$0/scripts/pulumi-env.sh" >&2 && exec pulumi "$@"', REPO, ...args], {
    cwd: process.cwd(),
    env: { ...process.env, ...(backend ? { FASTAPI_EDGE_BACKEND: backend } : {}) },
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (res.status !== 0) throw new Error(`pulumi ${args.filter((a) => a !== "--show-secrets").join(" ")} failed:\n${res.stderr.trim()}`);
  return JSON.parse(res.stdout) as unknown;
}

function stackTarget(stack: string): SshTarget {
  if (!STACK_RE.test(stack)) usage(`--stack must be a stack name of letters, digits, _ . - (got ${JSON.stringify(stack)})`);
  const cfg = pulumiJson(["config", "--stack", stack, "--json", "--show-secrets"]) as PulumiConfigJson;
  const ec2 = (cfg["fastapi-edge:hostMode"]?.value ?? "ec2") === "ec2";
  const outputs = ec2 ? (pulumiJson(["stack", "output", "--stack", stack, "--json", "--show-secrets"]) as PulumiOutputsJson) : null;
  return stackSshTarget(cfg, outputs);
}

/** The lines of the window, read on the host through ssh (log-window.sh as the remote shell's stdin). */
function readOverSsh(t: SshTarget, logPath: string, sinceSeconds: number | null, keyFileFlag: string | undefined): string {
  const dir = mkdtempSync(path.join(tmpdir(), "fastapi-edge-logs-"));
  chmodSync(dir, 0o700);
  try {
    const files: { keyFile?: string; knownHosts?: string } = {};
    if (keyFileFlag) files.keyFile = keyFileFlag;
    else if (t.privateKey) {
      files.keyFile = path.join(dir, "key");
      writeFileSync(files.keyFile, t.privateKey.endsWith("\n") ? t.privateKey : `${t.privateKey}\n`, { mode: 0o600 });
    }
    if (t.hostKey) {
      files.knownHosts = path.join(dir, "known_hosts");
      writeFileSync(files.knownHosts, knownHostsLine(t), { mode: 0o600 });
    } else {
      process.stderr.write(`logs: warning: the host key of ${t.host} is not pinned (no hostKey), so it is not checked\n`);
    }
    const res = spawnSync("ssh", sshArgs(t, files, remoteWindowCommand(t.user, logPath, sinceSeconds)), {
      input: readFileSync(path.join(REPO, "files", "scripts", "log-window.sh")),
      encoding: "utf8",
      maxBuffer: 1024 * 1024 * 1024,
      timeout: 300_000,
    });
    if (res.error) throw new Error(`ssh: ${res.error.message}`);
    if (res.status !== 0) throw new Error(`ssh ${t.user}@${t.host}:${t.port} exited ${res.status}:\n${res.stderr.trim()}`);
    return res.stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function writeHtml(lines: string[], out: string, title: string, spanSeconds: number): void {
  const dir = mkdtempSync(path.join(tmpdir(), "fastapi-edge-goaccess-"));
  try {
    const input = path.join(dir, "access.log");
    writeFileSync(input, lines.length ? lines.join("\n") + "\n" : "");
    const res = spawnSync("goaccess", goaccessArgs(input, path.resolve(out), title, spanSeconds), { encoding: "utf8", timeout: 300_000 });
    if (res.error) throw new Error(`goaccess: ${res.error.message} (install the Debian package goaccess)`);
    if (res.status !== 0) throw new Error(`goaccess exited ${res.status}:\n${res.stderr.trim()}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function main(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      stack: { type: "string" },
      file: { type: "string" },
      "ssh-host": { type: "string" },
      "ssh-port": { type: "string" },
      "ssh-user": { type: "string" },
      "ssh-key": { type: "string" },
      "ssh-host-key": { type: "string" },
      log: { type: "string" },
      since: { type: "string" },
      html: { type: "string" },
      top: { type: "string" },
      json: { type: "boolean", default: false },
    },
    strict: true,
  });
  const sources = [values.stack, values.file, values["ssh-host"]].filter((v) => v !== undefined);
  if (sources.length !== 1) usage("give exactly one of --stack, --file, --ssh-host");
  let sinceSeconds: number | null = null;
  if (values.since !== undefined) {
    try {
      sinceSeconds = parseSince(values.since);
    } catch (e) {
      usage((e as Error).message);
    }
  }
  const top = values.top === undefined ? 10 : Number(values.top);
  if (!Number.isInteger(top) || top < 1 || top > 1000)
    usage(`--top must be a whole number from 1 to 1000 (got ${JSON.stringify(values.top)})`);
  if (values.file !== undefined && (values.log !== undefined || values["ssh-key"] !== undefined))
    usage("--log and --ssh-key need a host (--stack or --ssh-host)");

  let text: string;
  let source: string;
  if (values.file !== undefined) {
    text = readFileSync(values.file, "utf8");
    source = values.file;
  } else {
    const logPath = values.log === undefined ? HOST_ACCESS_LOG : flag(() => validateLogPath(values.log!));
    let target: SshTarget;
    if (values.stack !== undefined) {
      target = stackTarget(values.stack);
      source = `stack ${values.stack}: ${target.user}@${target.host}:${logPath}`;
    } else {
      const port = values["ssh-port"] === undefined ? 22 : Number(values["ssh-port"]);
      target = flag(() =>
        validateTarget(
          {
            host: values["ssh-host"]!,
            port,
            user: values["ssh-user"] ?? "root",
            ...(values["ssh-host-key"] !== undefined ? { hostKey: values["ssh-host-key"] } : {}),
          },
          { host: "--ssh-host", port: "--ssh-port", user: "--ssh-user", hostKey: "--ssh-host-key", key: "--ssh-key" },
        ),
      );
      source = `${target.user}@${target.host}:${logPath}`;
    }
    text = readOverSsh(target, logPath, sinceSeconds, values["ssh-key"]);
  }

  const parsed = parseLog(text, { keepLines: values.html !== undefined });
  // The host already cut the window by its own clock; a local file is cut here.
  const from = values.file !== undefined && sinceSeconds !== null ? Date.now() / 1000 - sinceSeconds : null;
  const keep = (i: number): boolean => from === null || parsed.entries[i]!.msec >= from;
  const entries = from === null ? parsed.entries : parsed.entries.filter((_, i) => keep(i));
  const report = buildReport(entries, parsed.skipped, { top });
  if (values.html !== undefined) {
    // GoAccess gets the same lines the report counted: ours, in the window.
    const lines = from === null ? parsed.lines : parsed.lines.filter((_, i) => keep(i));
    writeHtml(
      lines,
      values.html,
      `fastapi-edge access log: ${source}${values.since ? ` (last ${values.since})` : ""}`,
      report.from !== null && report.to !== null ? report.to - report.from : 0,
    );
  }
  process.stdout.write(values.json ? JSON.stringify({ source, ...report }, null, 2) + "\n" : formatReport(report, source));
  if (values.html !== undefined) process.stderr.write(`logs: HTML report (GoAccess) written to ${values.html}\n`);
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`logs: ${(e as Error).message}\n`);
  process.exitCode = e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS") ? 2 : 1;
}
