// appUpstream unix (opt-in): nginx reaches each app process on its unix socket,
// /run/fastapi-edge/app-PORT.sock, instead of 127.0.0.1:PORT. The config's refusals,
// the rendered upstream, app.env and unit, the deploy command, the whole program, and
// nginx -t of a rendered tree. test/live/uds-upstream.test.ts runs it for real.
import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig } from "../../lib/config";
import { renderHostFiles } from "../../lib/hostfiles";
import { HOST_PATHS, hostLayout, PUBLIC_LISTEN } from "../../lib/hostpaths";
import { renderSite } from "../../lib/nginx";
import { appSocketPath, upstreamServers } from "../../lib/nginx/http";
import { shipped } from "../../lib/shipped";
import { APP_UNIT_SOCKET_LINES, renderAppEnv, renderAppUnit } from "../../lib/units";
import { deployLine } from "../../components/app";
import { configErrorOf } from "../helpers/config-error";
import { runProgram, unwrap, FAKE_PRIVATE_KEY } from "../helpers/mocks";
import { makeNginxFixture, nginxTest } from "../helpers/nginx-fixture";

const base = { domain: "api.example.com", email: "ops@example.com" };
const unix = { ...base, appUpstream: "unix" };
const existing = { hostMode: "existing", hostAddress: "203.0.113.5", hostUser: "admin" };

const fileOf = (files: { path: string; content: string }[], p: string): string => {
  const f = files.find((x) => x.path === p);
  if (!f) throw new Error(`no ${p} among ${files.map((x) => x.path).join(", ")}`);
  return f.content;
};
const serverLines = (http: string): string[] =>
  http
    .split("\n")
    .filter((l) => /^\s+server \S+ max_fails=/.test(l))
    .map((l) => l.trim());
const problemsOf = (raw: Record<string, string>): string => {
  const err = configErrorOf(raw);
  expect(err).toBeInstanceOf(ConfigError);
  return (err as ConfigError).problems.join("\n");
};

describe("config: appUpstream", () => {
  it("defaults to tcp, and unix is accepted with frontend nginx, appRuntime host and the app on the edge", () => {
    expect(parseConfig(base).appUpstream).toBe("tcp");
    expect(parseConfig(unix).appUpstream).toBe("unix");
    expect(parseConfig({ ...unix, appProcesses: "4" }).appUpstream).toBe("unix");
  });

  it("refuses anything but tcp or unix", () => {
    expect(problemsOf({ ...base, appUpstream: "socket" })).toMatch(/^fastapi-edge:appUpstream must be tcp or unix/m);
  });

  it("refuses unix behind the ALB", () => {
    const p = problemsOf({ ...unix, frontend: "alb", hostMode: "ec2", route53ZoneId: "Z0123456789ABC" });
    expect(p).toMatch(/^fastapi-edge:appUpstream unix is for frontend nginx: .*use appUpstream tcp/m);
  });

  it("refuses unix with appRuntime container", () => {
    expect(problemsOf({ ...unix, appRuntime: "container" })).toMatch(/^fastapi-edge:appUpstream unix needs appRuntime host/m);
  });

  it("refuses unix with app hosts behind the edge (appHosts or appHostCount)", () => {
    const listed = problemsOf({ ...unix, ...existing, edgePrivateAddress: "10.0.1.10", appHosts: "10.0.1.11" });
    expect(listed).toMatch(/^fastapi-edge:appUpstream unix needs the app on the edge: .*\(appHosts\)/m);
    const created = problemsOf({
      ...unix,
      appHostCount: "2",
      appHostSubnetIds: '["subnet-0aaaaaaaaaaaaaaaa","subnet-0bbbbbbbbbbbbbbbb"]',
    });
    expect(created).toMatch(/^fastapi-edge:appUpstream unix needs the app on the edge: .*\(appHostCount\)/m);
  });
});

