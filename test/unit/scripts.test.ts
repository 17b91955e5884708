// Static checks of the host-side files: shellcheck / bash -n over every shell
// script, py_compile of the app, the systemd unit's required settings, and
// the argument/environment validation of the scripts (fast paths only).
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { APP_DIR, REPO_ROOT, SCRIPTS_DIR, SYSTEM_PYTHON, run, script } from "../helpers/proc";

const E2E_DIR = path.join(REPO_ROOT, "test", "e2e");

function shellScripts(): string[] {
  const list = (dir: string): string[] =>
    existsSync(dir)
      ? readdirSync(dir)
          .filter((f) => f.endsWith(".sh"))
          .sort()
          .map((f) => path.join(dir, f))
      : [];
  return [
    ...list(SCRIPTS_DIR),
    ...list(E2E_DIR),
    ...list(path.join(REPO_ROOT, "test", "helpers")),
    ...list(path.join(REPO_ROOT, "scripts")),
    path.join(REPO_ROOT, ".ci", "run"),
  ];
}

const EXPECTED_SCRIPTS = [
  "acme-bootstrap.sh",
  "app-deploy.sh",
  "app-remove.sh",
  "app-rollout.sh",
  "asg-user-data.sh",
  "cert-expiry-check.sh",
  "cert-expiry-timer.sh",
  "certbot-deploy-hook.sh",
  "container-lib.sh",
  "container-load.sh",
  "container-network.sh",
  "container-prune.sh",
  "container-pull.sh",
  "ensure-user.sh",
  "install-packages.sh",
  "log-window.sh",
  "nginx-apply.sh",
  "nginx-reload.sh",
  "nginx-remove.sh",
  "run-app.sh",
  "run-container.sh",
  "systemd-reload.sh",
  "wait-for-boot.sh",
];

