// `npm run render` output for the committed stacks, against the copies in
// test/unit/fixtures/render-before/CASE, written before the renderer and
// host-file refactor by
//   npm run render -- --stack STACK --out test/unit/fixtures/render-before/STACK
// for dev, staging and prod, and with `--phase acme-bootstrap` for staging
// (the stack whose settings are the defaults, so that copy is also what the
// nginx-acme-bootstrap step has always pushed).
//
// Every file the renderer writes must match its copy byte for byte, with the
// same mode, and no file may appear or go missing. Files npm run render
// copies as they are from files/ (host scripts, the unit, snippets, the
// maintenance page) are listed in CASE/shipped.txt (`PATH MODE FILES-PATH`)
// and must equal their source: keeping copies of them would only repeat
// files/ and change with every script edit. A deliberate change to the
// rendered output regenerates the copies with the command above (then drops
// the files shipped.txt lists) and shows up in the diff of its commit.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";

const REPO = path.resolve(__dirname, "../..");
const FIXTURES = path.join(__dirname, "fixtures", "render-before");
const SHIPPED = "shipped.txt";

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

const mode = (file: string): string => ((statSync(file).mode & 0o111) !== 0 ? "755" : "644");

/** shipped.txt: output path -> [mode, path under files/]. */
function shipped(dir: string): Map<string, [string, string]> {
  const lines = readFileSync(path.join(dir, SHIPPED), "utf8")
    .split("\n")
    .filter((l) => l !== "");
  return new Map(
    lines.map((l) => {
      const [out, m, src] = l.split(" ");
      return [out!, [m!, src!]];
    }),
  );
}

const CASES: [name: string, args: string[]][] = [
  ["dev", ["--stack", "dev"]],
  ["staging", ["--stack", "staging"]],
  ["prod", ["--stack", "prod"]],
  ["staging-acme-bootstrap", ["--stack", "staging", "--phase", "acme-bootstrap"]],
];

describe("npm run render matches the committed copies", () => {
  for (const [name, args] of CASES) {
    it(`${name}: the same files, bytes and modes`, () => {
      const out = mkdtempSync(path.join(tmpdir(), "fe-render-fixture-"));
      try {
        const r = spawnSync("npx", ["tsx", "scripts/render.ts", ...args, "--out", out], { cwd: REPO, encoding: "utf8" });
        expect(r.status, r.stderr).toBe(0);
        const want = path.join(FIXTURES, name);
        const copies = tree(want).filter((f) => f !== SHIPPED);
        const asShipped = shipped(want);
        expect(tree(out)).toEqual([...copies, ...asShipped.keys()].sort());
        for (const rel of copies) {
          expect(
            readFileSync(path.join(out, rel)).equals(readFileSync(path.join(want, rel))),
            `${name}: ${rel} differs from its committed copy`,
          ).toBe(true);
          expect(mode(path.join(out, rel)), `${name}: ${rel} mode`).toBe(mode(path.join(want, rel)));
        }
        for (const [rel, [m, src]] of asShipped) {
          expect(
            readFileSync(path.join(out, rel)).equals(readFileSync(path.join(REPO, "files", src))),
            `${name}: ${rel} is not files/${src} as it is`,
          ).toBe(true);
          expect(mode(path.join(out, rel)), `${name}: ${rel} mode`).toBe(m);
        }
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    });
  }
});
