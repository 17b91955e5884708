// Reads the stack's config through pulumi.Config and validates it once, before
// any resource is created. Pulumi stays out of lib/config.ts so the same
// validation runs in `npm run render` and the tests.
import * as pulumi from "@pulumi/pulumi";
import { readdirSync, readFileSync, statSync } from "node:fs";
import * as path from "node:path";
import { PythonDeps, pythonDeps, runtimeErrors } from "../lib/pyapp";
import { CONFIG_KEYS, ConfigError, EdgeConfig, parseConfig, PROJECT, RawConfig } from "../lib/config";

export function readConfig(): EdgeConfig {
  const cfg = new pulumi.Config();
  const raw: RawConfig = {};
  for (const key of CONFIG_KEYS) {
    const v = cfg.get(key);
    if (v !== undefined) raw[key] = v;
  }
  return parseConfig(raw);
}

const PRIVATE_KEY_RE = /^-----BEGIN (OPENSSH|RSA|EC) PRIVATE KEY-----\n[A-Za-z0-9+\/=\n]+-----END (OPENSSH|RSA|EC) PRIVATE KEY-----\n?$/;

/**
 * The existing host's SSH private key, checked for shape before any resource
 * is created (read from the runtime directly, so the check is synchronous),
 * and handed on only as a secret.
 */
export function readHostPrivateKey(): pulumi.Output<string> {
  const raw = pulumi.runtime.getConfig(`${PROJECT}:hostPrivateKey`);
  const key = (raw ?? "").replace(/\r\n/g, "\n").trim() + "\n";
  if (!PRIVATE_KEY_RE.test(key)) {
    throw new ConfigError([
      `${PROJECT}:hostPrivateKey ${raw ? "must be a PEM or OpenSSH private key (-----BEGIN ... PRIVATE KEY-----)" : "is required when hostMode is existing"}; set it with: pulumi config set --secret hostPrivateKey < KEYFILE`,
    ]);
  }
  // isConfigSecret is exported by the SDK's runtime but missing from its typings.
  const runtime = pulumi.runtime as typeof pulumi.runtime & { isConfigSecret?: (k: string) => boolean };
  if (runtime.isConfigSecret && !runtime.isConfigSecret(`${PROJECT}:hostPrivateKey`)) {
    throw new ConfigError([`${PROJECT}:hostPrivateKey must be stored as a secret: pulumi config set --secret hostPrivateKey < KEYFILE`]);
  }
  return pulumi.secret(key);
}

/**
 * The app's Python runtime, decided from its files before any resource is created:
 * the dependencies file that gives each release a virtualenv (lib/pyapp.ts), or null
 * for the distribution's packages. Refuses settings that need files the app lacks.
 */
export function readAppRuntime(c: EdgeConfig, projectDir: string): PythonDeps | null {
  const source = path.resolve(projectDir, c.appSource);
  if (!statSync(source, { throwIfNoEntry: false })?.isDirectory()) {
    throw new ConfigError([`${PROJECT}:appSource must be a directory (got ${JSON.stringify(c.appSource)}, resolved to ${source})`]);
  }
  const read = (name: string): string | undefined => {
    const p = path.join(source, name);
    return statSync(p, { throwIfNoEntry: false })?.isFile() ? readFileSync(p, "utf8") : undefined;
  };
  const problems: string[] = [];
  let deps: PythonDeps | null = null;
  try {
    deps = pythonDeps({ requirementsTxt: read("requirements.txt"), pyprojectToml: read("pyproject.toml") });
  } catch (e) {
    problems.push(`${PROJECT}:appSource ${c.appSource}: ${(e as Error).message}`);
  }
  if (c.appWheelhouse) {
    const wh = path.resolve(projectDir, c.appWheelhouse);
    const st = statSync(wh, { throwIfNoEntry: false });
    if (!st?.isDirectory())
      problems.push(`${PROJECT}:appWheelhouse must be a directory (got ${JSON.stringify(c.appWheelhouse)}, resolved to ${wh})`);
    else if (!readdirSync(wh).some((f) => f.endsWith(".whl") || f.endsWith(".tar.gz"))) {
      problems.push(`${PROJECT}:appWheelhouse ${c.appWheelhouse} holds no wheels (*.whl) or source archives (*.tar.gz)`);
    }
  }
  problems.push(...runtimeErrors(c, deps));
  if (problems.length) throw new ConfigError(problems);
  return deps;
}

/**
 * appRegistryPassword: the registry password or token for appImage, only as a secret,
 * and required exactly when appRegistryUsername is set.
 */
export function readRegistryPassword(c: EdgeConfig): pulumi.Output<string> | undefined {
  const key = `${PROJECT}:appRegistryPassword`;
  const raw = pulumi.runtime.getConfig(key);
  if (!c.appRegistryUsername) {
    if (raw !== undefined) throw new ConfigError([`${key} is only used with appRegistryUsername (and appImage)`]);
    return undefined;
  }
  if (!raw) {
    throw new ConfigError([
      `${key} is required when appRegistryUsername is set; set it with: pulumi config set --secret appRegistryPassword`,
    ]);
  }
  if (/[\r\n]/.test(raw)) throw new ConfigError([`${key} must be one line`]);
  const runtime = pulumi.runtime as typeof pulumi.runtime & { isConfigSecret?: (k: string) => boolean };
  if (runtime.isConfigSecret && !runtime.isConfigSecret(key)) {
    throw new ConfigError([`${key} must be stored as a secret: pulumi config set --secret appRegistryPassword`]);
  }
  return pulumi.secret(raw);
}
