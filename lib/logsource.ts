// Where `npm run logs` reads the access log from: the SSH connection of a
// stack (its config, or its outputs for EC2), or one given by flags, and the
// remote command that prints the window asked for. Pure: the caller runs
// `pulumi` and `ssh` (scripts/logs.ts); every value that reaches the ssh
// command line or the remote shell is validated here first.
import { parseConfig, PROJECT, RawConfig } from "./config";
import { HOST_PATHS } from "./hostpaths";
import { shq } from "./shell";

/** The access log the rendered config writes on a host. */
export const HOST_ACCESS_LOG = `${HOST_PATHS.nginxLogDir}/fastapi-edge.access.log`;

export interface SshTarget {
  host: string;
  port: number;
  user: string;
  /** The private key's text (a stack secret), when the stack holds one. */
  privateKey?: string;
  /** The host's public key line: pinned in a temporary known_hosts. Unset: not checked (as the stack's own steps). */
  hostKey?: string;
}

const HOST_RE = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/;
const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;
const HOST_KEY_RE = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( [A-Za-z0-9@._+-]{0,100})?$/;
const LOG_PATH_RE = /^\/[A-Za-z0-9._/-]+$/;
const PRIVATE_KEY_RE = /^-----BEGIN [A-Z ]*PRIVATE KEY-----/;

/** Checks a target's fields; `what` names where they came from (flags or the stack). */
export function validateTarget(t: SshTarget, what: { host: string; port: string; user: string; hostKey: string; key: string }): SshTarget {
  const problems: string[] = [];
  if (!HOST_RE.test(t.host)) problems.push(`${what.host} must be an IPv4 address or DNS name (got ${JSON.stringify(t.host)})`);
  if (!Number.isInteger(t.port) || t.port < 1 || t.port > 65535)
    problems.push(`${what.port} must be a whole number from 1 to 65535 (got ${t.port})`);
  if (!USER_RE.test(t.user)) problems.push(`${what.user} must be a Unix user name such as root or admin (got ${JSON.stringify(t.user)})`);
  if (t.hostKey !== undefined && !HOST_KEY_RE.test(t.hostKey.trim()))
    problems.push(`${what.hostKey} must be the host's public key line (ssh-ed25519 AAAA...)`);
  if (t.privateKey !== undefined && !PRIVATE_KEY_RE.test(t.privateKey.trim()))
    problems.push(`${what.key} must be a PEM or OpenSSH private key (-----BEGIN ... PRIVATE KEY-----)`);
  if (problems.length) throw new Error(problems.join("\n"));
  return t.hostKey !== undefined ? { ...t, hostKey: t.hostKey.trim() } : t;
}

/** `--log`: an absolute path of plain characters. */
export function validateLogPath(p: string): string {
  if (!LOG_PATH_RE.test(p) || p.split("/").includes(".."))
    throw new Error(`--log must be an absolute path of letters, digits and . _ - / (got ${JSON.stringify(p)})`);
  return p;
}

/** `pulumi config --json --show-secrets`: key -> {value, secret}. */
export type PulumiConfigJson = Record<string, { value?: unknown; secret?: boolean }>;
/** `pulumi stack output --json --show-secrets`. */
export type PulumiOutputsJson = Record<string, unknown>;

const STACK_KEYS = {
  host: `${PROJECT}:hostAddress`,
  port: `${PROJECT}:hostPort`,
  user: `${PROJECT}:hostUser`,
  hostKey: `${PROJECT}:hostKey`,
  key: `${PROJECT}:hostPrivateKey`,
};

/** Does this stack's host run nginx over SSH (and so have our access log)? Throws with the reason when not. */
export function stackConfig(cfg: PulumiConfigJson): { raw: RawConfig; privateKey: string | undefined } {
  const raw: RawConfig = {};
  let privateKey: string | undefined;
  for (const [k, v] of Object.entries(cfg)) {
    if (!k.startsWith(`${PROJECT}:`)) continue;
    if (k === STACK_KEYS.key) {
      if (typeof v.value === "string") privateKey = v.value;
      continue;
    }
    if (v.value !== undefined) raw[k.slice(PROJECT.length + 1)] = typeof v.value === "string" ? v.value : JSON.stringify(v.value);
  }
  return { raw, privateKey };
}

