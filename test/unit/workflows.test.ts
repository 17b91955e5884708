// Tests for the GitHub Actions delivery workflows (.github/workflows).
//
// 1. actionlint (built from the Go module proxy by scripts/get-actionlint.sh,
//    run by scripts/lint-workflows.sh; it shell-checks `run:` blocks when
//    shellcheck is installed) must report nothing.
// 2. The YAML is parsed and the delivery contract asserted: preview comments
//    on the PR and edits its comment in place, prod needs staging and runs in
//    the `production` environment, OIDC everywhere, no long-lived AWS keys,
//    pinned action versions, documented secrets/variables.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";

const ROOT = path.resolve(__dirname, "../..");
const WORKFLOWS = path.join(ROOT, ".github/workflows");
const FILES = ["preview.yml", "deploy.yml", "staging-recreate.yml"] as const;
type WorkflowFile = (typeof FILES)[number];

// ---------------------------------------------------------------------------
// typed access to parsed YAML (no `any`)
// ---------------------------------------------------------------------------

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function obj(v: unknown, what: string): Obj {
  if (!isObj(v)) throw new Error(`${what} is not a mapping: ${JSON.stringify(v)}`);
  return v;
}

function arr(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`${what} is not a sequence: ${JSON.stringify(v)}`);
  return v;
}

function str(v: unknown): string {
  return typeof v === "string" ? v : v === undefined || v === null ? "" : String(v);
}

interface Step {
  name: string;
  id: string;
  uses: string;
  run: string;
  with: Obj;
  env: Obj;
}

interface Job {
  id: string;
  raw: Obj;
  steps: Step[];
  permissions: Obj;
  needs: string[];
  environment: string;
}

interface Workflow {
  file: WorkflowFile;
  text: string;
  raw: Obj;
  on: Obj;
  jobs: Job[];
}

function loadWorkflow(file: WorkflowFile): Workflow {
  const text = fs.readFileSync(path.join(WORKFLOWS, file), "utf8");
  const raw = obj(parse(text), file);
  const jobsRaw = obj(raw["jobs"], `${file}: jobs`);
  const jobs = Object.entries(jobsRaw).map(([id, j]): Job => {
    const job = obj(j, `${file}: jobs.${id}`);
    const steps = arr(job["steps"], `${file}: jobs.${id}.steps`).map((s, i): Step => {
      const step = obj(s, `${file}: jobs.${id}.steps[${i}]`);
      return {
        name: str(step["name"]),
        id: str(step["id"]),
        uses: str(step["uses"]),
        run: str(step["run"]),
        with: isObj(step["with"]) ? step["with"] : {},
        env: isObj(step["env"]) ? step["env"] : {},
      };
    });
    const needs = job["needs"];
    const env = job["environment"];
    return {
      id,
      raw: job,
      steps,
      permissions: isObj(job["permissions"]) ? job["permissions"] : {},
      needs: typeof needs === "string" ? [needs] : Array.isArray(needs) ? needs.map(str) : [],
      environment: typeof env === "string" ? env : isObj(env) ? str(env["name"]) : "",
    };
  });
  return { file, text, raw, on: isObj(raw["on"]) ? raw["on"] : {}, jobs };
}

const wf: Record<WorkflowFile, Workflow> = {
  "preview.yml": loadWorkflow("preview.yml"),
  "deploy.yml": loadWorkflow("deploy.yml"),
  "staging-recreate.yml": loadWorkflow("staging-recreate.yml"),
};

function job(file: WorkflowFile, id: string): Job {
  const j = wf[file].jobs.find((x) => x.id === id);
  if (!j) throw new Error(`${file} has no job ${id}`);
  return j;
}

const isPulumi = (s: Step): boolean => s.uses.startsWith("pulumi/actions@");
const isAwsCreds = (s: Step): boolean => s.uses.startsWith("aws-actions/configure-aws-credentials@");
const pulumiSteps = (j: Job): Step[] => j.steps.filter(isPulumi);
const indexOf = (j: Job, pred: (s: Step) => boolean): number => j.steps.findIndex(pred);

/** Inputs of pulumi/actions (action.yml of v6/v7; v7 changed only the runtime to node24). */
const PULUMI_ACTION_INPUTS = new Set([
  "command",
  "stack-name",
  "work-dir",
  "cloud-url",
  "comment-on-pr",
  "comment-on-pr-number",
  "comment-on-summary",
  "github-token",
  "refresh",
  "secrets-provider",
  "color",
  "log-verbosity",
  "log-flow",
  "debug",
  "config-map",
  "diff",
  "edit-pr-comment",
  "expect-no-changes",
  "message",
  "parallel",
  "policyPacks",
  "policyPackConfigs",
  "pulumi-version",
  "pulumi-version-file",
  "remove",
  "replace",
  "target",
  "target-dependents",
  "upsert",
  "exclude-protected",
  "suppress-outputs",
  "suppress-progress",
  "omit-stdout",
  "plan",
  "always-include-summary",
  "continue-on-error",
]);

