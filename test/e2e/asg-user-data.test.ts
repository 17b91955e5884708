// albAutoScaling's first boot on a real machine: a fresh Debian 13 guest (test/e2e/vps.sh on
// its own ports, a new copy-on-write disk over the blank base image, as a new instance gets)
// runs the user data the launch template carries, rendered by the same functions
// components/asg.ts calls, as cloud-init would (root, once). The release bundle is the
// program's own (lib/asg.ts releaseBundle: the app with its requirements.txt, the
// wheelhouse, the host scripts, the unit), served by an HTTP server on this machine standing
// in for S3; the guest reaches it at 10.0.2.2. What runs is real: apt, python3 -m venv, pip
// from the wheelhouse, systemd units, uvicorn.
//
// The guest's own port 8000 is forwarded to 127.0.0.1 here: those connections arrive from
// 10.0.2.2, inside the block the user data trusts as "the VPC" (10.0.2.0/24), which is how an
// ALB's connections arrive, so the forwarded headers are checked for real (uvicorn 0.33+
// accepts a CIDR). A connection from the guest's own loopback is outside it.
import { createServer, type Server } from "node:http";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { releaseBundle, releaseKey, renderUserData } from "../../lib/asg";
import { appPorts, parseConfig } from "../../lib/config";
import { pythonDeps } from "../../lib/pyapp";
import { releaseId } from "../../components/app";
import { userDataSettings } from "../../components/asg";
import { freePorts } from "../helpers/proc";
import { testWheelhouse } from "../helpers/wheels";
import { MIN, parseEnv, REPO, sh, type Run } from "./engine";

const ART = path.join(REPO, "test/artifacts");
const LOG = path.join(ART, "e2e-asg.log");
const VENV_APP = path.join(REPO, "test/fixtures/app-venv");
/** This guest's ports: apart from the scenario's (2222...) and scripts/up.sh's (2322...). */
const GUEST = { VPS_SSH_PORT: "2242", VPS_HTTP_PORT: "8190", VPS_HTTPS_PORT: "8553", VPS_ACME_HTTP_PORT: "5012" };
/** "The VPC" the user data trusts forwarded headers from: QEMU's user network, whose gateway 10.0.2.2 the forwarded port's connections come from. */
const VPC_CIDR = "10.0.2.0/24";

type Env = Record<string, string>;
let work = "";
let vps: Env = {};
let sshOpts: string[] = [];
let server: Server | undefined;
let appPortHere = 0;
let served = 0;

async function harness(args: string[], timeoutMs: number, extraEnv: Env = {}): Promise<Env> {
  const r = await sh(path.join(REPO, "test/e2e/vps.sh"), args, { timeoutMs, logFile: LOG, env: { ...process.env, ...GUEST, ...extraEnv } });
  if (r.code !== 0) throw new Error(`vps.sh ${args.join(" ")} failed:\n${r.out}`);
  return parseEnv(r.out);
}

function guest(command: string, input?: string, timeoutMs = 5 * MIN): Promise<Run> {
  return sh("ssh", [...sshOpts, command], { logFile: LOG, timeoutMs, ...(input !== undefined ? { input } : {}) });
}

