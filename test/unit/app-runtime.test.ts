// The app's Python runtime: which apps get a virtualenv per release (lib/pyapp.ts), the
// settings that go with it, and the resource graph each choice builds, under mocks.
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { treeHash } from "../../components/app";
import { pyprojectDependencies, pythonDeps, requirementNames, runtimeErrors } from "../../lib/pyapp";
import { FAKE_PRIVATE_KEY, runProgram, unwrap } from "../helpers/mocks";

const REPO = path.resolve(__dirname, "..", "..");
const VENV_APP = "test/fixtures/app-venv";
const existing = { domain: "api.example.com", email: "ops@example.com", hostMode: "existing", hostAddress: "192.0.2.5" };
const secrets = { secrets: { hostPrivateKey: FAKE_PRIVATE_KEY } };

function wheelhouse(files: Record<string, string> = { "edge_probe-1.0.0-py3-none-any.whl": "wheel" }): string {
  const dir = mkdtempSync(path.join(tmpdir(), "wheelhouse-"));
  for (const [f, content] of Object.entries(files)) writeFileSync(path.join(dir, f), content);
  return dir;
}

type Cmd = { create: string; stdin: string };
type Run = Awaited<ReturnType<typeof runProgram>>;
/** A step's script (its stdin) and the line in it that runs the installed host script NAME, unquoted. */
function step(run: Run, resource: string, script: string): { stdin: string; line: string } {
  const { stdin } = unwrap<Cmd>(run.one("command:remote:Command", resource).inputs);
  const lines = stdin.split("\n").filter((l) => l.startsWith(`/opt/fastapi-edge/bin/${script} `));
  expect(lines, stdin).toHaveLength(1);
  return { stdin, line: lines[0]!.replace(/'/g, "") }; // every argument here is one word
}
const deployOf = (run: Run) => step(run, "app-deploy", "app-deploy.sh");
const installOf = (run: Run) => step(run, "bootstrap-install", "install-packages.sh");

describe("requirement files", () => {
  it("reads the project names a requirements.txt names, skipping options, includes and comments", () => {
    const text = [
      "# pinned",
      "FastAPI==0.115.0  # the framework",
      "uvicorn[standard]>=0.33",
      "Pydantic_Core ; python_version >= '3.9'",
      "-r other.txt",
      "--index-url https://example.com/simple",
      "zope.interface @ https://example.com/z.whl",
      "requests==2.32.3 \\",
      "    --hash=sha256:0000",
      "",
    ].join("\n");
    expect(requirementNames(text)).toEqual(["fastapi", "uvicorn", "pydantic-core", "zope-interface", "requests"]);
  });

  it("reads [project].dependencies from a pyproject.toml, and refuses what pip could not use", () => {
    expect(pyprojectDependencies('[project]\nname = "x"\ndependencies = ["uvicorn>=0.33", "fastapi"]\n')).toEqual([
      "uvicorn>=0.33",
      "fastapi",
    ]);
    expect(pyprojectDependencies('[project]\nname = "x"\n')).toBeNull();
    expect(pyprojectDependencies("[tool.black]\nline-length = 100\n")).toBeNull();
    expect(() => pyprojectDependencies('[project]\nname = "x"\ndynamic = ["dependencies"]\n')).toThrow(/dynamic/);
    expect(() => pyprojectDependencies("[project\n")).toThrow(/not valid TOML/);
    expect(() => pyprojectDependencies("[project]\ndependencies = [1]\n")).toThrow(/array of requirement strings/);
  });

  it("requirements.txt wins over pyproject.toml; neither means the distribution's packages", () => {
    expect(pythonDeps({ requirementsTxt: "uvicorn\n", pyprojectToml: '[project]\ndependencies = ["fastapi"]\n' })).toEqual({
      file: "requirements.txt",
      names: ["uvicorn"],
    });
    expect(pythonDeps({ pyprojectToml: '[project]\ndependencies = ["fastapi"]\n' })).toEqual({
      file: "pyproject.toml",
      names: ["fastapi"],
    });
    expect(pythonDeps({ pyprojectToml: '[project]\nname = "x"\n' })).toBeNull();
    expect(pythonDeps({})).toBeNull();
  });

  it("ALB mode needs a virtualenv that names uvicorn; a wheelhouse or index needs a dependencies file", () => {
    const deps = { file: "requirements.txt" as const, names: ["fastapi"] };
    expect(runtimeErrors({ frontend: "alb" }, null).join("\n")).toMatch(
      /frontend alb needs uvicorn 0\.33 or newer.*add a requirements\.txt with uvicorn>=0\.33/,
    );
    expect(runtimeErrors({ frontend: "alb" }, deps).join("\n")).toMatch(/requirements\.txt does not name uvicorn: add uvicorn>=0\.33/);
    expect(runtimeErrors({ frontend: "alb" }, { ...deps, names: ["uvicorn"] })).toEqual([]);
    expect(runtimeErrors({ frontend: "nginx", appWheelhouse: "wheels" }, null).join("\n")).toMatch(
      /appWheelhouse is set, but the app directory/,
    );
    expect(runtimeErrors({ frontend: "nginx", appPackageIndex: "https://x.example/simple" }, null).join("\n")).toMatch(
      /appPackageIndex is set/,
    );
    expect(runtimeErrors({ frontend: "nginx" }, null)).toEqual([]);
  });
});

describe("the resource graph of each runtime (mocks)", () => {
  it("the sample app (no requirements): the distribution's packages, no virtualenv, the release is the tree's hash", async () => {
    const run = await runProgram(existing, secrets);
    const deploy = deployOf(run);
    expect(deploy.line).not.toContain("--venv");
    expect(deploy.stdin).not.toContain("APP_VENV");
    expect(installOf(run).line).not.toContain("python3-venv");
    expect(run.ofType("command:remote:CopyToRemote").map((r) => r.name)).toEqual(["app-upload"]);
    expect(run.outputs["appRelease"]).toBe(treeHash(path.join(REPO, "files/app")));
  });

  it("requirements.txt and a wheelhouse: python3-venv, the wheels uploaded beside the release, pip from them only", async () => {
    const wh = wheelhouse();
    const run = await runProgram({ ...existing, appSource: VENV_APP, appWheelhouse: wh, appVenvSystemPackages: "true" }, secrets);
    const release = run.outputs["appRelease"] as string;
    expect(release).toMatch(/^[0-9a-f]{16}$/);
    expect(release).not.toBe(treeHash(path.join(REPO, VENV_APP)));
    const wheels = unwrap<{ remotePath: string; triggers: unknown[] }>(run.one("command:remote:CopyToRemote", "app-wheels").inputs);
    expect(wheels.remotePath).toBe(`/var/tmp/fastapi-edge-wheels-${release}`);
    expect(wheels.triggers).toContain(release);
    const deploy = deployOf(run);
    expect(deploy.line).toContain(
      `--venv requirements.txt --python /usr/bin/python3 --wheelhouse /var/tmp/fastapi-edge-wheels-${release} --system-site-packages 8000 8001`,
    );
    expect(deploy.line).not.toContain("--min-uvicorn");
    expect(deploy.stdin).toContain("APP_VENV=.venv\n");
    expect(installOf(run).line).toMatch(/ python3-venv( |$)/);
  });

  it("a package index instead: --index-url, no wheel upload", async () => {
    const run = await runProgram({ ...existing, appSource: VENV_APP, appPackageIndex: "https://pypi.example.com/simple" }, secrets);
    expect(deployOf(run).line).toContain(
      "--venv requirements.txt --python /usr/bin/python3 --index-url https://pypi.example.com/simple 8000",
    );
    expect(run.ofType("command:remote:CopyToRemote").map((r) => r.name)).toEqual(["app-upload"]);
  });

  it("the release id follows every input of the virtualenv, and comes back with them (a rollback finds its release)", async () => {
    const a = wheelhouse();
    const b = wheelhouse({ "edge_probe-1.0.0-py3-none-any.whl": "another build" });
    const id = async (extra: Record<string, string>) =>
      (await runProgram({ ...existing, appSource: VENV_APP, ...extra }, secrets)).outputs["appRelease"] as string;
    const base = await id({ appWheelhouse: a });
    expect(await id({ appWheelhouse: b })).not.toBe(base);
    expect(await id({ appWheelhouse: a, appVenvSystemPackages: "true" })).not.toBe(base);
    expect(await id({ appWheelhouse: a, appPython: "/usr/bin/python3.13" })).not.toBe(base);
    expect(await id({ appWheelhouse: a })).toBe(base);
  });

  it("ALB mode passes --min-uvicorn 0.33, so a virtualenv with an older uvicorn never goes live", async () => {
    const run = await runProgram(
      { domain: "api.example.com", frontend: "alb", route53ZoneId: "Z0123456789ABC", appSource: VENV_APP, appWheelhouse: wheelhouse() },
      {},
    );
    expect(deployOf(run).line).toMatch(/--min-uvicorn 0\.33 8000 8001$/);
    expect(deployOf(run).stdin).toContain("FORWARDED_ALLOW_IPS=172.31.0.0/16\n");
  });

  it("refuses, before any resource, settings the app's files cannot back", async () => {
    await expect(runProgram({ ...existing, appWheelhouse: wheelhouse() }, secrets)).rejects.toThrow(
      /fastapi-edge:appWheelhouse is set, but the app directory \(appSource\) has no requirements\.txt/,
    );
    await expect(
      runProgram({ ...existing, appSource: VENV_APP, appWheelhouse: wheelhouse({ "README.txt": "x" }) }, secrets),
    ).rejects.toThrow(/appWheelhouse .* holds no wheels/);
    await expect(runProgram({ ...existing, appSource: VENV_APP, appWheelhouse: "/nonexistent/wheels" }, secrets)).rejects.toThrow(
      /appWheelhouse must be a directory/,
    );
    await expect(
      runProgram(
        { ...existing, appSource: VENV_APP, appWheelhouse: wheelhouse(), appPackageIndex: "https://pypi.example.com/simple" },
        secrets,
      ),
    ).rejects.toThrow(/appPackageIndex.*must be unset when appWheelhouse is set/);
    await expect(runProgram({ ...existing, appPackageIndex: "https://user:pw@pypi.example.com/simple" }, secrets)).rejects.toThrow(
      /appPackageIndex.*without credentials/,
    );
    const dynamic = mkdtempSync(path.join(tmpdir(), "app-dyn-"));
    mkdirSync(path.join(dynamic, "static"));
    writeFileSync(path.join(dynamic, "pyproject.toml"), '[project]\nname = "x"\ndynamic = ["dependencies"]\n');
    await expect(runProgram({ ...existing, appSource: dynamic }, secrets)).rejects.toThrow(/appSource .*dynamic/);
    await expect(runProgram({ domain: "api.example.com", frontend: "alb", route53ZoneId: "Z0123456789ABC" }, {})).rejects.toThrow(
      /frontend alb needs uvicorn 0\.33 or newer/,
    );
  });
});
