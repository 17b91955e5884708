// Live test of files/scripts/cert-expiry-check.sh with real openssl
// certificates, a real `openssl s_server`, a fake `aws` CLI and a fake IMDSv2.
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ecKeyReqArgs } from "../helpers/nginx-fixture";
import { freePort, run, script, startProcess, stopAll, waitForPort, type RunResult } from "../helpers/proc";

let dir = "";
let shortCert = "";
let shortKey = "";
let longCert = "";
let fakeBin = "";
let awsLog = "";
let shortNotAfter = 0;
let tlsPort = 0;

async function makeCert(name: string, days: number, cn: string): Promise<{ cert: string; key: string }> {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  const res = await run("openssl", ecKeyReqArgs({ keyout: key, out: cert, days, subj: `/CN=${cn}` }));
  expect(res.code, res.stderr).toBe(0);
  return { cert, key };
}

async function notAfterEpoch(cert: string): Promise<number> {
  const res = await run("openssl", ["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in", cert]);
  // notAfter=2026-11-27 03:23:00Z
  const iso = res.stdout
    .trim()
    .replace(/^notAfter=/, "")
    .replace(" ", "T");
  const ms = Date.parse(iso);
  expect(Number.isNaN(ms)).toBe(false);
  return ms / 1000;
}

function check(args: string[], extra: Record<string, string | undefined> = {}): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${fakeBin}:${process.env.PATH ?? ""}` };
  delete env.AWS_REGION;
  delete env.AWS_DEFAULT_REGION;
  delete env.WARN_DAYS;
  delete env.NOW_EPOCH;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return run(script("cert-expiry-check.sh"), args, { env });
}

function awsCalls(): string[][] {
  let text = "";
  try {
    text = readFileSync(awsLog, "utf8");
  } catch {
    return [];
  }
  return text
    .split("\n--\n")
    .filter((c) => c.trim() !== "")
    .map((c) => c.split("\n").filter((l) => l !== ""));
}

function expectedAwsArgs(domain: string, value: number, region: string): string[] {
  return [
    "cloudwatch",
    "put-metric-data",
    "--namespace",
    "FastapiEdge",
    "--metric-name",
    "CertificateDaysToExpiry",
    "--dimensions",
    `Domain=${domain}`,
    "--value",
    String(value),
    "--unit",
    "Count",
    "--region",
    region,
  ];
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-cert-test-"));
  const short = await makeCert("short", 3, "short.example.com");
  shortCert = short.cert;
  shortKey = short.key;
  longCert = (await makeCert("long", 400, "long.example.com")).cert;
  shortNotAfter = await notAfterEpoch(shortCert);

  // Fake aws CLI: records each call's argv (one per line) and can be made to fail.
  fakeBin = path.join(dir, "bin");
  mkdirSync(fakeBin);
  awsLog = path.join(dir, "aws-calls.log");
  writeFileSync(
    path.join(fakeBin, "aws"),
    `#!/usr/bin/env bash\nprintf '%s\\n' "$@" >> '${awsLog}'\nprintf -- '--\\n' >> '${awsLog}'\nexit "\${FAKE_AWS_EXIT:-0}"\n`,
  );
  chmodSync(path.join(fakeBin, "aws"), 0o755);

  tlsPort = await freePort();
  const server = startProcess("openssl", [
    "s_server",
    "-accept",
    `127.0.0.1:${tlsPort}`,
    "-cert",
    shortCert,
    "-key",
    shortKey,
    "-www",
    "-quiet",
  ]);
  await waitForPort(tlsPort, 10_000, "127.0.0.1", server);
});