const truthy = (v: unknown): boolean => v === true || v === "true";

// ---------------------------------------------------------------------------
// actionlint
// ---------------------------------------------------------------------------

describe("actionlint", () => {
  it("get-actionlint.sh builds into FASTAPI_EDGE_CACHE, prints the path last, and reuses the cached binary", () => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-cache-"));
    try {
      const env = { ...process.env, FASTAPI_EDGE_CACHE: cache };
      const first = spawnSync("bash", [path.join(ROOT, "scripts/get-actionlint.sh")], { cwd: ROOT, env, encoding: "utf8" });
      expect(first.status, first.stderr).toBe(0);
      const bin = first.stdout.trim().split("\n").at(-1) ?? "";
      expect(bin).toBe(path.join(cache, "tools/bin/actionlint-v1.7.12"));
      expect(fs.statSync(bin).mode & 0o111).not.toBe(0);
      expect(first.stderr).toMatch(/building github\.com\/rhysd\/actionlint\/cmd\/actionlint@v1\.7\.12/);

      const second = spawnSync("bash", [path.join(ROOT, "scripts/get-actionlint.sh")], { cwd: ROOT, env, encoding: "utf8" });
      expect(second.status, second.stderr).toBe(0);
      expect(second.stdout.trim().split("\n").at(-1)).toBe(bin);
      expect(second.stderr).not.toMatch(/building/);

      const version = spawnSync(bin, ["-version"], { encoding: "utf8" });
      expect(version.stdout.split("\n")[0]).toBe("v1.7.12");
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
    }
  }, 600_000);

  it("reports no problems in .github/workflows (shellcheck included when installed)", () => {
    const shellcheck = spawnSync("shellcheck", ["--version"], { encoding: "utf8" });
    if (shellcheck.status !== 0) {
      console.warn("shellcheck is not installed: actionlint ran without checking run: blocks");
    }
    const r = spawnSync("bash", [path.join(ROOT, "scripts/lint-workflows.sh")], { cwd: ROOT, encoding: "utf8" });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout.trim()).toBe("");
    expect(r.stderr).toMatch(/3 workflow file\(s\) clean/);
  }, 600_000);

  it("the shell scripts themselves are shellcheck-clean", () => {
    const shellcheck = spawnSync("shellcheck", ["--version"], { encoding: "utf8" });
    if (shellcheck.status !== 0) return;
    const r = spawnSync("shellcheck", ["scripts/get-actionlint.sh", "scripts/lint-workflows.sh"], { cwd: ROOT, encoding: "utf8" });
    expect(r.status, r.stdout).toBe(0);
  });
});

// ---------------------------------------------------------------------------
// preview.yml
// ---------------------------------------------------------------------------

describe("preview.yml", () => {
  const w = wf["preview.yml"];
  const j = job("preview.yml", "preview");

  it("runs on pull requests, for each of dev/staging/prod, without fail-fast", () => {
    expect(Object.keys(w.on)).toEqual(["pull_request"]);
    const strategy = obj(j.raw["strategy"], "strategy");
    expect(strategy["fail-fast"]).toBe(false);
    expect(obj(strategy["matrix"], "matrix")["stack"]).toEqual(["dev", "staging", "prod"]);
  });

  it("previews with --diff and one PR comment per stack, edited in place", () => {
    const [p, ...rest] = pulumiSteps(j);
    expect(rest).toEqual([]);
    expect(p?.with["command"]).toBe("preview");
    expect(str(p?.with["stack-name"])).toContain("matrix.stack");
    expect(truthy(p?.with["diff"])).toBe(true);
    expect(truthy(p?.with["comment-on-pr"])).toBe(true);
    expect(truthy(p?.with["edit-pr-comment"])).toBe(true);
    // a failing preview must fail the check
    expect(p?.with["continue-on-error"]).toBeUndefined();
    expect(j.raw["continue-on-error"]).toBeUndefined();
  });

  it("may comment on the PR and request an OIDC token", () => {
    expect(j.permissions["pull-requests"]).toBe("write");
    expect(j.permissions["id-token"]).toBe("write");
  });

  it("sets up Node 24 with setup-node, then npm ci, before pulumi", () => {
    const node = indexOf(j, (s) => s.uses.startsWith("actions/setup-node@"));
    const ci = indexOf(j, (s) => s.run.trim() === "npm ci");
    const pulumi = indexOf(j, isPulumi);
    expect(node).toBeGreaterThanOrEqual(0);
    expect(String(j.steps[node]?.with["node-version"])).toBe("24");
    expect(ci).toBeGreaterThan(node);
    expect(pulumi).toBeGreaterThan(ci);
  });
});