/**
 * The SSH target of a stack, the way the program connects: an existing host
 * from hostAddress/hostPort/hostUser (root by default), the secret
 * hostPrivateKey and the pinned hostKey; an EC2 host from the stack's
 * outputs (sshCommand `ssh USER@IP`, the secret sshPrivateKey when the stack
 * generated the key) and hostKey from config. `outputs` is only read for EC2.
 */
export function stackSshTarget(cfg: PulumiConfigJson, outputs: PulumiOutputsJson | null): SshTarget {
  const { raw, privateKey } = stackConfig(cfg);
  if (raw.frontend === "alb") throw new Error(`${PROJECT}:frontend is alb: the ALB writes no nginx access log (see the README)`);
  const c = parseConfig(raw);
  const hostKey = c.hostKey ? { hostKey: c.hostKey } : {};
  const names = { host: STACK_KEYS.host, port: STACK_KEYS.port, user: STACK_KEYS.user, hostKey: STACK_KEYS.hostKey, key: STACK_KEYS.key };
  if (c.hostMode === "existing") {
    if (!c.hostAddress) throw new Error(`${STACK_KEYS.host} is not set: this stack has no host to read from`);
    return validateTarget(
      { host: c.hostAddress, port: c.hostPort, user: c.hostUser ?? "root", ...(privateKey ? { privateKey } : {}), ...hostKey },
      names,
    );
  }
  if (!outputs) throw new Error("hostMode ec2: the stack's outputs are needed (pulumi stack output --json --show-secrets)");
  const cmd = outputs.sshCommand;
  const m = typeof cmd === "string" ? /^ssh (?:-p ([0-9]{1,5}) )?([a-z_][a-z0-9_-]{0,31})@([A-Za-z0-9.-]+)$/.exec(cmd) : null;
  if (!m)
    throw new Error(
      `the stack's output sshCommand must read "ssh USER@ADDRESS" (got ${JSON.stringify(cmd)}); has the stack been deployed?`,
    );
  const key = typeof outputs.sshPrivateKey === "string" ? { privateKey: outputs.sshPrivateKey } : {};
  return validateTarget(
    { host: m[3]!, port: m[1] ? Number(m[1]) : 22, user: m[2]!, ...key, ...hostKey },
    { ...names, host: "output sshCommand", port: "output sshCommand", user: "output sshCommand", key: "output sshPrivateKey" },
  );
}

/** The known_hosts line that pins a target's host key (ssh writes non-22 ports as [host]:port). */
export function knownHostsLine(t: SshTarget): string {
  if (!t.hostKey) throw new Error("no host key to pin");
  const [type, key] = t.hostKey.split(" ");
  const name = t.port === 22 ? t.host : `[${t.host}]:${t.port}`;
  return `${name} ${type} ${key}\n`;
}

/**
 * ssh's arguments up to and including the remote command. `files` are the
 * temporary key and known_hosts the caller wrote (keyFile only when the
 * target has a key; otherwise ssh uses the agent and ~/.ssh as usual).
 */
export function sshArgs(t: SshTarget, files: { keyFile?: string; knownHosts?: string }, remoteCommand: string): string[] {
  const args = ["-p", String(t.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR"];
  if (files.keyFile) args.push("-i", files.keyFile, "-o", "IdentitiesOnly=yes");
  if (t.hostKey) {
    if (!files.knownHosts) throw new Error("a pinned host key needs its known_hosts file");
    args.push("-o", `UserKnownHostsFile=${files.knownHosts}`, "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null");
  } else {
    args.push("-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no");
  }
  args.push("--", `${t.user}@${t.host}`, remoteCommand);
  return args;
}

/**
 * The remote command that runs files/scripts/log-window.sh (sent as stdin)
 * as root, as the stack's steps run theirs (`sudo -n` unless the user is
 * root): the log is 0640 www-data:adm.
 */
export function remoteWindowCommand(user: string, logPath: string, sinceSeconds: number | null): string {
  if (sinceSeconds !== null && (!Number.isInteger(sinceSeconds) || sinceSeconds < 1))
    throw new Error("since must be a whole number of seconds");
  const shell = user === "root" ? "bash -s --" : "sudo -n bash -s --";
  return [shell, shq(validateLogPath(logPath), "--log"), ...(sinceSeconds !== null ? [shq(String(sinceSeconds), "--since")] : [])].join(
    " ",
  );
}