afterAll(async () => {
  await stopAll();
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

describe("cert-expiry-check.sh (file mode)", () => {
  it("prints floor(days_left) and exits 2 below the default 14-day threshold", async () => {
    const res = await check([shortCert]);
    expect(res.code).toBe(2);
    expect(["days_left=2\n", "days_left=3\n"]).toContain(res.stdout); // 3 only within the issuing second
    expect(res.stderr).toMatch(/WARNING: certificate .* expires in [23] day\(s\).*below threshold 14/);
  });

  it("is exact with NOW_EPOCH: rounds down, and goes negative once expired", async () => {
    const at = async (secondsBefore: number): Promise<RunResult> =>
      check([shortCert], { NOW_EPOCH: String(shortNotAfter - secondsBefore) });
    expect((await at(2.5 * 86400)).stdout).toBe("days_left=2\n");
    expect((await at(3 * 86400)).stdout).toBe("days_left=3\n");
    expect((await at(86400 - 1)).stdout).toBe("days_left=0\n");
    const expired = await at(-1);
    expect(expired.stdout).toBe("days_left=-1\n");
    expect(expired.code).toBe(2);
    expect((await at(-86400)).stdout).toBe("days_left=-1\n");
    expect((await at(-86401)).stdout).toBe("days_left=-2\n");
  });

  it("exits 0 for a long-lived certificate", async () => {
    const res = await check([longCert]);
    expect(res.code, res.stderr).toBe(0);
    expect(["days_left=399\n", "days_left=400\n"]).toContain(res.stdout);
    expect(res.stderr).toBe("");
  });

  it("honours WARN_DAYS and --warn-days", async () => {
    expect((await check([shortCert], { WARN_DAYS: "1" })).code).toBe(0);
    expect((await check(["--warn-days", "1", shortCert])).code).toBe(0);
    expect((await check(["--warn-days", "500", longCert])).code).toBe(2);
  });

  it("fails with exit 1 on unreadable or non-certificate input, 64 on bad usage", async () => {
    const missing = await check([path.join(dir, "nope.pem")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read certificate file/);
    const notCert = path.join(dir, "not-a-cert.pem");
    writeFileSync(notCert, "hello\n");
    const bad = await check([notCert]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/does not contain a PEM certificate/);
    expect((await check([])).code).toBe(64);
    expect((await check(["--bogus"])).code).toBe(64);
    expect((await check([shortCert, "--host", "127.0.0.1"])).code).toBe(64);
  });
});

describe("cert-expiry-check.sh --publish", () => {
  it("publishes via aws cloudwatch put-metric-data with AWS_REGION and the cert's CN as Domain", async () => {
    rmSync(awsLog, { force: true });
    const now = String(shortNotAfter - 2.5 * 86400);
    const res = await check(["--publish", shortCert], { AWS_REGION: "eu-west-1", NOW_EPOCH: now });
    expect(res.code).toBe(2); // still below threshold, still published
    expect(res.stdout).toBe("days_left=2\n");
    expect(awsCalls()).toEqual([expectedAwsArgs("short.example.com", 2, "eu-west-1")]);
    expect(res.stderr).toMatch(/published CertificateDaysToExpiry=2 for Domain=short\.example\.com in eu-west-1/);
  });

  it("uses --domain over the CN and exits 0 for a healthy cert", async () => {
    rmSync(awsLog, { force: true });
    const res = await check(["--publish", "--domain", "api.example.org", longCert], { AWS_DEFAULT_REGION: "us-east-2" });
    expect(res.code, res.stderr).toBe(0);
    const value = Number(res.stdout.trim().split("=")[1]);
    expect(awsCalls()).toEqual([expectedAwsArgs("api.example.org", value, "us-east-2")]);
  });

  it("reads the region from IMDSv2 (token PUT, then GET with the token) when no region is set", async () => {
    rmSync(awsLog, { force: true });
    const seen: string[] = [];
    const imds = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      if (req.method === "PUT" && req.url === "/latest/api/token" && req.headers["x-aws-ec2-metadata-token-ttl-seconds"] !== undefined) {
        res.end("TOKEN123");
      } else if (
        req.method === "GET" &&
        req.url === "/latest/meta-data/placement/region" &&
        req.headers["x-aws-ec2-metadata-token"] === "TOKEN123"
      ) {
        res.end("ap-southeast-2");
      } else {
        res.statusCode = 401;
        res.end();
      }
    });
    await new Promise<void>((resolve) => imds.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = imds.address() as AddressInfo;
      const res = await check(["--publish", "--warn-days", "0", shortCert], {
        AWS_EC2_METADATA_SERVICE_ENDPOINT: `http://127.0.0.1:${port}`,
        NOW_EPOCH: String(shortNotAfter - 2.5 * 86400),
      });
      expect(res.code, res.stderr).toBe(0);
      expect(seen).toEqual(["PUT /latest/api/token", "GET /latest/meta-data/placement/region"]);
      expect(awsCalls()).toEqual([expectedAwsArgs("short.example.com", 2, "ap-southeast-2")]);
    } finally {
      await new Promise<void>((resolve) => imds.close(() => resolve()));
    }
  });

  it("fails with exit 1 when no region can be found or aws fails", async () => {
    const closed = await freePort();
    const noRegion = await check(["--publish", longCert], { AWS_EC2_METADATA_SERVICE_ENDPOINT: `http://127.0.0.1:${closed}` });
    expect(noRegion.code).toBe(1);
    expect(noRegion.stdout).toMatch(/^days_left=\d+\n$/);
    expect(noRegion.stderr).toMatch(/no AWS_REGION set and IMDSv2 token request .* failed/);
    const awsFails = await check(["--publish", longCert], { AWS_REGION: "eu-west-1", FAKE_AWS_EXIT: "255" });
    expect(awsFails.code).toBe(1);
    expect(awsFails.stderr).toMatch(/put-metric-data failed/);
  });
});

describe("cert-expiry-check.sh (live mode via openssl s_client)", () => {
  it("reads the served certificate and uses --servername as the Domain", async () => {
    rmSync(awsLog, { force: true });
    const res = await check(["--host", "127.0.0.1", "--port", String(tlsPort), "--servername", "short.example.com", "--publish"], {
      AWS_REGION: "eu-central-1",
      NOW_EPOCH: String(shortNotAfter - 2.5 * 86400),
    });
    expect(res.code).toBe(2);
    expect(res.stdout).toBe("days_left=2\n");
    expect(awsCalls()).toEqual([expectedAwsArgs("short.example.com", 2, "eu-central-1")]);
  });

  it("matches file mode without NOW_EPOCH", async () => {
    const live = await check(["--host", "127.0.0.1", "--port", String(tlsPort)]);
    const file = await check([shortCert]);
    expect(live.stdout).toBe(file.stdout);
    expect(live.code).toBe(2);
  });

  it("exits 1 when nothing is listening", async () => {
    const closed = await freePort();
    const res = await check(["--host", "127.0.0.1", "--port", String(closed)], { CONNECT_TIMEOUT: "5" });
    expect(res.code).toBe(1);
    expect(res.stdout).toBe("");
    expect(res.stderr).toMatch(/could not read a certificate from 127\.0\.0\.1:\d+/);
  });
});
