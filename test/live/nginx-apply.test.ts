// Live test of files/scripts/nginx-apply.sh (and certbot-deploy-hook.sh)
// against a real nginx running from a temp prefix on 127.0.0.1.
import { createHash } from "node:crypto";
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  httpRequest,
  run,
  script,
  sleep,
  startProcess,
  stopAll,
  stopPid,
  waitFor,
  waitForPort,
  type RunResult,
} from "../helpers/proc";

let root = "";
let port = 0;
let confDir = "";
let stateDir = "";
let extraRoot = "";
let runDir = "";
let reloadLog = "";
let baseNginxConf = "";

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    NGINX_CONF_DIR: confDir,
    STATE_DIR: stateDir,
    EXTRA_ROOT: extraRoot,
    NGINX_BIN: "nginx",
    NGINX_RELOAD_CMD: `echo reload >> '${reloadLog}' && nginx -c '${confDir}/nginx.conf' -s reload`,
    ...extra,
  };
}

function reloads(): number {
  return existsSync(reloadLog)
    ? readFileSync(reloadLog, "utf8")
        .split("\n")
        .filter((l) => l === "reload").length
    : 0;
}

/** Global (non-server) part shared by the "distro" and the staged nginx.conf. */
function mainConf(httpBody: string): string {
  return `# test nginx.conf (relative includes only)
pid ${runDir}/nginx.pid;
error_log ${runDir}/error.log notice;
worker_processes 1;
events { worker_connections 128; }
http {
  include mime.types;
  access_log off;
  client_body_temp_path ${runDir}/client_body;
  proxy_temp_path ${runDir}/proxy;
  fastcgi_temp_path ${runDir}/fastcgi;
  uwsgi_temp_path ${runDir}/uwsgi;
  scgi_temp_path ${runDir}/scgi;
${httpBody}
}
`;
}

interface StageFiles {
  [relPath: string]: string;
}

/** Create a stage dir: keys are "conf/REL" or "extra/ABS-without-slash". */
function makeStage(name: string, files: StageFiles): string {
  const dir = path.join(root, "stages", name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(path.join(dir, "conf"), { recursive: true });
  for (const [rel, content] of Object.entries(files)) {
    const p = path.join(dir, rel);
    mkdirSync(path.dirname(p), { recursive: true });
    writeFileSync(p, content);
  }
  return dir;
}

function siteConf(marker: string): string {
  return `server {
  listen 127.0.0.1:${port};
  server_name _;
  include fastapi-edge/snippets/*.conf;
  location = /maintenance.html { root ${extraRoot}/var/www/fastapi-edge; }
  location / { default_type text/plain; return 200 "${marker}\\n"; }
}
`;
}

function goodStage(name: string, marker: string, withSnippet = true): string {
  const files: StageFiles = {
    "conf/nginx.conf": mainConf("  include fastapi-edge/*.conf;"),
    "conf/fastapi-edge/site.conf": siteConf(marker),
    "extra/var/www/fastapi-edge/maintenance.html": `<h1>maintenance ${marker}</h1>\n`,
  };
  if (withSnippet) files["conf/fastapi-edge/snippets/headers.conf"] = `add_header X-Edge-Marker "${marker}" always;\n`;
  return makeStage(name, files);
}

/** sha256 of every file below dir (relative path -> hash). */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const ent of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, ent.name);
      if (ent.isDirectory()) walk(p);
      else if (ent.isFile()) out[path.relative(dir, p)] = createHash("sha256").update(readFileSync(p)).digest("hex");
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

async function body(urlPath = "/"): Promise<string> {
  return (await httpRequest(`http://127.0.0.1:${port}${urlPath}`, { timeoutMs: 3000 })).text;
}

async function expectServing(marker: string): Promise<void> {
  // nginx -s reload is asynchronous, and for a moment old workers (not yet
  // told to quit) still accept connections next to the new ones: wait until
  // several consecutive fresh connections all get the new config.
  let streak = 0;
  await waitFor(
    async () => {
      streak = (await body()) === `${marker}\n` ? streak + 1 : 0;
      return streak >= 5;
    },
    `nginx to serve "${marker}" consistently`,
    10_000,
    50,
  );
}

