// Live test of files/scripts/cert-expiry-check.sh with real openssl
// certificates, a real `openssl s_server`, a fake `aws` CLI and a fake IMDSv2.
// The check fires on the fraction of the lifetime left,
// floor(100 * (notAfter - now) / (notAfter - notBefore)) < WARN_PERCENT (25),
// never on days: a 3-day certificate with 2 days left is fine, a 400-day one
// with 50 days left is not. NOW_EPOCH places "now" within a certificate's life.
// (test/live/acme-profiles.test.ts runs the same script on certificates from
// a real certbot and Pebble.)
import net from "node:net";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ecKeyReqArgs } from "../helpers/nginx-fixture";
import { run, script, startProcess, stopAll, waitForPort, type RunResult } from "../helpers/proc";

let dir = "";
let shortCert = "";
let shortKey = "";
let longCert = "";
let fakeBin = "";
let awsLog = "";
let shortNotAfter = 0;
let shortNotBefore = 0;
let longNotAfter = 0;
let tlsPort = 0;

const DAY = 86400;

/** A free TCP port on 127.0.0.1 within this test's range (24600-24699). */
async function rangePort(lo = 24600, hi = 24699): Promise<number> {
  const start = lo + Math.floor(Math.random() * (hi - lo + 1));
  for (let i = 0; i <= hi - lo; i++) {
    const port = lo + ((start - lo + i) % (hi - lo + 1));
    const free = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once("error", () => resolve(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error(`no free port in ${lo}-${hi}`);
}

async function makeCert(name: string, days: number, cn: string): Promise<{ cert: string; key: string }> {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  const res = await run("openssl", ecKeyReqArgs({ keyout: key, out: cert, days, subj: `/CN=${cn}` }));
  expect(res.code, res.stderr).toBe(0);
  return { cert, key };
}

async function dateEpoch(cert: string, which: "startdate" | "enddate"): Promise<number> {
  const res = await run("openssl", ["x509", "-noout", `-${which}`, "-dateopt", "iso_8601", "-in", cert]);
  // notAfter=2026-11-27 03:23:00Z
  const iso = res.stdout
    .trim()
    .replace(/^not(After|Before)=/, "")
    .replace(" ", "T");
  const ms = Date.parse(iso);
  expect(Number.isNaN(ms)).toBe(false);
  return ms / 1000;
}

function check(args: string[], extra: Record<string, string | undefined> = {}): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${fakeBin}:${process.env.PATH ?? ""}` };
  delete env.AWS_REGION;
  delete env.AWS_DEFAULT_REGION;
  delete env.WARN_PERCENT;
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
    "CertificateLifetimeLeftPercent",
    "--dimensions",
    `Domain=${domain}`,
    "--value",
    String(value),
    "--unit",
    "Percent",
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
  shortNotAfter = await dateEpoch(shortCert, "enddate");
  shortNotBefore = await dateEpoch(shortCert, "startdate");
  longNotAfter = await dateEpoch(longCert, "enddate");
  expect(shortNotAfter - shortNotBefore).toBe(3 * DAY);

  // Fake aws CLI: records each call's argv (one per line) and can be made to fail.
  fakeBin = path.join(dir, "bin");
  mkdirSync(fakeBin);
  awsLog = path.join(dir, "aws-calls.log");
  writeFileSync(
    path.join(fakeBin, "aws"),
    `#!/usr/bin/env bash\nprintf '%s\\n' "$@" >> '${awsLog}'\nprintf -- '--\\n' >> '${awsLog}'\nexit "\${FAKE_AWS_EXIT:-0}"\n`,
  );
  chmodSync(path.join(fakeBin, "aws"), 0o755);

  tlsPort = await rangePort();
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
  it("a fresh certificate, short or long, has (nearly) all its lifetime left: exit 0", async () => {
    for (const cert of [shortCert, longCert]) {
      const res = await check([cert]);
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout).toMatch(/^percent_left=(99|100) days_left=\d+\n$/);
      expect(res.stderr).toBe("");
    }
  });

  it("fires on the fraction, not on days: 3-day cert with 2 days left is fine, 400-day cert with 50 days left is not", async () => {
    const short2d = await check([shortCert], { NOW_EPOCH: String(shortNotAfter - 2 * DAY) });
    expect(short2d.code, short2d.stderr).toBe(0);
    expect(short2d.stdout).toBe("percent_left=66 days_left=2\n");
    const long50d = await check([longCert], { NOW_EPOCH: String(longNotAfter - 50 * DAY) });
    expect(long50d.code).toBe(2);
    expect(long50d.stdout).toBe("percent_left=12 days_left=50\n");
    expect(long50d.stderr).toMatch(
      /WARNING: certificate from .*long\.crt has 12% of its 400-day lifetime left, below threshold 25%: it expires in 50 day\(s\)/,
    );
  });

  it("is exact at the threshold with NOW_EPOCH: 25% left passes, one second less fires; negative once expired", async () => {
    const at = async (secondsBefore: number): Promise<RunResult> =>
      check([shortCert], { NOW_EPOCH: String(shortNotAfter - secondsBefore) });
    const quarter = (3 * DAY) / 4; // 18 hours
    const edge = await at(quarter);
    expect(edge.stdout).toBe("percent_left=25 days_left=0\n");
    expect(edge.code).toBe(0);
    const below = await at(quarter - 1);
    expect(below.stdout).toBe("percent_left=24 days_left=0\n");
    expect(below.code).toBe(2);
    expect(below.stderr).toMatch(/has 24% of its 3-day lifetime left, below threshold 25%: it expires in 0 day\(s\)/);
    const expired = await at(-1);
    expect(expired.stdout).toBe("percent_left=-1 days_left=-1\n");
    expect(expired.code).toBe(2);
    expect((await at(-DAY)).stdout).toBe("percent_left=-34 days_left=-1\n");
    expect((await at(-DAY - 1)).stdout).toBe("percent_left=-34 days_left=-2\n");
  });

  it("honours WARN_PERCENT and --warn-percent, and refuses thresholds that are not 0-100", async () => {
    const now = { NOW_EPOCH: String(shortNotBefore + 2 * DAY) }; // 33% left
    expect((await check([shortCert], now)).code).toBe(0);
    expect((await check([shortCert], { ...now, WARN_PERCENT: "34" })).code).toBe(2);
    expect((await check(["--warn-percent", "34", shortCert], now)).code).toBe(2);
    expect((await check(["--warn-percent", "33", shortCert], now)).code).toBe(0);
    for (const bad of ["101", "-1", "25%", "1e2", ""]) {
      const res = await check(["--warn-percent", bad, shortCert]);
      expect(res.code, bad).toBe(1);
      expect(res.stderr).toMatch(/WARN_PERCENT\/--warn-percent must be a whole number from 0 to 100/);
    }
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
    expect((await check(["--warn-days", "14", shortCert])).code).toBe(64);
    expect((await check([shortCert, "--host", "127.0.0.1"])).code).toBe(64);
  });
});

