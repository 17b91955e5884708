// Several app hosts behind the nginx edge (appHosts, appHostCount; docs/multi-host.md):
// the graph under mocks, the rendered upstream, and the config refusals.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import type { ResourceValidationArgs, ResourceValidationPolicy } from "@pulumi/policy";
import { APP_HOST_ROLE_TAG } from "../../components/ec2-app-hosts";
import { ConfigError, parseConfig } from "../../lib/config";
import { renderHostFiles } from "../../lib/hostfiles";
import { renderSite } from "../../lib/nginx";
import { upstreamServers } from "../../lib/nginx/http";
import { nextUpstreamTries } from "../../lib/nginx/proxy";
import { FAKE_PRIVATE_KEY, runProgram, unwrap, type MockResource, type ProgramRun } from "../helpers/mocks";
import { fakeSystemdEnv } from "../helpers/fake-systemd";
import { makeNginxFixture, nginxTest } from "../helpers/nginx-fixture";
import { freePorts, httpJson, run as runCmd, script, stopPidFiles } from "../helpers/proc";
import { configErrorOf } from "../helpers/config-error";
import { appInstancesPrivate, appPortsFromEdgeOnly } from "../../policy/policies";
import * as policyRules from "../../policy/rules";

const base = { domain: "api.example.com", email: "ops@example.com" };
const existing = { ...base, hostMode: "existing", hostAddress: "203.0.113.5", hostUser: "admin", edgePrivateAddress: "10.0.1.10" };
const secrets = { secrets: { hostPrivateKey: FAKE_PRIVATE_KEY } };
const twoHosts = { ...existing, appHosts: "10.0.1.11,deploy@10.0.1.12:2222" };
const KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOn0GJRyTOs3NLXCj3OqIOdlrYlMHN6IuMmVTDS0Ldp4 app-a";
const KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxA1e9UEzwSCH0oeD6dfeF1d0YmXbrnt0Ofx+uT0AlM app-b";
const ec2Two = { ...base, appHostCount: "2", appHostSubnetIds: '["subnet-0aaaaaaaaaaaaaaaa","subnet-0bbbbbbbbbbbbbbbb"]' };

type Conn = {
  host: string;
  port?: number;
  user?: string;
  privateKey?: string;
  hostKey?: string;
  proxy?: { host: string; port?: number; user?: string; privateKey?: string; hostKey?: string };
};
const COMMAND = "command:remote:Command";
const conn = (r: MockResource) => unwrap<Conn>(r.inputs["connection"]);
const stdin = (r: MockResource) => String(unwrap(r.inputs["stdin"]));
const upstreamLines = (run: ProgramRun) =>
  stdin(run.one(COMMAND, "nginx-site"))
    .split("\n")
    .filter((l) => /^\s+server \S+ max_fails=/.test(l))
    .map((l) => l.trim());
const envLine = (text: string, key: string) => text.split("\n").find((l) => l.startsWith(`${key}=`));
/** A resource policy's violations for one mocked resource (the policies only read type and props). */
const policyViolations = async (policy: ResourceValidationPolicy, type: string, props: Record<string, unknown>): Promise<string[]> => {
  const out: string[] = [];
  const fns = [policy.validateResource ?? []].flat();
  for (const fn of fns) await fn({ type, props, name: "mock" } as unknown as ResourceValidationArgs, (m) => out.push(m));
  return out;
};
const appHostPolicies = [appInstancesPrivate, appPortsFromEdgeOnly];