describe("rendering: the upstream of unix sockets", () => {
  const c = parseConfig({ ...unix, appProcesses: "3", upstreamMaxFails: "2", upstreamFailTimeout: "4s" });
  const files = renderSite(c, { layout: hostLayout(c), listen: PUBLIC_LISTEN });

  it("one server unix:/run/fastapi-edge/app-PORT.sock per process, with the passive health checks", () => {
    const http = fileOf(files, "conf/fastapi-edge/http.conf");
    expect(serverLines(http)).toEqual([
      "server unix:/run/fastapi-edge/app-8000.sock max_fails=2 fail_timeout=4s;",
      "server unix:/run/fastapi-edge/app-8001.sock max_fails=2 fail_timeout=4s;",
      "server unix:/run/fastapi-edge/app-8002.sock max_fails=2 fail_timeout=4s;",
    ]);
    expect(http).not.toContain("127.0.0.1:");
  });

  it("keeps everything else: upstream keepalive, the retries on the next server", () => {
    const tcp = renderSite(parseConfig({ ...base, appProcesses: "3", upstreamMaxFails: "2", upstreamFailTimeout: "4s" }), {
      layout: hostLayout(c),
      listen: PUBLIC_LISTEN,
    });
    const http = fileOf(files, "conf/fastapi-edge/http.conf");
    expect(http).toContain("    keepalive 32;");
    expect(http).toContain("    keepalive_requests 10000;");
    // Only the server lines differ from the tcp rendering; every other file is the same.
    const strip = (t: string) => t.replace(/^\s+server \S+ /gm, "    server X ");
    expect(strip(http)).toBe(strip(fileOf(tcp, "conf/fastapi-edge/http.conf")));
    for (const f of tcp.filter((x) => x.path !== "conf/fastapi-edge/http.conf")) expect(fileOf(files, f.path)).toBe(f.content);
    expect(fileOf(files, "conf/fastapi-edge/snippets/proxy.conf")).toContain("proxy_next_upstream_tries 3;");
  });

  it("upstreamServers: sockets in the given directory, never with app hosts", () => {
    expect(upstreamServers([8000, 8001], undefined, "/run/x")).toEqual(["unix:/run/x/app-8000.sock", "unix:/run/x/app-8001.sock"]);
    expect(appSocketPath(HOST_PATHS.appSocketDir, 8005)).toBe("/run/fastapi-edge/app-8005.sock");
    expect(() => upstreamServers([8000], ["10.0.1.11"], "/run/x")).toThrow(/no app hosts/);
  });

  it("tcp (the default) renders 127.0.0.1:PORT as before", () => {
    const tcp = renderSite(parseConfig(base), { layout: hostLayout(parseConfig(base)), listen: PUBLIC_LISTEN });
    expect(serverLines(fileOf(tcp, "conf/fastapi-edge/http.conf"))).toEqual([
      "server 127.0.0.1:8000 max_fails=3 fail_timeout=10s;",
      "server 127.0.0.1:8001 max_fails=3 fail_timeout=10s;",
    ]);
  });

  it("the real nginx accepts the rendered tree with the unix upstream (nginx -t)", () => {
    const fx = makeNginxFixture(parseConfig(unix), {
      listen: { address: "127.0.0.1", http: 18080, https: 18443 },
      nginxVersion: "1.22",
      opensslVersion: "3.0",
    });
    const http = fileOf(fx.files, "conf/fastapi-edge/http.conf");
    expect(serverLines(http)).toEqual([
      `server unix:${fx.layout.appSocketDir}/app-8000.sock max_fails=3 fail_timeout=10s;`,
      `server unix:${fx.layout.appSocketDir}/app-8001.sock max_fails=3 fail_timeout=10s;`,
    ]);
    expect(nginxTest(fx.confDir)).toBe("");
  });
});