describe("cert-expiry-check.sh --publish", () => {
  it("publishes the percentage via aws cloudwatch put-metric-data with AWS_REGION and the cert's CN as Domain", async () => {
    rmSync(awsLog, { force: true });
    const now = String(shortNotAfter - 0.5 * DAY); // 16% left
    const res = await check(["--publish", shortCert], { AWS_REGION: "eu-west-1", NOW_EPOCH: now });
    expect(res.code).toBe(2); // below threshold, still published
    expect(res.stdout).toBe("percent_left=16 days_left=0\n");
    expect(awsCalls()).toEqual([expectedAwsArgs("short.example.com", 16, "eu-west-1")]);
    expect(res.stderr).toMatch(
      /published CertificateLifetimeLeftPercent=16 for Domain=short\.example\.com in eu-west-1 \(0 day\(s\) left\)/,
    );
  });

  it("uses --domain over the CN and exits 0 for a healthy cert", async () => {
    rmSync(awsLog, { force: true });
    const res = await check(["--publish", "--domain", "api.example.org", longCert], { AWS_DEFAULT_REGION: "us-east-2" });
    expect(res.code, res.stderr).toBe(0);
    const value = Number(/^percent_left=(\d+) /.exec(res.stdout)?.[1]);
    expect(value).toBeGreaterThanOrEqual(99);
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
      const res = await check(["--publish", "--warn-percent", "0", shortCert], {
        AWS_EC2_METADATA_SERVICE_ENDPOINT: `http://127.0.0.1:${port}`,
        NOW_EPOCH: String(shortNotAfter - 0.5 * DAY),
      });
      expect(res.code, res.stderr).toBe(0);
      expect(seen).toEqual(["PUT /latest/api/token", "GET /latest/meta-data/placement/region"]);
      expect(awsCalls()).toEqual([expectedAwsArgs("short.example.com", 16, "ap-southeast-2")]);
    } finally {
      await new Promise<void>((resolve) => imds.close(() => resolve()));
    }
  });

  it("fails with exit 1 when no region can be found or aws fails", async () => {
    const closed = await rangePort();
    const noRegion = await check(["--publish", longCert], { AWS_EC2_METADATA_SERVICE_ENDPOINT: `http://127.0.0.1:${closed}` });
    expect(noRegion.code).toBe(1);
    expect(noRegion.stdout).toMatch(/^percent_left=\d+ days_left=\d+\n$/);
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
      NOW_EPOCH: String(shortNotAfter - 0.5 * DAY),
    });
    expect(res.code).toBe(2);
    expect(res.stdout).toBe("percent_left=16 days_left=0\n");
    expect(awsCalls()).toEqual([expectedAwsArgs("short.example.com", 16, "eu-central-1")]);
  });

  it("matches file mode without NOW_EPOCH", async () => {
    const now = { NOW_EPOCH: String(shortNotBefore + DAY) };
    const live = await check(["--host", "127.0.0.1", "--port", String(tlsPort)], now);
    const file = await check([shortCert], now);
    expect(live.stdout).toBe("percent_left=66 days_left=2\n");
    expect(live.stdout).toBe(file.stdout);
    expect(live.code).toBe(0);
  });

  it("exits 1 when nothing is listening", async () => {
    const closed = await rangePort();
    const res = await check(["--host", "127.0.0.1", "--port", String(closed)], { CONNECT_TIMEOUT: "5" });
    expect(res.code).toBe(1);
    expect(res.stdout).toBe("");
    expect(res.stderr).toMatch(/could not read a certificate from 127\.0\.0\.1:\d+/);
  });
});