describe("rendering: the upstream of several app hosts", () => {
  const c = parseConfig({ ...twoHosts, appProcesses: "2" });
  const layout = {
    nginxConfDir: "/etc/nginx",
    acmeWebroot: "/var/www/acme",
    maintenanceDir: "/var/www/m",
    staticDir: "/opt/s",
    logDir: "/var/log/nginx",
    pidFile: "/run/nginx.pid",
    certDir: "/etc/c",
    workerUser: "www-data",
    loadDistroModules: true,
    tempDir: null,
    appSocketDir: "/run/fastapi-edge",
  };
  const file = (files: { path: string; content: string }[], p: string) => files.find((f) => f.path === p)!.content;

  it("lists every host:port, port by port across the hosts, with the passive health checks", () => {
    const files = renderSite(c, { layout, listen: { address: null, http: 80, https: 443 }, upstreamHosts: ["10.0.1.11", "10.0.1.12"] });
    const http = file(files, "conf/fastapi-edge/http.conf");
    const servers = http.split("\n").filter((l) => l.includes("server ") && l.includes("max_fails"));
    expect(servers.map((l) => l.trim())).toEqual([
      "server 10.0.1.11:8000 max_fails=3 fail_timeout=10s;",
      "server 10.0.1.12:8000 max_fails=3 fail_timeout=10s;",
      "server 10.0.1.11:8001 max_fails=3 fail_timeout=10s;",
      "server 10.0.1.12:8001 max_fails=3 fail_timeout=10s;",
    ]);
    expect(http).not.toContain("127.0.0.1:");
    expect(http).toContain("keepalive 32;");
  });

  it("tries a failed request on every server (N hosts x P ports) and never re-sends a non-idempotent one", () => {
    const files = renderSite(c, {
      layout,
      listen: { address: null, http: 80, https: 443 },
      upstreamHosts: ["10.0.1.11", "10.0.1.12", "10.0.1.13"],
    });
    const proxy = file(files, "conf/fastapi-edge/snippets/proxy.conf");
    expect(proxy).toContain("proxy_next_upstream_tries 6;");
    const next = proxy.split("\n").find((l) => l.startsWith("proxy_next_upstream "))!;
    expect(next).toBe("proxy_next_upstream error timeout http_502 http_503;");
    expect(next).not.toContain("non_idempotent");
    expect(nextUpstreamTries([8000], 1)).toBe(2);
    expect(nextUpstreamTries([8000, 8001, 8002], 1)).toBe(3);
    expect(nextUpstreamTries([8000, 8001], 4)).toBe(8);
  });

  it("without app hosts, the upstream is the edge's loopback as before", () => {
    expect(upstreamServers([8000, 8001])).toEqual(["127.0.0.1:8000", "127.0.0.1:8001"]);
    expect(upstreamServers([8000, 8001], [])).toEqual([]);
    const files = renderSite(parseConfig(base), { layout, listen: { address: null, http: 80, https: 443 }, upstreamHosts: [] });
    expect(file(files, "conf/fastapi-edge/http.conf")).toContain("server 127.0.0.1:8000 max_fails=3");
  });

  it("npm run render shows the listed app hosts in the upstream", () => {
    const files = renderHostFiles(c, { phase: "full" });
    const http = file(files.nginx, "conf/fastapi-edge/http.conf");
    expect(http).toContain("    server 10.0.1.12:8001 max_fails=3 fail_timeout=10s;");
    expect(http).not.toContain("127.0.0.1:");
  });

  it("the real nginx accepts the rendered tree (nginx -t)", () => {
    const fx = makeNginxFixture(c, {
      listen: { address: "127.0.0.1", http: 18080, https: 18443 },
      nginxVersion: "1.22",
      opensslVersion: "3.0",
      upstreamHosts: ["10.0.1.11", "10.0.1.12"],
    });
    expect(fx.files.find((f) => f.path === "conf/fastapi-edge/http.conf")!.content).toContain("server 10.0.1.12:8001 ");
    expect(nginxTest(fx.confDir)).toBe("");
  });
});

