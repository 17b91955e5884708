// Read a stack's config the way the Pulumi engine would, without the engine:
// defaults declared in Pulumi.yaml, overridden by Pulumi.<stack>.yaml. Used by
// `npm run render` and the tests; the program itself reads pulumi.Config.
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { parse } from "yaml";
import { EdgeConfig, parseConfig, PROJECT, RawConfig } from "./config";

interface ProjectFile {
  name: string;
  config?: Record<string, { default?: unknown } | undefined>;
}

interface StackFile {
  config?: Record<string, unknown>;
}

/** A secure (encrypted) value cannot be read here; it never reaches rendered files. */
function isSecure(v: unknown): boolean {
  return typeof v === "object" && v !== null && "secure" in v;
}

export function readStackRaw(projectDir: string, stack: string): RawConfig {
  if (!/^[A-Za-z0-9_.-]+$/.test(stack)) throw new Error(`stack name must be letters, digits, _ . - (got ${JSON.stringify(stack)})`);
  const project = parse(readFileSync(path.join(projectDir, "Pulumi.yaml"), "utf8")) as ProjectFile;
  const raw: RawConfig = {};
  for (const [key, decl] of Object.entries(project.config ?? {})) {
    if (decl && decl.default !== undefined) raw[key] = decl.default;
  }
  const stackPath = path.join(projectDir, `Pulumi.${stack}.yaml`);
  if (!existsSync(stackPath)) throw new Error(`no stack file ${stackPath}`);
  const stackFile = (parse(readFileSync(stackPath, "utf8")) ?? {}) as StackFile;
  for (const [key, value] of Object.entries(stackFile.config ?? {})) {
    if (!key.startsWith(`${PROJECT}:`)) continue; // provider config such as aws:region
    if (isSecure(value)) continue;
    raw[key.slice(PROJECT.length + 1)] = value;
  }
  return raw;
}

export function loadStackConfig(projectDir: string, stack: string): EdgeConfig {
  return parseConfig(readStackRaw(projectDir, stack));
}