async function appJson(urlPath: string, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${appPortHere}${urlPath}`, { headers, signal: AbortSignal.timeout(30_000) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

// The program's config for an ASG behind the ALB, on the guest's OS.
const c = parseConfig({
  domain: "api.example.com",
  frontend: "alb",
  route53ZoneId: "Z0123456789ABC",
  appSource: VENV_APP,
  albAutoScaling: "true",
  albAsgSubnetIds: "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
  hostOs: "debian-13",
  appVersion: "asg-e2e-1",
  // FastAPI from the distribution (python3-fastapi), uvicorn 0.33+ and edge-probe from the
  // wheelhouse: the fixture's requirements.txt names only those two.
  appVenvSystemPackages: "true",
});
const deps = pythonDeps({ requirementsTxt: readFileSync(path.join(VENV_APP, "requirements.txt"), "utf8") });

/** The user data as components/asg.ts renders it, with an http:// URL instead of s3://. */
function userData(release: string, url: string, sha256: string): string {
  return renderUserData(userDataSettings(c, deps, { release, url, sha256, versionId: "", region: "", vpcCidr: VPC_CIDR }));
}

describe("albAutoScaling: the user data on a fresh guest, the bundle from a local stand-in for S3", () => {
  let release = "";
  let bundle: { archive: Buffer; sha256: string };
  let firstBoot: Run;

  beforeAll(async () => {
    writeFileSync(LOG, "");
    work = mkdtempSync(path.join(tmpdir(), "fe-e2e-asg-"));
    const wheelhouse = testWheelhouse();
    release = releaseId(c, VENV_APP, deps, wheelhouse);
    bundle = releaseBundle(VENV_APP, wheelhouse);
    // The stand-in for S3: GET /releases/ID.tar.gz, nothing else.
    const [s3Port, fwd] = await freePorts(2);
    appPortHere = fwd!;
    server = createServer((req, res) => {
      if (req.method === "GET" && req.url === `/${releaseKey(release)}`) {
        served++;
        res.writeHead(200, { "Content-Type": "application/gzip", "Content-Length": bundle.archive.length });
        res.end(bundle.archive);
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => server!.listen(s3Port, "127.0.0.1", resolve));
    writeFileSync(path.join(work, "s3-port"), String(s3Port));

    await harness(["image"], 40 * MIN);
    await harness(["stop"], MIN);
    vps = {
      ...(await harness(["env"], MIN)),
      ...(await harness(["start"], 10 * MIN, { VPS_EXTRA_HOSTFWD: `tcp:127.0.0.1:${appPortHere}-:${appPorts(c)[0]}` })),
    };
    const hostKey = readFileSync(vps["VPS_HOST_KEY_FILE"]!, "utf8").trim().split(" ").slice(0, 2).join(" ");
    writeFileSync(path.join(work, "known_hosts"), `[127.0.0.1]:${vps["VPS_SSH_PORT"]} ${hostKey}\n`);
    sshOpts = [
      ...["-p", vps["VPS_SSH_PORT"]!, "-i", vps["VPS_KEY"]!],
      ...["-o", `UserKnownHostsFile=${path.join(work, "known_hosts")}`, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"],
      "root@127.0.0.1",
    ];
    const text = userData(release, `http://10.0.2.2:${s3Port}/${releaseKey(release)}`, bundle.sha256);
    writeFileSync(path.join(work, "user-data"), text);
    // cloud-init runs the user data as a file, as root: the same here.
    firstBoot = await guest("cat > /root/user-data && chmod 0700 /root/user-data && /root/user-data", text, 30 * MIN);
    console.log(
      `first boot's user data: exit ${firstBoot.code} in ${firstBoot.seconds.toFixed(0)} s\n${firstBoot.out.split("\n").slice(-25).join("\n")}`,
    );
  }, 60 * MIN);

  afterAll(async () => {
    server?.close();
    await sh(path.join(REPO, "test/e2e/vps.sh"), ["stop"], { timeoutMs: 2 * MIN, logFile: LOG, env: { ...process.env, ...GUEST } });
    if (work) rmSync(work, { recursive: true, force: true });
  }, 3 * MIN);

  it("installs the release and starts the app healthy under systemd, from the bundle it fetched once", async () => {
    expect(firstBoot.code, firstBoot.out).toBe(0);
    expect(firstBoot.out).toContain(`release ${release} is live on ports ${appPorts(c).join(" ")}`);
    expect(served).toBe(1);
    for (const port of appPorts(c)) {
      const st = await guest(`systemctl is-active fastapi-edge-app@${port}.service; systemctl is-enabled fastapi-edge-app@${port}.service`);
      expect(st.out.trim().split("\n")).toEqual(["active", "enabled"]);
    }
    const link = await guest("readlink /opt/fastapi-edge/app");
    expect(link.out.trim()).toBe(`/opt/fastapi-edge/releases/${release}`);
    const h = await appJson("/healthz");
    expect([h.status, h.json["version"]]).toEqual([200, "asg-e2e-1"]);
  });

  it("runs the app from the release's virtualenv with the wheelhouse's uvicorn (0.33+), not the distribution's", async () => {
    const probe = await appJson("/api/probe");
    console.log(`/api/probe: ${JSON.stringify(probe.json)}`);
    expect(probe.status).toBe(200);
    expect(probe.json["venv"]).toBe(true);
    expect(String(probe.json["prefix"])).toMatch(new RegExp(`^/opt/fastapi-edge/releases/${release}/`));
    const [major, minor] = String(probe.json["uvicorn"]).split(".").map(Number);
    expect(major! > 0 || minor! >= 33, `uvicorn ${probe.json["uvicorn"]}`).toBe(true);
  });

  it("trusts X-Forwarded-* from the VPC block only (the ALB's side), not from the instance's own loopback", async () => {
    const fwd = { "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https" };
    const viaVpc = await appJson("/api/whoami", fwd);
    expect(viaVpc.json).toEqual({ client: "203.0.113.9", scheme: "https" });
    const port = appPorts(c)[0];
    const local = await guest(
      `curl -sS --max-time 20 -H 'X-Forwarded-For: 203.0.113.9' -H 'X-Forwarded-Proto: https' http://127.0.0.1:${port}/api/whoami`,
    );
    expect(JSON.parse(local.out.trim())).toEqual({ client: "127.0.0.1", scheme: "http" });
  });

  it("refuses a bundle whose sha256 differs (exit 1) and leaves the running release alone", async () => {
    const s3Port = readFileSync(path.join(work, "s3-port"), "utf8");
    const bad = userData(release, `http://10.0.2.2:${s3Port}/${releaseKey(release)}`, "0".repeat(64));
    const r = await guest("cat > /root/user-data-bad && chmod 0700 /root/user-data-bad && /root/user-data-bad", bad, 10 * MIN);
    expect(r.code, r.out).toBe(1);
    expect(r.out).toMatch(/the bundle's sha256 is [0-9a-f]{64}, not 0{64}: refused/);
    const h = await appJson("/healthz");
    expect([h.status, h.json["version"]]).toEqual([200, "asg-e2e-1"]);
    const link = await guest("readlink /opt/fastapi-edge/app; ls /var/tmp | grep -c '^fastapi-edge' || true");
    expect(link.out.trim().split("\n")).toEqual([`/opt/fastapi-edge/releases/${release}`, "0"]);
  });
});