describe("program: listed app hosts behind an existing edge", () => {
  let cached: ProgramRun | undefined;
  const program = async (): Promise<ProgramRun> => (cached ??= await runProgram(twoHosts, secrets));

  it("gives every app host a bootstrap and an app deploy, reached through the edge as a bastion", async () => {
    const run = await program();
    for (const key of ["10-0-1-11", "10-0-1-12"]) {
      for (const step of [`app-host-${key}-bootstrap-wait-ssh`, `app-host-${key}-bootstrap-install`, `app-host-${key}-deploy`]) {
        run.one(COMMAND, step);
      }
      run.one("command:remote:CopyToRemote", `app-host-${key}-upload`);
    }
    const a = conn(run.one(COMMAND, "app-host-10-0-1-11-deploy"));
    expect(a).toMatchObject({ host: "10.0.1.11", port: 22, user: "admin", privateKey: FAKE_PRIVATE_KEY });
    expect(a.proxy).toMatchObject({ host: "203.0.113.5", port: 22, user: "admin", privateKey: FAKE_PRIVATE_KEY });
    const b = conn(run.one(COMMAND, "app-host-10-0-1-12-deploy"));
    expect(b).toMatchObject({ host: "10.0.1.12", port: 2222, user: "deploy" });
    expect(b.proxy).toMatchObject({ host: "203.0.113.5" });
    // The uploads go through the bastion too.
    expect(conn(run.one("command:remote:CopyToRemote", "app-host-10-0-1-12-upload")).proxy).toMatchObject({ host: "203.0.113.5" });
    // The edge keeps its own connection, without a proxy.
    expect(conn(run.one(COMMAND, "nginx-site")).proxy).toBeUndefined();
    expect(run.outputs["appHostAddresses"]).toEqual(["10.0.1.11", "10.0.1.12"]);
  });

  it("pins each app host's key on the second hop (appHostKeys), the edge's on the bastion hop (hostKey)", async () => {
    const edgeKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0yQ0zZ3xh1pY6Sx6bnqzQ2Ks5pPjW2Cq8UQXo5D1aT edge";
    expect((await program()).ofType(COMMAND).every((r) => conn(r).hostKey === undefined)).toBe(true);
    const run = await runProgram({ ...twoHosts, hostKey: edgeKey, appHostKeys: `${KEY_A},${KEY_B}` }, secrets);
    for (const [addr, key] of [
      ["10-0-1-11", KEY_A],
      ["10-0-1-12", KEY_B],
    ] as const) {
      for (const step of [`app-host-${addr}-bootstrap-install`, `app-host-${addr}-deploy`]) {
        const c = conn(run.one(COMMAND, step));
        expect(c.hostKey, step).toBe(key);
        expect(c.proxy?.hostKey, step).toBe(edgeKey);
      }
      expect(conn(run.one("command:remote:CopyToRemote", `app-host-${addr}-upload`)).hostKey).toBe(key);
    }
    expect(conn(run.one(COMMAND, "nginx-site")).hostKey).toBe(edgeKey);
  });

  it("binds uvicorn to each host's private address, trusts only the edge, health-checks that address", async () => {
    const run = await program();
    for (const addr of ["10.0.1.11", "10.0.1.12"]) {
      const text = stdin(run.one(COMMAND, `app-host-${addr.replace(/\./g, "-")}-deploy`));
      expect(envLine(text, "UVICORN_HOST")).toBe(`UVICORN_HOST=${addr}`);
      expect(envLine(text, "FORWARDED_ALLOW_IPS")).toBe("FORWARDED_ALLOW_IPS=10.0.1.10");
      expect(text).toMatch(new RegExp(`^HEALTH_HOST=${addr.replace(/\./g, "\\.")} /opt/fastapi-edge/bin/app-deploy\\.sh `, "m"));
    }
  });

  it("the edge installs the release for its static files only, and stops its own processes after nginx", async () => {
    const run = await program();
    // No unit, no app.env, no process: app-deploy.sh --files-only.
    const edge = stdin(run.one(COMMAND, "app-deploy"));
    expect(edge).toMatch(/^\/opt\/fastapi-edge\/bin\/app-deploy\.sh --files-only --release '[0-9a-f]{16}' --upload '\S+'$/m);
    expect(edge).not.toMatch(/UVICORN_HOST|fastapi-edge-app@|HEALTH_HOST=|--expect-version/);
    // The processes a single-host stack ran stop once the reload names the app hosts alone.
    const retire = run.one(COMMAND, "edge-app-retire");
    expect(stdin(retire)).toMatch(/^\/opt\/fastapi-edge\/bin\/app-rollout\.sh --prune-only$/m);
    expect(unwrap(retire.inputs)["delete"]).toBeUndefined();
    expect(run.dependencies("edge-app")).toEqual(expect.arrayContaining(["nginx-site"]));
    // One host: the edge runs the app as before, and nothing retires it.
    const single = await runProgram({ ...existing, edgePrivateAddress: "" }, secrets);
    expect(stdin(single.one(COMMAND, "app-deploy"))).toMatch(/^\/opt\/fastapi-edge\/bin\/app-deploy\.sh --release /m);
    expect(single.resources.filter((r) => r.name.startsWith("edge-app"))).toEqual([]);
  });

  it("installs no nginx on an app host", async () => {
    const run = await program();
    const install = stdin(run.one(COMMAND, "app-host-10-0-1-11-bootstrap-install"));
    const pkgLine = install.split("\n").find((l) => l.startsWith("/opt/fastapi-edge/bin/install-packages.sh"))!;
    expect(pkgLine).not.toMatch(/'nginx'|'certbot'/);
    expect(pkgLine).toContain("'python3-uvicorn'");
    expect(stdin(run.resources.find((r) => r.name === "bootstrap-install")!)).toMatch(/install-packages\.sh 'nginx' 'certbot'/);
  });

  it("rolls host by host: each host's app waits for the previous one's, nginx for all of them", async () => {
    const run = await program();
    // dependsOn sits on the components; their children register (and so run) only once the
    // component has registered, which waits for every dependency to be done.
    expect(run.dependencies("app-host")).toEqual(expect.arrayContaining(["app-deploy"]));
    const first = run.dependencies("app-host-10-0-1-11");
    expect(first).toEqual(expect.arrayContaining(["app-host-10-0-1-11-bootstrap-install"]));
    expect(first.filter((d) => d.startsWith("app-host-10-0-1-12"))).toEqual([]);
    expect(run.dependencies("app-host-10-0-1-12")).toEqual(
      expect.arrayContaining(["app-host-10-0-1-12-bootstrap-install", "app-host-10-0-1-11-deploy"]),
    );
    expect(run.dependencies("nginx")).toEqual(
      expect.arrayContaining(["app-deploy", "app-host-10-0-1-11-deploy", "app-host-10-0-1-12-deploy"]),
    );
  });

  it("the nginx push lists every host:port and no loopback", async () => {
    const run = await program();
    expect(upstreamLines(run)).toEqual([
      "server 10.0.1.11:8000 max_fails=3 fail_timeout=10s;",
      "server 10.0.1.12:8000 max_fails=3 fail_timeout=10s;",
      "server 10.0.1.11:8001 max_fails=3 fail_timeout=10s;",
      "server 10.0.1.12:8001 max_fails=3 fail_timeout=10s;",
    ]);
    expect(stdin(run.one(COMMAND, "nginx-site"))).toContain("proxy_next_upstream_tries 4;");
  });

  it("adding a host changes only the upstream lines of the nginx push, plus the new host's resources", async () => {
    const before = await program();
    const after = await runProgram({ ...twoHosts, appHosts: "10.0.1.11,deploy@10.0.1.12:2222,10.0.1.13" }, secrets);
    const key = (r: MockResource) => `${r.type} ${r.name}`;
    const was = new Map(before.resources.map((r) => [key(r), JSON.stringify(unwrap(r.inputs))]));
    const added = after.resources.filter((r) => !was.has(key(r))).map((r) => r.name);
    expect(added.sort()).toEqual(
      [
        "app-host-10-0-1-13",
        "app-host-10-0-1-13-bootstrap",
        "app-host-10-0-1-13-bootstrap-install",
        "app-host-10-0-1-13-bootstrap-wait-ssh",
        "app-host-10-0-1-13-deploy",
        "app-host-10-0-1-13-upload",
      ].sort(),
    );
    const changed = after.resources.filter((r) => was.has(key(r)) && was.get(key(r)) !== JSON.stringify(unwrap(r.inputs)));
    expect(changed.map((r) => r.name)).toEqual(["nginx-site"]);
    const lines = (r: MockResource) => stdin(r).split("\n");
    const old = lines(before.one(COMMAND, "nginx-site"));
    const neu = lines(after.one(COMMAND, "nginx-site"));
    const removed = old.filter((l) => !neu.includes(l));
    const addedLines = neu.filter((l) => !old.includes(l));
    expect(removed).toEqual(["proxy_next_upstream_tries 4;"]);
    expect(addedLines).toEqual([
      "    server 10.0.1.13:8000 max_fails=3 fail_timeout=10s;",
      "    server 10.0.1.13:8001 max_fails=3 fail_timeout=10s;",
      "proxy_next_upstream_tries 6;",
    ]);
  });

  it("leaves the single-host program as it was when no app host is set", async () => {
    const run = await runProgram({ ...existing, edgePrivateAddress: "" }, secrets);
    expect(run.resources.filter((r) => r.name.startsWith("app-host"))).toEqual([]);
    expect(upstreamLines(run)).toEqual([
      "server 127.0.0.1:8000 max_fails=3 fail_timeout=10s;",
      "server 127.0.0.1:8001 max_fails=3 fail_timeout=10s;",
    ]);
    expect(run.outputs["appHostAddresses"]).toBeUndefined();
  });
});

