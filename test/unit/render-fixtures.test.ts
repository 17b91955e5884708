// `npm run render` output for the committed stacks, byte for byte against the
// copies in test/unit/fixtures/render-before/STACK (written by
// `npm run render -- --stack STACK --out test/unit/fixtures/render-before/STACK`),
// and of the ACME bootstrap for staging (`--phase acme-bootstrap`, into
// staging-acme-bootstrap; the stack whose settings are the defaults, so the
// copy is also what the nginx-acme-bootstrap step has always pushed).
// A refactor of the renderer or the host-file manifest must leave every file,
// its path and its mode as it was. A deliberate change regenerates the copies
// with that command and shows up in the diff of the commit that makes it.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";

const REPO = path.resolve(__dirname, "../..");
const FIXTURES = path.join(__dirname, "fixtures", "render-before");

/** Every file below dir, as sorted paths relative to it. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

const executable = (file: string): boolean => (statSync(file).mode & 0o111) !== 0;

const CASES: [name: string, args: string[]][] = [
  ["dev", ["--stack", "dev"]],
  ["staging", ["--stack", "staging"]],
  ["prod", ["--stack", "prod"]],
  ["staging-acme-bootstrap", ["--stack", "staging", "--phase", "acme-bootstrap"]],
];

describe("npm run render matches the committed copies", () => {
  for (const [stack, args] of CASES) {
    it(`${stack}: the same files, bytes and modes`, () => {
      const out = mkdtempSync(path.join(tmpdir(), "fe-render-fixture-"));
      try {
        const r = spawnSync("npx", ["tsx", "scripts/render.ts", ...args, "--out", out], { cwd: REPO, encoding: "utf8" });
        expect(r.status, r.stderr).toBe(0);
        const want = path.join(FIXTURES, stack);
        expect(tree(out)).toEqual(tree(want));
        for (const rel of tree(want)) {
          expect(readFileSync(path.join(out, rel)).equals(readFileSync(path.join(want, rel))), `${stack}: ${rel} differs from its committed copy`).toBe(true);
          expect(executable(path.join(out, rel)), `${stack}: ${rel} mode`).toBe(executable(path.join(want, rel)));
        }
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    });
  }
});
