// Reads the stack's config through pulumi.Config and validates it once, before
// any resource is created. Pulumi stays out of lib/config.ts so the same
// validation runs in `npm run render` and the tests.
import * as pulumi from "@pulumi/pulumi";
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