function apply(args: string[], extra: Record<string, string> = {}): Promise<RunResult> {
  return run(script("nginx-apply.sh"), args, { env: env(extra) });
}

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-nginx-test-"));
  chmodSync(root, 0o755); // nginx workers (nobody) read the maintenance page below it
  confDir = path.join(root, "etc-nginx");
  stateDir = path.join(root, "state");
  extraRoot = path.join(root, "extra-root");
  runDir = path.join(root, "run");
  reloadLog = path.join(root, "reloads.log");
  for (const d of [confDir, extraRoot, runDir]) mkdirSync(d, { recursive: true });
  cpSync("/etc/nginx/mime.types", path.join(confDir, "mime.types"));
  port = await freePort();
  baseNginxConf = mainConf(`  server {
    listen 127.0.0.1:${port};
    location / { default_type text/plain; return 200 "distro\\n"; }
  }`);
  writeFileSync(path.join(confDir, "nginx.conf"), baseNginxConf);
  const nginx = startProcess("nginx", ["-c", path.join(confDir, "nginx.conf"), "-g", "daemon off;"]);
  await waitForPort(port, 10_000, "127.0.0.1", nginx);
  expect(await body()).toBe("distro\n");
});

afterAll(async () => {
  await stopAll();
  if (root !== "") rmSync(root, { recursive: true, force: true });
});