describe("program: listed app hosts behind an EC2 edge", () => {
  it("trusts and proxies through the edge instance's own private address and Elastic IP", async () => {
    const run = await runProgram({ ...base, sshAllowedCidrs: "198.51.100.7/32", appHosts: "10.0.1.11" });
    const c = conn(run.one(COMMAND, "app-host-10-0-1-11-deploy"));
    expect(c).toMatchObject({ host: "10.0.1.11", user: "admin", privateKey: FAKE_PRIVATE_KEY });
    expect(c.proxy).toMatchObject({ host: "203.0.113.10", user: "admin" });
    expect(envLine(stdin(run.one(COMMAND, "app-host-10-0-1-11-deploy")), "FORWARDED_ALLOW_IPS")).toBe("FORWARDED_ALLOW_IPS=172.31.0.10");
    // No app instances are created for listed servers.
    expect(run.ofType("aws:ec2/instance:Instance").map((r) => r.name)).toEqual(["host-instance"]);
    expect(upstreamLines(run)).toEqual([
      "server 10.0.1.11:8000 max_fails=3 fail_timeout=10s;",
      "server 10.0.1.11:8001 max_fails=3 fail_timeout=10s;",
    ]);
  });
});

describe("program: EC2 app instances (appHostCount)", () => {
  let cached: ProgramRun | undefined;
  const program = async (): Promise<ProgramRun> => (cached ??= await runProgram(ec2Two));

  it("creates the instances in the configured subnets, without a public address, hardened like the edge", async () => {
    const run = await program();
    const apps = run.ofType("aws:ec2/instance:Instance").filter((r) => r.name.startsWith("app-instance-"));
    expect(apps.map((r) => r.name).sort()).toEqual(["app-instance-0", "app-instance-1"]);
    for (const [i, r] of apps.entries()) {
      const inputs = r.inputs as Record<string, unknown>;
      expect(inputs["associatePublicIpAddress"]).toBe(false);
      expect(inputs["subnetId"]).toBe(["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"][i]);
      expect(inputs["metadataOptions"]).toMatchObject({ httpTokens: "required" });
      expect(inputs["rootBlockDevice"]).toMatchObject({ encrypted: true });
      expect(inputs["keyName"]).toBe("host-key-keyname");
      expect(inputs["vpcSecurityGroupIds"]).toEqual(["app-instance-sg-id"]);
    }
    // Only the edge has an Elastic IP.
    expect(run.ofType("aws:ec2/eip:Eip").map((r) => r.name)).toEqual(["host-eip"]);
  });

  it("admits the app ports and SSH only from the edge's security group", async () => {
    const run = await program();
    const rules = run
      .ofType("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
      .filter((r) => r.inputs["securityGroupId"] === "app-instance-sg-id")
      .map((r) => r.inputs as Record<string, unknown>);
    expect(rules.map((r) => [r["fromPort"], r["toPort"], r["referencedSecurityGroupId"]]).sort()).toEqual([
      [22, 22, "host-sg-id"],
      [8000, 8001, "host-sg-id"],
    ]);
    for (const r of rules) {
      expect(r["cidrIpv4"]).toBeUndefined();
      expect(r["cidrIpv6"]).toBeUndefined();
    }
  });

  it("passes the policy pack's app-host rules, which find the instances, group and rules by their role tag", async () => {
    const run = await program();
    expect(APP_HOST_ROLE_TAG).toEqual({ [policyRules.APP_HOST_ROLE_TAG.key]: policyRules.APP_HOST_ROLE_TAG.value });
    const tagged = run.resources.filter((r) => policyRules.isAppHostResource(unwrap(r.inputs)));
    expect(tagged.map((r) => r.name).sort()).toEqual([
      "app-instance-0",
      "app-instance-1",
      "app-instance-app",
      "app-instance-egress-v4",
      "app-instance-sg",
      "app-instance-ssh",
    ]);
    for (const r of run.resources) {
      for (const policy of appHostPolicies) {
        expect(await policyViolations(policy, r.type, unwrap(r.inputs)), `${policy.name} ${r.name}`).toEqual([]);
      }
    }
  });

  it("fails the app-host rules when an instance asks for a public address or a rule admits a CIDR", async () => {
    const run = await program();
    const instance = unwrap(run.one("aws:ec2/instance:Instance", "app-instance-1").inputs);
    expect(
      await policyViolations(appInstancesPrivate, "aws:ec2/instance:Instance", { ...instance, associatePublicIpAddress: true }),
    ).toEqual([expect.stringMatching(/^associatePublicIpAddress is true; .*set associatePublicIpAddress: false\.$/)]);
    const ingress = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule";
    const rule = unwrap(run.one(ingress, "app-instance-app").inputs);
    const { referencedSecurityGroupId: _ref, ...withoutRef } = rule;
    expect(await policyViolations(appPortsFromEdgeOnly, ingress, { ...withoutRef, cidrIpv4: "10.0.0.0/8" })).toEqual([
      expect.stringMatching(/admits cidrIpv4 10\.0\.0\.0\/8; .*drop cidrIpv4\.$/),
      expect.stringMatching(/has no referencedSecurityGroupId/),
    ]);
    const sg = unwrap(run.one("aws:ec2/securityGroup:SecurityGroup", "app-instance-sg").inputs);
    const open = { ...sg, ingress: [{ protocol: "tcp", fromPort: 8000, toPort: 8001, cidrBlocks: ["0.0.0.0/0"] }] };
    expect(await policyViolations(appPortsFromEdgeOnly, "aws:ec2/securityGroup:SecurityGroup", open)).toHaveLength(2);
  });

  it("deploys through the edge's Elastic IP, trusts the edge's private address, lists the instances upstream", async () => {
    const run = await program();
    const c0 = conn(run.one(COMMAND, "app-host-0-deploy"));
    expect(c0).toMatchObject({ host: "172.31.1.11", port: 22, user: "admin", privateKey: FAKE_PRIVATE_KEY });
    expect(c0.proxy).toMatchObject({ host: "203.0.113.10", user: "admin", privateKey: FAKE_PRIVATE_KEY });
    const text = stdin(run.one(COMMAND, "app-host-1-deploy"));
    expect(envLine(text, "UVICORN_HOST")).toBe("UVICORN_HOST=172.31.1.12");
    expect(envLine(text, "FORWARDED_ALLOW_IPS")).toBe("FORWARDED_ALLOW_IPS=172.31.0.10");
    expect(upstreamLines(run)).toEqual([
      "server 172.31.1.11:8000 max_fails=3 fail_timeout=10s;",
      "server 172.31.1.12:8000 max_fails=3 fail_timeout=10s;",
      "server 172.31.1.11:8001 max_fails=3 fail_timeout=10s;",
      "server 172.31.1.12:8001 max_fails=3 fail_timeout=10s;",
    ]);
  });
});

describe("config refusals name the key", () => {
  const refuse = (raw: Record<string, string>, re: RegExp) => {
    const err = configErrorOf(raw);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems.join("\n")).toMatch(re);
  };

  it("parses [USER@]ADDRESS[:PORT] and refuses anything else", () => {
    expect(parseConfig(twoHosts).appHosts).toEqual([
      { address: "10.0.1.11", sshPort: 22 },
      { address: "10.0.1.12", sshUser: "deploy", sshPort: 2222 },
    ]);
    expect(parseConfig({ ...existing, appHosts: '["192.168.5.4", "172.16.0.9:22"]' }).appHosts).toHaveLength(2);
    for (const bad of [
      "203.0.113.7",
      "10.0.1.256",
      "app1.internal",
      "10.0.1.11:0",
      "10.0.1.11:70000",
      "Root@10.0.1.11",
      "10.0.1.11;reboot",
    ]) {
      refuse({ ...existing, appHosts: bad }, /fastapi-edge:appHosts must be \[USER@\]ADDRESS\[:SSHPORT\] with a private IPv4 address/);
    }
  });

  it("appHostKeys: one key line per appHosts entry, only with appHosts", () => {
    refuse(
      { ...twoHosts, appHostKeys: KEY_A },
      /fastapi-edge:appHostKeys must name one key per appHosts entry, in the same order: 2 host\(s\), 1 key\(s\)/,
    );
    refuse({ ...twoHosts, appHostKeys: `${KEY_A},ssh-ed25519 not-base64!` }, /fastapi-edge:appHostKeys .*the host's public key line/);
    refuse({ ...existing, appHostKeys: KEY_A }, /fastapi-edge:appHostKeys is only used with appHosts/);
    refuse({ ...ec2Two, appHostKeys: KEY_A }, /fastapi-edge:appHostKeys is only for appHosts/);
  });

  it("refuses duplicates and the edge itself", () => {
    refuse({ ...existing, appHosts: "10.0.1.11,admin@10.0.1.11:2222" }, /fastapi-edge:appHosts names 10\.0\.1\.11 twice/);
    refuse({ ...existing, appHosts: "10.0.1.10,10.0.1.11" }, /fastapi-edge:appHosts must not name the edge itself/);
  });

  it("refuses frontend alb and appRuntime container, saying why", () => {
    refuse(
      { domain: "api.example.com", frontend: "alb", route53ZoneId: "Z0123456789ABC", appHosts: "10.0.1.11" },
      /fastapi-edge:appHosts is for frontend nginx: behind the ALB .*albAutoScaling/,
    );
    refuse({ ...ec2Two, frontend: "alb", route53ZoneId: "Z0123456789ABC" }, /fastapi-edge:appHostCount is for frontend nginx/);
    refuse(
      { ...twoHosts, appRuntime: "container" },
      /fastapi-edge:appHosts needs appRuntime host for now: the containers publish their ports on 127\.0\.0\.1 only/,
    );
  });

  it("ties edgePrivateAddress, appHostCount and appHostSubnetIds to their mode", () => {
    refuse(
      { ...twoHosts, edgePrivateAddress: "" },
      /fastapi-edge:edgePrivateAddress is required when appHosts is set with hostMode existing/,
    );
    refuse({ ...twoHosts, edgePrivateAddress: "203.0.113.5" }, /fastapi-edge:edgePrivateAddress must be a private IPv4 address/);
    refuse(
      { ...base, appHosts: "10.0.1.11", edgePrivateAddress: "10.0.1.10" },
      /fastapi-edge:edgePrivateAddress must be unset with hostMode ec2/,
    );
    refuse({ ...existing }, /fastapi-edge:edgePrivateAddress is only used with appHosts/);
    refuse({ ...twoHosts, appHostCount: "2" }, /fastapi-edge:appHostCount must be 0 when appHosts is set/);
    refuse(
      { ...existing, edgePrivateAddress: "", appHostCount: "2", appHostSubnetIds: "subnet-0aaaaaaaaaaaaaaaa" },
      /fastapi-edge:appHostCount needs hostMode ec2/,
    );
    refuse({ ...base, appHostCount: "2" }, /fastapi-edge:appHostSubnetIds is required when appHostCount is above 0/);
    refuse({ ...base, appHostSubnetIds: "subnet-0aaaaaaaaaaaaaaaa" }, /fastapi-edge:appHostSubnetIds is only used with appHostCount/);
    refuse(
      { ...base, appHostCount: "17", appHostSubnetIds: "subnet-0aaaaaaaaaaaaaaaa" },
      /fastapi-edge:appHostCount must be a whole number from 0 to 16/,
    );
  });

  it("refuses before any resource exists", async () => {
    await expect(runProgram({ ...twoHosts, appRuntime: "container" }, secrets)).rejects.toThrow(/appHosts needs appRuntime host/);
  });
});

describe("app-rollout.sh on an app host: health checks dial the bind address", () => {
  it("waits on HEALTH_HOST when uvicorn binds a non-loopback-default address, and fails on 127.0.0.1", async () => {
    const state = mkdtempSync(path.join(tmpdir(), "fe-multi-"));
    const [port] = await freePorts(1);
    // 127.0.0.2 stands in for a private address: uvicorn binds it alone, as UVICORN_HOST says.
    const env = fakeSystemdEnv(state, {
      UVICORN_HOST: "127.0.0.2",
      APP_VERSION: "m1",
      HEALTH_INTERVAL: "0.2",
      WANTS_DIR: path.join(state, "wants"),
    });
    try {
      const ok = await runCmd(script("app-rollout.sh"), ["--no-prune", String(port)], {
        env: { ...env, HEALTH_HOST: "127.0.0.2", HEALTH_TIMEOUT: "60" },
        timeoutMs: 90_000,
      });
      expect(ok.code, `${ok.stdout}\n${ok.stderr}`).toBe(0);
      const h = await httpJson<{ version: string }>(`http://127.0.0.2:${port}/healthz`);
      expect([h.status, h.json.version]).toEqual([200, "m1"]);
      // Without HEALTH_HOST the check dials 127.0.0.1, where nothing listens: the rollout fails.
      const bad = await runCmd(script("app-rollout.sh"), ["--no-prune", String(port)], {
        env: { ...env, HEALTH_TIMEOUT: "3" },
        timeoutMs: 60_000,
      });
      expect(bad.code).toBe(1);
      const refused = await runCmd(script("app-rollout.sh"), ["--no-prune", String(port)], { env: { ...env, HEALTH_HOST: "10.0.1.11;x" } });
      expect([refused.code, refused.stderr]).toEqual([1, expect.stringMatching(/HEALTH_HOST must be an IPv4 address/)]);
    } finally {
      await stopPidFiles(state);
      rmSync(state, { recursive: true, force: true });
    }
  }, 120_000);
});