// ---------------------------------------------------------------------------
// deploy.yml
// ---------------------------------------------------------------------------

describe("deploy.yml", () => {
  const w = wf["deploy.yml"];
  const staging = job("deploy.yml", "staging");
  const prod = job("deploy.yml", "prod");

  it("runs on push to main only", () => {
    expect(Object.keys(w.on)).toEqual(["push"]);
    expect(obj(w.on["push"], "on.push")["branches"]).toEqual(["main"]);
  });

  it("deploys staging first, then prod in the production environment after staging", () => {
    expect(pulumiSteps(staging).map((s) => s.with["command"])).toEqual(["up"]);
    expect(str(pulumiSteps(staging)[0]?.with["stack-name"])).toMatch(/staging/);
    expect(pulumiSteps(prod).map((s) => s.with["command"])).toEqual(["up"]);
    expect(str(pulumiSteps(prod)[0]?.with["stack-name"])).toMatch(/prod/);
    expect(prod.needs).toEqual(["staging"]);
    expect(prod.environment).toBe("production");
    expect(staging.environment).toBe("staging");
  });

  it("holds one non-cancelling concurrency group per stack", () => {
    const group = (j: Job): Obj => obj(j.raw["concurrency"], `${j.id}.concurrency`);
    expect(group(staging)["group"]).toBe("pulumi-fastapi-edge-staging");
    expect(group(prod)["group"]).toBe("pulumi-fastapi-edge-prod");
    expect(group(staging)["cancel-in-progress"]).toBe(false);
    expect(group(prod)["cancel-in-progress"]).toBe(false);
  });

  it("smoke-checks /healthz on the stack output url after each up", () => {
    for (const j of [staging, prod]) {
      const up = indexOf(j, isPulumi);
      const smoke = indexOf(j, (s) => s.run.includes("/healthz"));
      expect(smoke, j.id).toBeGreaterThan(up);
      const step = j.steps[smoke];
      expect(str(step?.env["STACK_URL"])).toBe("${{ steps.up.outputs.url }}");
      expect(step?.run).toMatch(/== "200"/);
    }
  });
});

// ---------------------------------------------------------------------------
// staging-recreate.yml
// ---------------------------------------------------------------------------

describe("staging-recreate.yml", () => {
  const w = wf["staging-recreate.yml"];
  const j = job("staging-recreate.yml", "recreate");

  it("runs weekly and on demand", () => {
    const schedule = arr(w.on["schedule"], "on.schedule");
    expect(schedule).toHaveLength(1);
    const cron = str(obj(schedule[0], "schedule[0]")["cron"]).split(/\s+/);
    expect(cron).toHaveLength(5);
    expect(cron[2]).toBe("*"); // any day of month
    expect(cron[3]).toBe("*"); // any month
    expect(cron[4]).toMatch(/^[0-6]$/); // one weekday
    expect("workflow_dispatch" in w.on).toBe(true);
  });

  it("destroys staging, brings it up again, then smoke-checks /healthz with retries", () => {
    expect(pulumiSteps(j).map((s) => [s.with["command"], str(s.with["stack-name"]).includes("staging")])).toEqual([
      ["destroy", true],
      ["up", true],
    ]);
    const up = indexOf(j, (s) => isPulumi(s) && s.with["command"] === "up");
    expect(j.steps[up]?.id).toBe("up");
    const smoke = indexOf(j, (s) => s.run.includes("curl"));
    expect(smoke).toBeGreaterThan(up);
    const step = j.steps[smoke];
    expect(str(step?.env["STACK_URL"])).toBe("${{ steps.up.outputs.url }}");
    expect(step?.run).toMatch(/\$\{base\}\/healthz/);
    expect(step?.run).toMatch(/for attempt in \$\(seq 1 \d+\)/);
    expect(step?.run).toMatch(/== "200"/);
  });

  it("shares the staging concurrency group with deploy.yml", () => {
    const recreate = obj(j.raw["concurrency"], "concurrency");
    const deploy = obj(job("deploy.yml", "staging").raw["concurrency"], "deploy concurrency");
    expect(recreate["group"]).toBe(deploy["group"]);
    expect(recreate["cancel-in-progress"]).toBe(false);
  });
});

