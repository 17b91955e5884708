// Regenerates the `config:` section of Pulumi.yaml and the README's config
// table from the schema (lib/config.ts) and its docs (lib/configdocs.ts).
//   npm run gen-config          rewrite both
//   npm run gen-config -- --check   exit 1 when either is stale (used by tests)
import { readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { CONFIG_KEYS, EdgeConfig, parseConfig } from "../lib/config";
import { CONFIG_DOCS } from "../lib/configdocs";

const ROOT = path.resolve(__dirname, "..");

type Decl = { type: "string" | "integer" | "boolean" | "array"; description: string; default?: unknown; secret?: boolean };

export function configDeclarations(): Record<string, Decl> {
  // Parse a minimal config: what comes back for keys not given is the default.
  const given = { domain: "example.com", email: "ops@example.com" };
  const parsed: EdgeConfig = parseConfig(given);
  const out: Record<string, Decl> = {};
  for (const key of CONFIG_KEYS) {
    let value: unknown = key in given ? undefined : parsed[key];
    if (key === "rateLimits") value = parsed.rateLimits.map((r) => `${r.path}:${r.rate}:${r.burst}`);
    const type = Array.isArray(value) ? "array" : typeof value === "number" ? "integer" : typeof value === "boolean" ? "boolean" : "string";
    // The engine treats a declared key without a default as required, so
    // optional keys default to "" (parseConfig reads "" as unset). `domain`
    // stays required.
    if (value === undefined && key !== "domain") value = "";
    out[key] = { type, description: CONFIG_DOCS[key], ...(value !== undefined ? { default: value } : {}) };
  }
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

function main(): number {
  const check = process.argv.includes("--check");
  const pulumiPath = path.join(ROOT, "Pulumi.yaml");
  const readmePath = path.join(ROOT, "README.md");
  const pulumiYaml = readFileSync(pulumiPath, "utf8");
  const cut = pulumiYaml.indexOf("\nconfig:\n");
  const head = cut < 0 ? pulumiYaml.trimEnd() + "\n" : pulumiYaml.slice(0, cut + 1);
  const newPulumi = head + renderConfigYaml();
  const readme = readFileSync(readmePath, "utf8");
  const newReadme = replaceBetween(readme, BEGIN, END, renderConfigTable());
  if (check) {
    const stale = [newPulumi !== pulumiYaml && "Pulumi.yaml", newReadme !== readme && "README.md"].filter(Boolean);
    if (stale.length) {
      console.error(`stale: ${stale.join(", ")} (run npm run gen-config)`);
      return 1;
    }
    return 0;
  }
  writeFileSync(pulumiPath, newPulumi);
  writeFileSync(readmePath, newReadme);
  return 0;
}

if (require.main === module) process.exit(main());