describe("nginx-apply.sh", () => {
  it("rejects bad usage with exit 64 and a missing stage with exit 1", async () => {
    expect((await apply([])).code).toBe(64);
    expect((await apply(["a", "b"])).code).toBe(64);
    const missing = await apply([path.join(root, "no-such-stage")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no conf\/ subdirectory/);
  });

  it("--remove before any apply is a no-op", async () => {
    const res = await apply(["--remove"]);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/nothing to remove/);
    expect(reloads()).toBe(0);
  });

  it("--check tests a stage and lists changes without touching anything", async () => {
    const before = snapshot(confDir);
    const res = await apply(["--check", goodStage("check", "v1")]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/would change/);
    expect(res.stdout).toContain(`+ ${confDir}/fastapi-edge/site.conf`);
    expect(snapshot(confDir)).toEqual(before);
    expect(existsSync(stateDir)).toBe(false);
    expect(reloads()).toBe(0);
  });

  it("applies a good stage: installs conf + extra files, saves the distro nginx.conf, reloads", async () => {
    const stage = goodStage("v1", "v1");
    const res = await apply([stage]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(`+ ${confDir}/fastapi-edge/site.conf`);
    expect(res.stdout).toContain(`+ ${confDir}/fastapi-edge/snippets/headers.conf`);
    expect(res.stdout).toContain(`~ ${confDir}/nginx.conf`);
    expect(res.stdout).toContain(`+ ${extraRoot}/var/www/fastapi-edge/maintenance.html`);
    expect(res.stdout).toMatch(/nginx reload done/);
    expect(reloads()).toBe(1);

    expect(readFileSync(path.join(stateDir, "nginx.conf.orig"), "utf8")).toBe(baseNginxConf);
    expect(readFileSync(path.join(confDir, "nginx.conf"), "utf8")).toBe(readFileSync(path.join(stage, "conf/nginx.conf"), "utf8"));
    const manifest = readFileSync(path.join(stateDir, "nginx-owned.txt"), "utf8")
      .split("\n")
      .filter((l) => l !== "" && !l.startsWith("#"));
    expect(manifest).toEqual([
      "conf/fastapi-edge/site.conf",
      "conf/fastapi-edge/snippets/headers.conf",
      "conf/nginx.conf",
      "extra/var/www/fastapi-edge/maintenance.html",
    ]);
    expect(statSync(path.join(confDir, "fastapi-edge/site.conf")).mode & 0o777).toBe(0o644);
    // no temp files left next to installed files
    expect(readdirSync(path.join(confDir, "fastapi-edge")).filter((f) => f.startsWith("."))).toEqual([]);

    await expectServing("v1");
    const res2 = await httpRequest(`http://127.0.0.1:${port}/`);
    expect(res2.headers["x-edge-marker"]).toBe("v1");
    const maint = await httpRequest(`http://127.0.0.1:${port}/maintenance.html`);
    expect(maint.status).toBe(200);
    expect(maint.text).toBe("<h1>maintenance v1</h1>\n");
  });

  it("an identical stage changes nothing and does not reload", async () => {
    const before = snapshot(confDir);
    const res = await apply([goodStage("v1-again", "v1")]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/no changes.*not reloaded/);
    expect(reloads()).toBe(1);
    expect(snapshot(confDir)).toEqual(before);
  });

  it("a stage nginx -t rejects: exit 1, nginx's error on stderr, nothing changed live, old config still served", async () => {
    const beforeConf = snapshot(confDir);
    const beforeState = snapshot(stateDir);
    const beforeExtra = snapshot(extraRoot);
    const stage = goodStage("broken", "v2");
    writeFileSync(
      path.join(stage, "conf/fastapi-edge/site.conf"),
      `server {\n  listen 127.0.0.1:${port};\n  bogus_directive on;\n  location / { return 200 "v2\\n"; }\n}\n`,
    );
    const res = await apply([stage]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain("candidate nginx config rejected by nginx -t; live config unchanged");
    expect(res.stderr).toMatch(/unknown directive "bogus_directive" in \S+\/fastapi-edge\/site\.conf:3/);
    expect(res.stderr).toMatch(/test failed/);
    expect(snapshot(confDir)).toEqual(beforeConf);
    expect(snapshot(stateDir)).toEqual(beforeState);
    expect(snapshot(extraRoot)).toEqual(beforeExtra);
    expect(reloads()).toBe(1);
    await sleep(300);
    expect(await body()).toBe("v1\n");
  });

  it("restores the backup when the live tree fails nginx -t after install (absolute include)", async () => {
    // An absolute include into the live dir: the candidate test reads the live
    // (valid) copy, the installed tree reads the new (broken) one.
    const absInclude = `${confDir}/fastapi-edge/abs.inc`;
    const withAbs = (marker: string): string => siteConf(marker).replace("server_name _;", `server_name _;\n  include ${absInclude};`);
    // First time, the absolutely-included file does not exist live yet: rejected.
    const early = goodStage("abs-early", "v1");
    writeFileSync(path.join(early, "conf/fastapi-edge/abs.inc"), "# nothing\n");
    writeFileSync(path.join(early, "conf/fastapi-edge/site.conf"), withAbs("v1"));
    const rejected = await apply([early]);
    expect(rejected.code).toBe(1);
    expect(rejected.stderr).toMatch(/absolute include paths/);
    expect(rejected.stderr).toMatch(/abs\.inc" failed/);
    // Install abs.inc without using it.
    const good = goodStage("abs-good", "v1");
    writeFileSync(path.join(good, "conf/fastapi-edge/abs.inc"), "# nothing\n");
    const ok = await apply([good]);
    expect(ok.code, ok.stderr).toBe(0);
    await expectServing("v1");
    const reloadsBefore = reloads();
    const beforeConf = snapshot(confDir);
    const beforeManifest = readFileSync(path.join(stateDir, "nginx-owned.txt"), "utf8");

    const bad = goodStage("abs-bad", "v3");
    writeFileSync(path.join(bad, "conf/fastapi-edge/abs.inc"), "this is not nginx syntax\n");
    writeFileSync(path.join(bad, "conf/fastapi-edge/site.conf"), withAbs("v3"));
    const res = await apply([bad]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/failed nginx -t on the live tree; restoring previous files/);
    expect(res.stderr).toMatch(/live config restored; nginx not reloaded/);
    expect(snapshot(confDir)).toEqual(beforeConf);
    expect(readFileSync(path.join(stateDir, "nginx-owned.txt"), "utf8")).toBe(beforeManifest);
    expect(reloads()).toBe(reloadsBefore);
    expect(await body()).toBe("v1\n");
  });

  it("drops owned files that are no longer staged and reloads", async () => {
    const res = await apply([goodStage("v4", "v4", false)]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(`- ${confDir}/fastapi-edge/snippets/headers.conf`);
    expect(res.stdout).toContain(`- ${confDir}/fastapi-edge/abs.inc`);
    expect(existsSync(path.join(confDir, "fastapi-edge/snippets/headers.conf"))).toBe(false);
    expect(existsSync(path.join(confDir, "fastapi-edge/snippets"))).toBe(false); // empty dir pruned
    await expectServing("v4");
    expect((await httpRequest(`http://127.0.0.1:${port}/`)).headers["x-edge-marker"]).toBeUndefined();
    // the distro copy is saved only the first time
    expect(readFileSync(path.join(stateDir, "nginx.conf.orig"), "utf8")).toBe(baseNginxConf);
    expect(readdirSync(path.join(stateDir, "backups")).length).toBeGreaterThanOrEqual(3);
  });

  it("retries a failed reload on the next run even without file changes", async () => {
    const stage = goodStage("v5", "v5", false);
    const failed = await apply([stage], { NGINX_RELOAD_CMD: "false" });
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/nginx reload failed; new config is installed and valid/);
    expect(existsSync(path.join(stateDir, "nginx-reload-pending"))).toBe(true);
    expect(await body()).toBe("v4\n");
    const retry = await apply([stage]);
    expect(retry.code, retry.stderr).toBe(0);
    expect(retry.stdout).toMatch(/previous reload failed; reloading/);
    expect(existsSync(path.join(stateDir, "nginx-reload-pending"))).toBe(false);
    await expectServing("v5");
  });

  it("returns only once the reload is live: a listen address the new config adds already accepts connections", async () => {
    // nginx -s reload only sends SIGHUP; the script waits for the master's new
    // workers, which start after the new listen sockets are open.
    const extraPort = await freePort();
    const stage = goodStage("v6", "v6", false);
    writeFileSync(
      path.join(stage, "conf/fastapi-edge/extra.conf"),
      `server { listen 127.0.0.1:${extraPort}; location / { default_type text/plain; return 200 "extra\\n"; } }\n`,
    );
    const res = await apply([stage]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/nginx reload done/);
    // No waiting here: the first connection must be accepted.
    expect((await httpRequest(`http://127.0.0.1:${extraPort}/`, { timeoutMs: 3000 })).text).toBe("extra\n");
  });

  it("a reload the running nginx cannot carry out (listen port taken; nginx -t passes) fails the run and stays pending", async () => {
    const busy = await freePort();
    const holder = net.createServer();
    await new Promise<void>((resolve, reject) => {
      holder.once("error", reject);
      holder.listen(busy, "127.0.0.1", resolve);
    });
    try {
      const stage = goodStage("v7", "v7", false);
      writeFileSync(
        path.join(stage, "conf/fastapi-edge/extra.conf"),
        `server { listen 127.0.0.1:${busy}; location / { default_type text/plain; return 200 "busy\\n"; } }\n`,
      );
      const check = await apply(["--check", stage]);
      expect(check.code, check.stderr).toBe(0); // nginx -t does not bind
      const failed = await apply([stage], { NGINX_APPLY_RELOAD_TIMEOUT: "3" });
      expect(failed.code).toBe(1);
      expect(failed.stderr).toMatch(/started no new worker processes within 3s, so it still serves the previous config/);
      expect(existsSync(path.join(stateDir, "nginx-reload-pending"))).toBe(true);
      expect(await body()).toBe("v6\n");
      expect(readFileSync(path.join(runDir, "error.log"), "utf8")).toMatch(new RegExp(`bind\\(\\) to 127\\.0\\.0\\.1:${busy} failed`));

      await new Promise<void>((resolve) => holder.close(() => resolve()));
      const retry = await apply([stage]);
      expect(retry.code, retry.stderr).toBe(0);
      expect(retry.stdout).toMatch(/previous reload failed; reloading/);
      expect(existsSync(path.join(stateDir, "nginx-reload-pending"))).toBe(false);
      expect((await httpRequest(`http://127.0.0.1:${busy}/`, { timeoutMs: 3000 })).text).toBe("busy\n");
      await expectServing("v7");
    } finally {
      if (holder.listening) await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
  });

  it("--remove restores the distro nginx.conf, deletes owned files and reloads; then is a no-op", async () => {
    const before = reloads();
    const res = await apply(["--remove"]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(`- ${confDir}/fastapi-edge/site.conf`);
    expect(res.stdout).toContain(`< ${confDir}/nginx.conf`);
    expect(readFileSync(path.join(confDir, "nginx.conf"), "utf8")).toBe(baseNginxConf);
    expect(existsSync(path.join(confDir, "fastapi-edge"))).toBe(false);
    expect(existsSync(path.join(extraRoot, "var/www/fastapi-edge"))).toBe(false);
    expect(existsSync(path.join(extraRoot, "var/www"))).toBe(true); // not ours to prune
    expect(existsSync(path.join(stateDir, "nginx-owned.txt"))).toBe(false);
    expect(reloads()).toBe(before + 1);
    await expectServing("distro");

    const again = await apply(["--remove"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/nothing to remove/);
    expect(reloads()).toBe(before + 1);
  });
});

describe("certbot-deploy-hook.sh", () => {
  function hook(): Promise<RunResult> {
    return run(script("certbot-deploy-hook.sh"), [], {
      env: env({ RENEWED_DOMAINS: "edge.example.com", RENEWED_LINEAGE: "/etc/letsencrypt/live/edge.example.com" }),
    });
  }

  it("reloads nginx when nginx -t passes", async () => {
    const before = reloads();
    const res = await hook();
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/edge\.example\.com/);
    expect(res.stderr).toMatch(/nginx reloaded/);
    expect(reloads()).toBe(before + 1);
  });

  it("exits non-zero without reloading when nginx -t fails", async () => {
    const conf = path.join(confDir, "nginx.conf");
    const good = readFileSync(conf, "utf8");
    const before = reloads();
    try {
      writeFileSync(conf, `${good}\nbroken_directive;\n`);
      const res = await hook();
      expect(res.code).toBe(1);
      expect(res.stderr).toMatch(/nginx -t failed; NOT reloading/);
      expect(res.stderr).toMatch(/unknown directive "broken_directive"/);
      expect(reloads()).toBe(before);
    } finally {
      writeFileSync(conf, good);
    }
    expect(await body()).toBe("distro\n");
  });
});

describe.skipIf(existsSync("/run/systemd/system"))("nginx-apply.sh default reload without systemd", () => {
  let prefix = "";
  let pidFile = "";
  let p2 = 0;

  afterAll(async () => {
    if (pidFile !== "" && existsSync(pidFile)) {
      const pid = Number.parseInt(readFileSync(pidFile, "utf8"), 10);
      if (Number.isInteger(pid) && pid > 1) await stopPid(pid);
    }
    if (prefix !== "") rmSync(prefix, { recursive: true, force: true });
  });

  it("starts nginx when it is not running, reloads it next time, and --remove does not start it", async () => {
    prefix = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-nginx-nosystemd-"));
    chmodSync(prefix, 0o755);
    const conf = path.join(prefix, "conf");
    const logs = path.join(prefix, "logs");
    mkdirSync(conf);
    mkdirSync(logs);
    cpSync("/etc/nginx/mime.types", path.join(conf, "mime.types"));
    pidFile = path.join(logs, "nginx.pid");
    p2 = await freePort();
    const main = (inner: string): string =>
      `pid ${pidFile};\nerror_log ${logs}/error.log;\nevents {}\nhttp {\n  include mime.types;\n  access_log off;\n` +
      ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t}_temp_path ${logs}/${t};\n`).join("") +
      `${inner}\n}\n`;
    writeFileSync(path.join(conf, "nginx.conf"), main(`  server { listen 127.0.0.1:${p2}; return 200 "base\\n"; }`));
    const site = (m: string): string =>
      `server { listen 127.0.0.1:${p2}; location / { default_type text/plain; return 200 "${m}\\n"; } }\n`;
    const stageDir = path.join(prefix, "stage");
    mkdirSync(path.join(stageDir, "conf", "fastapi-edge"), { recursive: true });
    writeFileSync(path.join(stageDir, "conf", "nginx.conf"), main("  include fastapi-edge/*.conf;"));
    writeFileSync(path.join(stageDir, "conf", "fastapi-edge", "site.conf"), site("s1"));
    const envNoCmd = (): NodeJS.ProcessEnv => {
      const e: NodeJS.ProcessEnv = {
        ...process.env,
        NGINX_CONF_DIR: conf,
        STATE_DIR: path.join(prefix, "state"),
        EXTRA_ROOT: path.join(prefix, "extra"),
      };
      delete e.NGINX_RELOAD_CMD;
      return e;
    };
    const get = async (): Promise<string> => (await httpRequest(`http://127.0.0.1:${p2}/`, { timeoutMs: 3000 })).text;

    const first = await run(script("nginx-apply.sh"), [stageDir], { env: envNoCmd(), timeoutMs: 30_000 });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/starting nginx/);
    await waitFor(async () => (await get().catch(() => "")) === "s1\n", "nginx started by nginx-apply.sh", 10_000);

    // The started daemon must not inherit the script's lock: a second run works.
    writeFileSync(path.join(stageDir, "conf", "fastapi-edge", "site.conf"), site("s2"));
    const second = await run(script("nginx-apply.sh"), [stageDir], {
      env: { ...envNoCmd(), NGINX_APPLY_LOCK_TIMEOUT: "5" },
      timeoutMs: 30_000,
    });
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).not.toMatch(/starting nginx/);
    await waitFor(async () => (await get()) === "s2\n", "nginx reloaded by nginx-apply.sh", 10_000);

    const pid = Number.parseInt(readFileSync(pidFile, "utf8"), 10);
    await stopPid(pid);
    const removed = await run(script("nginx-apply.sh"), ["--remove"], { env: envNoCmd(), timeoutMs: 30_000 });
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toMatch(/nothing to reload/);
    await sleep(300);
    await expect(get()).rejects.toThrow();
  });
});