// ---------------------------------------------------------------------------
// every workflow
// ---------------------------------------------------------------------------

describe("all workflows", () => {
  const all = FILES.map((f) => wf[f]);
  const pkg = obj(JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")), "package.json");
  const sdkVersion = str(obj(pkg["dependencies"], "dependencies")["@pulumi/pulumi"]);

  it("default to read-only token permissions", () => {
    for (const w of all) expect(w.raw["permissions"], w.file).toEqual({ contents: "read" });
  });

  it("assume the AWS role through OIDC before any pulumi step, and request id-token: write", () => {
    for (const w of all) {
      for (const j of w.jobs.filter((x) => pulumiSteps(x).length > 0)) {
        const where = `${w.file}:${j.id}`;
        expect(j.permissions["id-token"], where).toBe("write");
        const creds = indexOf(j, isAwsCreds);
        expect(creds, where).toBeGreaterThanOrEqual(0);
        expect(creds, where).toBeLessThan(indexOf(j, isPulumi));
        const w2 = j.steps[creds]?.with ?? {};
        expect(w2["role-to-assume"], where).toBe("${{ vars.AWS_ROLE_ARN }}");
        expect(
          Object.keys(w2).filter((k) => /access-key|secret|session-token/i.test(k)),
          where,
        ).toEqual([]);
      }
    }
  });

  it("contain no long-lived AWS keys", () => {
    for (const w of all) {
      expect(w.text, w.file).not.toMatch(/AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID|aws-secret-access-key|aws-access-key-id/);
      expect(w.text, w.file).not.toMatch(/\bAKIA[0-9A-Z]{16}\b/);
    }
    for (const rel of ["docs/delivery.md", "docs/runbook.md", "scripts/get-actionlint.sh", "scripts/lint-workflows.sh"]) {
      const file = path.join(ROOT, rel);
      if (fs.existsSync(file)) expect(fs.readFileSync(file, "utf8"), rel).not.toMatch(/AWS_SECRET_ACCESS_KEY/);
    }
  });

  it("pin every action to an exact release or commit", () => {
    for (const w of all) {
      for (const j of w.jobs) {
        for (const s of j.steps.filter((x) => x.uses !== "")) {
          expect(s.uses, `${w.file}:${j.id}`).toMatch(/^[\w.-]+\/[\w./-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})$/);
        }
      }
    }
  });

  it("use pulumi/actions with known inputs, the policy pack, a backend choice, and the SDK's CLI version", () => {
    expect(fs.existsSync(path.join(ROOT, "policy/PulumiPolicy.yaml"))).toBe(true);
    for (const w of all) {
      for (const j of w.jobs) {
        for (const s of pulumiSteps(j)) {
          const where = `${w.file}:${j.id}:${s.name}`;
          for (const k of Object.keys(s.with)) expect(PULUMI_ACTION_INPUTS.has(k), `${where}: unknown input ${k}`).toBe(true);
          expect(s.with["cloud-url"], where).toBe("${{ vars.PULUMI_BACKEND_URL }}");
          expect(s.env["PULUMI_ACCESS_TOKEN"], where).toBe("${{ secrets.PULUMI_ACCESS_TOKEN }}");
          expect(s.env["PULUMI_CONFIG_PASSPHRASE"], where).toBe("${{ secrets.PULUMI_CONFIG_PASSPHRASE }}");
          expect(String(s.with["pulumi-version"]), where).toBe(sdkVersion);
          if (s.with["command"] !== "destroy") expect(s.with["policyPacks"], where).toBe("policy");
        }
      }
    }
  });

  it("only use secrets and variables that docs/delivery.md documents", () => {
    const doc = fs.readFileSync(path.join(ROOT, "docs/delivery.md"), "utf8");
    const used = new Set<string>();
    for (const w of all) for (const m of w.text.matchAll(/\b(secrets|vars)\.([A-Z0-9_]+)/g)) used.add(m[2] ?? "");
    expect([...used].sort()).toEqual([
      "AWS_REGION",
      "AWS_ROLE_ARN",
      "PULUMI_ACCESS_TOKEN",
      "PULUMI_BACKEND_URL",
      "PULUMI_CONFIG_PASSPHRASE",
      "PULUMI_ORG",
      "STAGING_SMOKE_INSECURE_TLS",
    ]);
    for (const name of used) expect(doc, name).toContain(`\`${name}\``);
  });
});
