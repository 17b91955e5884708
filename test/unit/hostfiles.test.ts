// The manifest of host files (lib/hostfiles.ts) is the only list of what each
// step puts on a host: every step's stdin carries exactly its files, and
// every shipped script reaches a host.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../lib/config";
import {
  acmeBootstrapStage,
  appDeployFiles,
  certificateFiles,
  expiryTimerFiles,
  HOST_SCRIPTS,
  HostFile,
  hostInstallFiles,
  readAcmeCaBundle,
  rolloutSettleSeconds,
  siteFiles,
  waitForBootShell,
} from "../../lib/hostfiles";
import { FAKE_PRIVATE_KEY, runProgram } from "../helpers/mocks";
import { makeCa } from "../helpers/nginx-fixture";

const REPO = path.resolve(__dirname, "../..");
const scratch = mkdtempSync(path.join(tmpdir(), "fe-hostfiles-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** How fileWriteLines writes a file: its text between the heredoc markers. */
function written(f: HostFile, base = ""): string {
  const dest = base ? `"${base}/${f.path}.tmp"` : `'${f.path}.tmp'`;
  return `cat > ${dest} <<'FASTAPI_EDGE_EOF'\n${f.content.replace(/\n$/, "")}\nFASTAPI_EDGE_EOF\n`;
}

/** The paths a step's stdin writes, in order. */
function writtenPaths(stdin: string): string[] {
  return [...stdin.matchAll(/^cat > ['"](?:\$stage\/)?(.*)\.tmp['"] <<'FASTAPI_EDGE_EOF'$/gm)].map((m) => m[1]!);
}

describe("each step pushes exactly its manifest", () => {
  const ca = makeCa(path.join(scratch, "ca"), ["pebble"]);
  const raw = {
    domain: "api.example.com",
    email: "ops@example.com",
    hostMode: "existing",
    hostAddress: "192.0.2.5",
    acme: "custom",
    acmeDirectoryUrl: "https://pebble:14000/dir",
    acmeCaBundle: ca.caCert,
    alertEmail: "oncall@example.com",
  };

  it("bootstrap-install, app-deploy, nginx-acme-bootstrap, nginx-certificate, nginx-site, cert-expiry-timer", async () => {
    const run = await runProgram(raw, { secrets: { hostPrivateKey: FAKE_PRIVATE_KEY } });
    const c = parseConfig(raw);
    const stdin = (name: string) => String((run.one("command:remote:Command", name).inputs as { stdin: string }).stdin);
    const expectStep = (name: string, files: HostFile[], stage: HostFile[] = []) => {
      const text = stdin(name);
      expect(writtenPaths(text), name).toEqual([...files.map((f) => f.path), ...stage.map((f) => f.path)]);
      for (const f of files) expect(text, `${name}: ${f.path}`).toContain(written(f));
      for (const f of stage) expect(text, `${name}: ${f.path}`).toContain(written(f, "$stage"));
    };
    expect(stdin("bootstrap-wait-ssh")).toBe(waitForBootShell());
    expectStep("bootstrap-install", hostInstallFiles());
    expectStep("app-deploy", appDeployFiles(c, "127.0.0.1"));
    expectStep("nginx-acme-bootstrap", [], acmeBootstrapStage(c));
    expectStep("nginx-certificate", certificateFiles(readAcmeCaBundle(c, REPO)));
    const site = siteFiles(c);
    expectStep("nginx-site", [site.dropIn], site.stage);
    expectStep("cert-expiry-timer", expiryTimerFiles(c, "eu-west-1"));
  });

  it("refuses an ACME CA bundle that holds no certificate", () => {
    const bad = path.join(scratch, "bad.pem");
    writeFileSync(bad, "not a certificate\n");
    expect(() => readAcmeCaBundle(parseConfig({ ...raw, acmeCaBundle: bad }), REPO)).toThrow(
      /acmeCaBundle must be a PEM file of certificates/,
    );
    expect(readAcmeCaBundle(parseConfig({ ...raw, acme: "letsencrypt", acmeDirectoryUrl: "", acmeCaBundle: "" }), REPO)).toBeUndefined();
  });
});

describe("shipped scripts", () => {
  it("every script in files/scripts reaches a host: installed by bootstrap-install, or pushed by the step that needs it", () => {
    const elsewhere: Record<string, string> = {
      "certbot-deploy-hook.sh": "nginx-certificate, as certbot's deploy hook",
      "wait-for-boot.sh": "bootstrap-wait-ssh, as its stdin (it runs before anything is installed)",
      "log-window.sh": "npm run logs, as the stdin of its SSH command (read-only, never installed)",
      "asg-user-data.sh": "albAutoScaling: the launch template's user data (components/asg.ts), run by cloud-init on first boot",
    };
    const scripts = readdirSync(path.join(REPO, "files", "scripts")).filter((f) => f.endsWith(".sh"));
    for (const s of scripts)
      expect((HOST_SCRIPTS as readonly string[]).includes(s) || s in elsewhere, `${s} is shipped but no step puts it on a host`).toBe(true);
    expect(certificateFiles(undefined).map((f) => f.content)).toContain(
      readFileSync(path.join(REPO, "files", "scripts", "certbot-deploy-hook.sh"), "utf8"),
    );
    expect(waitForBootShell()).toBe(readFileSync(path.join(REPO, "files", "scripts", "wait-for-boot.sh"), "utf8"));
  });
});

describe("lib/", () => {
  it("imports no Pulumi package: npm run render and the tests use it without an engine", () => {
    const files: string[] = [];
    const walk = (d: string): void => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(path.join(d, e.name));
        else if (e.name.endsWith(".ts")) files.push(path.join(d, e.name));
      }
    };
    walk(path.join(REPO, "lib"));
    expect(files.length).toBeGreaterThan(10);
    for (const f of files) expect(readFileSync(f, "utf8"), path.relative(REPO, f)).not.toMatch(/from "@pulumi\//);
  });
});

describe("the pause between two instances of a rolling restart", () => {
  const raw = { domain: "api.example.com", email: "ops@example.com", hostMode: "existing", hostAddress: "192.0.2.5" };
  it("covers fail_timeout, and proxy_connect_timeout too where a connect can fail late (containers, app hosts)", () => {
    expect(rolloutSettleSeconds(parseConfig(raw))).toBe(12);
    expect(rolloutSettleSeconds(parseConfig({ ...raw, upstreamFailTimeout: "20s" }))).toBe(22);
    expect(rolloutSettleSeconds(parseConfig({ ...raw, appRuntime: "container" }))).toBe(17);
    expect(rolloutSettleSeconds(parseConfig({ ...raw, appRuntime: "container", proxyConnectTimeout: "2s" }))).toBe(14);
    expect(rolloutSettleSeconds(parseConfig({ ...raw, appHosts: "10.0.1.11,10.0.1.12", edgePrivateAddress: "10.0.1.5" }))).toBe(17);
    expect(rolloutSettleSeconds(parseConfig({ ...raw, upstreamMaxFails: "0" }))).toBe(0);
  });
});