describe("shell scripts", () => {
  it("all expected scripts exist", () => {
    const names = readdirSync(SCRIPTS_DIR);
    for (const s of EXPECTED_SCRIPTS) expect(names).toContain(s);
  });

  it("shellcheck reports nothing", async () => {
    const files = shellScripts();
    expect(files.length).toBeGreaterThanOrEqual(EXPECTED_SCRIPTS.length);
    // -x follows the `# shellcheck source=` directives of the scripts that source others.
    const res = await run("shellcheck", ["-x", "--shell=bash", "--severity=style", "--format=gcc", ...files], { cwd: REPO_ROOT });
    expect(res.stdout + res.stderr).toBe("");
    expect(res.code).toBe(0);
  });

  it.each(shellScripts().map((f) => [path.relative(REPO_ROOT, f), f]))(
    "%s: bash -n, shebang, strict mode, executable",
    async (_rel, file) => {
      const res = await run("bash", ["-n", file]);
      expect(res.stderr).toBe("");
      expect(res.code).toBe(0);
      const text = readFileSync(file, "utf8");
      expect(text.startsWith("#!/usr/bin/env bash\n")).toBe(true);
      // A file meant to be sourced ("# Source this") runs under its caller's options.
      if (!/^# Source this/m.test(text)) expect(text).toMatch(/^set -euo pipefail$/m);
      expect(statSync(file).mode & 0o111).toBe(0o111);
    },
  );
});

describe("app", () => {
  it("main.py compiles under /usr/bin/python3", async () => {
    const cache = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-pyc-"));
    try {
      const res = await run(SYSTEM_PYTHON, ["-m", "py_compile", path.join(APP_DIR, "main.py")], {
        env: { ...process.env, PYTHONPYCACHEPREFIX: cache },
      });
      expect(res.stderr).toBe("");
      expect(res.code).toBe(0);
    } finally {
      rmSync(cache, { recursive: true, force: true });
    }
  });

  it("ships static/index.html and static/style.css", () => {
    expect(readFileSync(path.join(APP_DIR, "static", "index.html"), "utf8")).toMatch(/<html/);
    expect(readFileSync(path.join(APP_DIR, "static", "style.css"), "utf8").length).toBeGreaterThan(0);
  });
});

describe("systemd template unit", () => {
  const unit = readFileSync(path.join(REPO_ROOT, "files", "systemd", "fastapi-edge-app@.service"), "utf8");
  const settings = unit
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#") && !l.startsWith("["));

  it.each([
    "EnvironmentFile=/etc/fastapi-edge/app.env",
    "Environment=APP_PORT=%i",
    "ExecStart=/opt/fastapi-edge/bin/run-app.sh %i",
    "User=fastapi-edge",
    "Restart=on-failure",
    "RestartSec=1",
    "NoNewPrivileges=true",
    "ProtectSystem=strict",
    "ProtectHome=true",
    "PrivateTmp=true",
    "WantedBy=multi-user.target",
  ])("has %s", (line) => {
    expect(settings).toContain(line);
  });

  it("has [Unit], [Service] and [Install] sections", () => {
    expect(unit).toMatch(/^\[Unit\]$[\s\S]*^\[Service\]$[\s\S]*^\[Install\]$/m);
  });
});

describe("argument and environment validation", () => {
  const bare: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? "/usr/bin:/bin" };

  it("run-app.sh rejects a non-numeric or out-of-range PORT (64) and missing env (78)", async () => {
    const env = { ...bare, APP_MODULE: "main:app", APP_DIR, FORWARDED_ALLOW_IPS: "127.0.0.1" };
    for (const arg of [["abc"], ["0"], ["65536"], ["80", "81"], []]) {
      const res = await run(script("run-app.sh"), arg, { env });
      expect(res.code).toBe(64);
      expect(res.stderr).toMatch(/run-app\.sh: error:/);
    }
    const missing = await run(script("run-app.sh"), ["8000"], { env: { ...bare, APP_DIR } });
    expect(missing.code).toBe(78);
    expect(missing.stderr).toMatch(/APP_MODULE FORWARDED_ALLOW_IPS/);
    const badDir = await run(script("run-app.sh"), ["8000"], { env: { ...env, APP_DIR: "/nonexistent" } });
    expect(badDir.code).toBe(78);
    expect(badDir.stderr).toMatch(/APP_DIR=\/nonexistent is not a directory/);
    // APP_UDS (the benchmark's unix-socket lever): an absolute path in an existing directory.
    const relUds = await run(script("run-app.sh"), ["8000"], { env: { ...env, APP_UDS: "app.sock" } });
    expect(relUds.code).toBe(78);
    expect(relUds.stderr).toMatch(/APP_UDS must be an absolute path/);
    const noDir = await run(script("run-app.sh"), ["8000"], { env: { ...env, APP_UDS: "/nonexistent/app.sock" } });
    expect(noDir.code).toBe(78);
    expect(noDir.stderr).toMatch(/APP_UDS=\/nonexistent\/app\.sock: its directory does not exist/);
    // APP_UDS_DIR (appUpstream unix): absolute, and the socket APP_UDS_DIR/app-PORT.sock is checked like APP_UDS.
    const relUdsDir = await run(script("run-app.sh"), ["8000"], { env: { ...env, APP_UDS_DIR: "run/fastapi-edge" } });
    expect(relUdsDir.code).toBe(78);
    expect(relUdsDir.stderr).toMatch(/APP_UDS_DIR must be an absolute path/);
    const noUdsDir = await run(script("run-app.sh"), ["08001"], { env: { ...env, APP_UDS_DIR: "/nonexistent/fastapi-edge/" } });
    expect(noUdsDir.code).toBe(78);
    expect(noUdsDir.stderr).toMatch(/APP_UDS=\/nonexistent\/fastapi-edge\/app-8001\.sock: its directory does not exist/);
  });

  it("app-rollout.sh refuses a relative HEALTH_UDS_DIR before touching any unit", async () => {
    const res = await run(script("app-rollout.sh"), ["8000"], { env: { ...bare, HEALTH_UDS_DIR: "run/fastapi-edge", SYSTEMCTL: "false" } });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/HEALTH_UDS_DIR must be an absolute path/);
  });

  it("install-packages.sh skips everything when all packages are installed", async () => {
    const res = await run(script("install-packages.sh"), ["bash", "coreutils"], {
      env: { ...process.env, PATH: `/nonexistent-apt-shim:${process.env.PATH ?? ""}` },
    });
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/all packages already installed: bash coreutils/);
    expect((await run(script("install-packages.sh"), [])).code).toBe(64);
    expect((await run(script("install-packages.sh"), ["bad name"])).code).toBe(64);
  });

  it("ensure-user.sh is a no-op for an existing user and rejects bad names", async () => {
    const res = await run(script("ensure-user.sh"), ["root"]);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/already exists/);
    expect((await run(script("ensure-user.sh"), ["Bad Name"])).code).toBe(64);
  });

  it("wait-for-boot.sh waits for cloud-init where there is one, and a failed cloud-init does not fail it", async () => {
    const none = await run(script("wait-for-boot.sh"), [], { env: { PATH: "/usr/bin:/bin" } });
    expect(none.code, none.stderr).toBe(0);
    expect(none.stdout).toBe("ssh-ready\n");
    const dir = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-cloud-init-"));
    try {
      const fake = path.join(dir, "cloud-init");
      writeFileSync(fake, `#!/bin/sh\necho "$@" >> '${dir}/calls'\nexit 2\n`, { mode: 0o755 });
      const res = await run(script("wait-for-boot.sh"), [], { env: { PATH: `${dir}:/usr/bin:/bin` } });
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout).toBe("ssh-ready\n");
      expect(readFileSync(path.join(dir, "calls"), "utf8")).toBe("status --wait\n");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe("nginx step scripts, with stand-ins for what they call", () => {
    let dir = "";
    beforeEach(() => {
      dir = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-step-"));
      // The scripts call their siblings: copy them next to a recording nginx-apply.sh.
      for (const s of ["acme-bootstrap.sh", "nginx-remove.sh", "systemd-reload.sh"]) {
        copyFileSync(script(s), path.join(dir, s));
        chmodSync(path.join(dir, s), 0o755);
      }
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));
    const fakeApply = (code: number) =>
      writeFileSync(path.join(dir, "nginx-apply.sh"), `#!/bin/sh\necho "$@" >> '${dir}/apply-calls'\nexit ${code}\n`, { mode: 0o755 });
    const applyCalls = () => (existsSync(path.join(dir, "apply-calls")) ? readFileSync(path.join(dir, "apply-calls"), "utf8") : "");

    it("acme-bootstrap.sh pushes the stage only while there is no certificate", async () => {
      fakeApply(0);
      const cert = path.join(dir, "live", "fullchain.pem");
      const webroot = path.join(dir, "webroot");
      const first = await run(path.join(dir, "acme-bootstrap.sh"), ["--cert", cert, "--webroot", webroot, "/tmp/stage-x"], { env: bare });
      expect(first.code, first.stderr).toBe(0);
      expect(applyCalls()).toBe("/tmp/stage-x\n");
      expect(statSync(webroot).isDirectory()).toBe(true);
      mkdirSync(path.dirname(cert));
      writeFileSync(cert, "-----BEGIN CERTIFICATE-----\n");
      const again = await run(path.join(dir, "acme-bootstrap.sh"), ["--cert", cert, "--webroot", webroot, "/tmp/stage-y"], { env: bare });
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toBe("certificate present: HTTP-only bootstrap not needed\n");
      expect(applyCalls()).toBe("/tmp/stage-x\n");
      fakeApply(1);
      rmSync(cert);
      expect(
        (await run(path.join(dir, "acme-bootstrap.sh"), ["--cert", cert, "--webroot", webroot, "/tmp/stage-z"], { env: bare })).code,
      ).toBe(1);
      expect((await run(path.join(dir, "acme-bootstrap.sh"), ["--cert", cert, "/tmp/stage-z"], { env: bare })).code).toBe(64);
    });

    it("nginx-remove.sh runs nginx-apply.sh --remove and removes the drop-in even when that fails", async () => {
      const dropIn = path.join(dir, "nginx.service.d", "fastapi-edge.conf");
      mkdirSync(path.dirname(dropIn));
      writeFileSync(dropIn, "[Service]\n");
      fakeApply(1);
      const res = await run(path.join(dir, "nginx-remove.sh"), ["--drop-in", dropIn], { env: bare });
      expect(res.code, res.stderr).toBe(0);
      expect(applyCalls()).toBe("--remove\n");
      expect(res.stderr).toMatch(/nginx-apply\.sh --remove failed/);
      expect(existsSync(dropIn)).toBe(false);
      expect((await run(path.join(dir, "nginx-remove.sh"), [], { env: bare })).code).toBe(64);
      expect((await run(path.join(dir, "nginx-remove.sh"), ["--drop-in", "relative.conf"], { env: bare })).code).toBe(64);
    });

    it.skipIf(existsSync("/run/systemd/system"))(
      "systemd-reload.sh removes what it is given and reloads nothing without systemd",
      async () => {
        const a = path.join(dir, "a.conf");
        writeFileSync(a, "x");
        const res = await run(path.join(dir, "systemd-reload.sh"), ["--remove", a, "--remove", path.join(dir, "missing.pem")], {
          env: bare,
        });
        expect(res.code, res.stderr).toBe(0);
        expect(existsSync(a)).toBe(false);
        expect((await run(path.join(dir, "systemd-reload.sh"), [], { env: bare })).code).toBe(0);
        expect((await run(path.join(dir, "systemd-reload.sh"), ["--remove"], { env: bare })).code).toBe(64);
        expect((await run(path.join(dir, "systemd-reload.sh"), ["--remove", "relative"], { env: bare })).code).toBe(64);
      },
    );
  });

  it("usage errors exit 64", async () => {
    expect((await run(script("nginx-apply.sh"), [], { env: bare })).code).toBe(64);
    expect((await run(script("nginx-apply.sh"), ["--bogus"], { env: bare })).code).toBe(64);
    expect((await run(script("nginx-reload.sh"), ["--bogus"], { env: bare })).code).toBe(64);
    expect((await run(script("nginx-reload.sh"), ["--start", "x"], { env: bare })).code).toBe(64);
    expect((await run(script("app-rollout.sh"), [], { env: bare })).code).toBe(64);
    expect((await run(script("app-remove.sh"), [], { env: bare })).code).toBe(64);
    expect((await run(script("app-deploy.sh"), [], { env: bare })).code).toBe(64);
    expect((await run(script("app-deploy.sh"), ["--release", "../x", "--upload", "/tmp/u", "8000"], { env: bare })).code).toBe(64);
    expect((await run(script("app-deploy.sh"), ["--release", "0123456789abcdef", "--upload", "/tmp/u"], { env: bare })).code).toBe(64);
    expect((await run(script("app-remove.sh"), ["../x"], { env: bare })).code).toBe(64);
    expect((await run(script("app-rollout.sh"), ["x"], { env: bare })).code).toBe(64);
    expect((await run(script("cert-expiry-check.sh"), [], { env: bare })).code).toBe(64);
    expect((await run(script("cert-expiry-timer.sh"), [], { env: bare })).code).toBe(64);
    expect((await run(script("cert-expiry-timer.sh"), ["--servername", "a b"], { env: bare })).code).toBe(64);
    expect((await run(script("cert-expiry-timer.sh"), ["--remove", "x"], { env: bare })).code).toBe(64);
  });
});
