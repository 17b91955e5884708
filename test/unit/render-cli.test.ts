// `npm run render` writes exactly what `pulumi up` pushes, for every committed
// stack, and exits non-zero with the validation message on bad config.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { loadStackConfig } from "../../lib/stackfile";
import { renderHostFiles } from "../../lib/hostfiles";
import { runProgram } from "../helpers/mocks";

const REPO = path.resolve(__dirname, "../..");
const stacks = readdirSync(REPO)
  .filter((f) => /^Pulumi\.[a-z0-9-]+\.yaml$/.test(f))
  .map((f) => f.split(".")[1]!);

function render(stack: string, out: string) {
  return spawnSync("npx", ["tsx", "scripts/render.ts", "--stack", stack, "--out", out], { cwd: REPO, encoding: "utf8" });
}

describe("npm run render", () => {
  it("finds the committed stacks", () => {
    expect(stacks).toEqual(expect.arrayContaining(["dev", "staging", "prod"]));
  });

  for (const stack of ["dev", "staging", "prod"]) {
    it(`renders the ${stack} stack, byte for byte what the program pushes`, async () => {
      const out = mkdtempSync(path.join(tmpdir(), "fe-render-"));
      const r = render(stack, out);
      expect(r.status, r.stderr).toBe(0);
      const cfg = loadStackConfig(REPO, stack);
      const set = renderHostFiles(cfg, { phase: "full", region: "eu-west-1" });
      for (const f of set.nginx) expect(readFileSync(path.join(out, "nginx-stage", f.path), "utf8")).toBe(f.content);
      for (const f of set.system) expect(readFileSync(path.join(out, "root", f.path), "utf8")).toBe(f.content);

      // The program, run under mocks with the same stack config, pushes the same text.
      const raw = Object.fromEntries(
        Object.entries(cfg)
          .filter(([k]) => k !== "rateLimits")
          .map(([k, v]) => [k, Array.isArray(v) ? JSON.stringify(v) : String(v)]),
      );
      raw["rateLimits"] = JSON.stringify(cfg.rateLimits.map((x) => `${x.path}:${x.rate}:${x.burst}`));
      const run = await runProgram(raw);
      const pushed = run
        .ofType("command:remote:Command")
        .map((c) => String((c.inputs as { stdin?: string }).stdin ?? ""))
        .join("\n");
      for (const f of [...set.nginx, ...set.system]) {
        if (f.path === "/etc/fastapi-edge/app.env") continue; // ALB/VPC values differ only in ALB mode; checked in program tests
        expect(pushed, `${stack}: ${f.path} is pushed as rendered`).toContain(f.content.trimEnd());
      }
      // The ACME bootstrap phase is what the nginx-acme-bootstrap step stages.
      const bootstrap = String((run.one("command:remote:Command", "nginx-acme-bootstrap").inputs as { stdin: string }).stdin);
      for (const f of renderHostFiles(cfg, { phase: "acme-bootstrap" }).nginx) {
        expect(bootstrap, `${stack}: ${f.path} is staged by the ACME bootstrap step`).toContain(
          `"$stage/${f.path}.tmp" <<'FASTAPI_EDGE_EOF'\n${f.content.trimEnd()}\nFASTAPI_EDGE_EOF`,
        );
      }
      rmSync(out, { recursive: true, force: true });
    });
  }

  it("exits non-zero with the validation message on bad config", () => {
    const name = `badtest${process.pid}`;
    const file = path.join(REPO, `Pulumi.${name}.yaml`);
    writeFileSync(file, 'config:\n  fastapi-edge:domain: "api.example.com; return 200"\n  fastapi-edge:email: ops@example.com\n');
    try {
      const r = render(name, mkdtempSync(path.join(tmpdir(), "fe-render-")));
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/fastapi-edge:domain must be a DNS name/);
    } finally {
      rmSync(file);
    }
  });
});