describe("the app's environment and unit with appUpstream unix", () => {
  const envLines = (text: string) => text.split("\n").filter((l) => /^[A-Z_]+=/.test(l));

  it("app.env: APP_UDS_DIR=/run/fastapi-edge and FORWARDED_ALLOW_IPS=* (a socket's peer has no address)", () => {
    const env = envLines(renderAppEnv(parseConfig(unix), "127.0.0.1"));
    expect(env).toContain("APP_UDS_DIR=/run/fastapi-edge");
    expect(env).toContain("FORWARDED_ALLOW_IPS=*");
    expect(env.filter((l) => l.startsWith("FORWARDED_ALLOW_IPS="))).toHaveLength(1);
  });

  it("app.env with tcp: no APP_UDS_DIR, nginx's loopback trusted as before", () => {
    const env = envLines(renderAppEnv(parseConfig(base), "127.0.0.1"));
    expect(env.some((l) => l.startsWith("APP_UDS_DIR="))).toBe(false);
    expect(env).toContain("FORWARDED_ALLOW_IPS=127.0.0.1");
  });

  it("the unit gets a shared, preserved RuntimeDirectory; with tcp it is the shipped file byte for byte", () => {
    const shippedUnit = shipped("systemd/fastapi-edge-app@.service");
    expect(renderAppUnit(parseConfig(base))).toBe(shippedUnit);
    const unit = renderAppUnit(parseConfig(unix));
    expect(APP_UNIT_SOCKET_LINES.filter((l) => !l.startsWith("#"))).toEqual([
      "RuntimeDirectory=fastapi-edge",
      "RuntimeDirectoryMode=0755",
      "RuntimeDirectoryPreserve=yes",
    ]);
    const service = unit.slice(unit.indexOf("[Service]"), unit.indexOf("[Install]"));
    for (const l of APP_UNIT_SOCKET_LINES) expect(service).toContain(`${l}\n`);
    // Nothing else changes: the hardening stays (RuntimeDirectory is writable under ProtectSystem=strict).
    expect(unit.split("\n").filter((l) => !APP_UNIT_SOCKET_LINES.some((s) => s === l))).toEqual(shippedUnit.split("\n"));
    expect(HOST_PATHS.appSocketDir).toBe("/run/fastapi-edge");
  });

  it("npm run render writes the unit and app.env for unix", () => {
    const files = renderHostFiles(parseConfig(unix), { phase: "full" });
    expect(fileOf(files.system, HOST_PATHS.appUnit)).toContain("RuntimeDirectoryPreserve=yes\n");
    expect(fileOf(files.system, HOST_PATHS.envFile)).toContain("\nAPP_UDS_DIR=/run/fastapi-edge\n");
    expect(serverLines(fileOf(files.nginx, "conf/fastapi-edge/http.conf"))[0]).toBe(
      "server unix:/run/fastapi-edge/app-8000.sock max_fails=3 fail_timeout=10s;",
    );
  });

  it("the deploy command: HEALTH_UDS_DIR for unix, the same text as before for tcp", () => {
    expect(deployLine(parseConfig(unix), "/opt/fastapi-edge/bin/app-deploy.sh '8000'")).toBe(
      "HEALTH_UDS_DIR=/run/fastapi-edge /opt/fastapi-edge/bin/app-deploy.sh '8000'",
    );
    expect(deployLine(parseConfig(base), "/opt/fastapi-edge/bin/app-deploy.sh '8000'")).toBe("/opt/fastapi-edge/bin/app-deploy.sh '8000'");
  });
});

describe("program: appUpstream unix on an existing host", () => {
  it("the app step rolls with HEALTH_UDS_DIR and writes the socket settings; nginx-site proxies to the sockets", async () => {
    const run = await runProgram({ ...unix, ...existing }, { secrets: { hostPrivateKey: FAKE_PRIVATE_KEY } });
    const stdin = (name: string) => String(unwrap(run.one("command:remote:Command", name).inputs["stdin"]));
    const deploy = stdin("app-deploy");
    expect(deploy).toMatch(/^HEALTH_UDS_DIR=\/run\/fastapi-edge \S*\/app-deploy\.sh --release /m);
    expect(deploy).toContain("APP_UDS_DIR=/run/fastapi-edge");
    expect(deploy).toContain("RuntimeDirectoryPreserve=yes");
    expect(stdin("nginx-site")).toContain("server unix:/run/fastapi-edge/app-8001.sock max_fails=3 fail_timeout=10s;");
  });
});
