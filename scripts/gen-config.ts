// Regenerates the `config:` section of Pulumi.yaml and the README's config
// table from the schema in lib/config.ts alone: each key's type, default and
// description (`.describe()`) are read off its zod schema.
//   npm run gen-config          rewrite both
//   npm run gen-config -- --check   exit 1 when either is stale
// test/unit/config.test.ts fails when either file drifts from the schema.
import { readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import { CONFIG_KEYS, configSchema } from "../lib/config";

const ROOT = path.resolve(__dirname, "..");

type DeclType = "string" | "integer" | "boolean" | "array";
type Decl = { type: DeclType; description: string; default?: unknown; secret?: boolean };

/**
 * What Pulumi.yaml declares for one key, read off its schema: the wrappers
 * (.optional(), .default(), .prefault(), z.preprocess, .transform()) are
 * peeled to the schema of the value itself.
 */
function declaration(key: string, schema: z.ZodType): Decl {
  const description = schema.description;
  if (!description) throw new Error(`config key ${key} has no .describe() in lib/config.ts`);
  let optional = false;
  let defaultValue: unknown;
  let s: z.core.$ZodType = schema;
  for (;;) {
    if (s instanceof z.ZodOptional) {
      optional = true;
      s = s.def.innerType;
    } else if (s instanceof z.ZodDefault || s instanceof z.ZodPrefault) {
      // A prefault's default is in input form, which is what Pulumi.yaml needs.
      defaultValue ??= s.def.defaultValue;
      s = s.def.innerType;
    } else if (s instanceof z.ZodPipe) {
      // z.preprocess(f, T) is pipe(transform, T); T.transform(f) is pipe(T, transform).
      s = s.def.out instanceof z.ZodTransform ? s.def.in : s.def.out;
    } else {
      break;
    }
  }
  // The engine treats a declared key without a default as required, so
  // optional keys default to "" (parseConfig reads "" as unset). Keys with
  // neither (domain) stay required.
  if (defaultValue === undefined && optional) defaultValue = "";
  return { type: valueType(key, s), description, ...(defaultValue !== undefined ? { default: defaultValue } : {}) };
}

function valueType(key: string, s: z.core.$ZodType): DeclType {
  if (s instanceof z.core.$ZodString || s instanceof z.ZodEnum) return "string"; // z.ipv4() etc. are string formats
  if (s instanceof z.ZodNumber && s.isInt) return "integer";
  if (s instanceof z.ZodBoolean) return "boolean";
  if (s instanceof z.ZodArray) return "array";
  if (s instanceof z.ZodUnion && s.def.options.every((o) => valueType(key, o) === "string")) return "string";
  if (s instanceof z.ZodLiteral && s.def.values.every((v) => typeof v === "string")) return "string";
  throw new Error(`config key ${key}: no Pulumi.yaml type for a ${s._zod.def.type} schema`);
}

export function configDeclarations(): Record<string, Decl> {
  const out: Record<string, Decl> = {};
  for (const key of CONFIG_KEYS) out[key] = declaration(key, configSchema.shape[key]);
  return out;
}

function yamlScalar(v: unknown): string {
  return JSON.stringify(v);
}

export function renderConfigYaml(): string {
  const lines = ["config:"];
  for (const [key, d] of Object.entries(configDeclarations())) {
    lines.push(`  ${key}:`, `    type: ${d.type}`);
    if (d.type === "array") lines.push("    items:", "      type: string");
    if (d.secret) lines.push("    secret: true");
    lines.push(`    description: ${yamlScalar(d.description)}`);
    if (d.default !== undefined) lines.push(`    default: ${yamlScalar(d.default)}`);
  }
  return lines.join("\n") + "\n";
}

export function renderConfigTable(): string {
  const rows = ["| key | type | default | what it does |", "| --- | --- | --- | --- |"];
  for (const [key, d] of Object.entries(configDeclarations())) {
    const def = d.default === undefined ? "" : `\`${JSON.stringify(d.default)}\``;
    rows.push(`| \`${key}\` | ${d.type}${d.secret ? " (secret)" : ""} | ${def} | ${d.description.replace(/\|/g, "\\|")} |`);
  }
  return rows.join("\n") + "\n";
}

const BEGIN = "<!-- config-table:begin -->";
const END = "<!-- config-table:end -->";

function replaceBetween(text: string, begin: string, end: string, body: string): string {
  const a = text.indexOf(begin);
  const b = text.indexOf(end);
  if (a < 0 || b < a) throw new Error(`markers ${begin} / ${end} not found`);
  return text.slice(0, a + begin.length) + "\n" + body + text.slice(b);
}

/** Pulumi.yaml and README.md as they are and as the schema says they should be. */
export function generatedFiles(root: string = ROOT): { file: string; current: string; generated: string }[] {
  const pulumiYaml = readFileSync(path.join(root, "Pulumi.yaml"), "utf8");
  const cut = pulumiYaml.indexOf("\nconfig:\n");
  const head = cut < 0 ? pulumiYaml.trimEnd() + "\n" : pulumiYaml.slice(0, cut + 1);
  const readme = readFileSync(path.join(root, "README.md"), "utf8");
  return [
    { file: "Pulumi.yaml", current: pulumiYaml, generated: head + renderConfigYaml() },
    { file: "README.md", current: readme, generated: replaceBetween(readme, BEGIN, END, renderConfigTable()) },
  ];
}

function main(): number {
  const check = process.argv.includes("--check");
  const files = generatedFiles();
  if (check) {
    const stale = files.filter((f) => f.generated !== f.current).map((f) => f.file);
    if (stale.length) {
      console.error(`stale: ${stale.join(", ")} (run npm run gen-config)`);
      return 1;
    }
    return 0;
  }
  for (const f of files) writeFileSync(path.join(ROOT, f.file), f.generated);
  return 0;
}

if (require.main === module) process.exit(main());
