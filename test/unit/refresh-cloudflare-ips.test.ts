// scripts/refresh-cloudflare-ips.sh, run for real against a local HTTP server
// on 127.0.0.1 (a port in 20000-20999) and file:// URLs: there is no internet
// here, so Cloudflare itself is never contacted. The script writes into a
// scratch copy of files/cdn (CLOUDFLARE_IPS_DIR).
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cloudflareRanges, parseCidrList } from "../../lib/cdn";
import { FILES_DIR } from "../../lib/shipped";
import { REPO_ROOT, run } from "../helpers/proc";

const SCRIPT = path.join(REPO_ROOT, "scripts", "refresh-cloudflare-ips.sh");
const SHIPPED = cloudflareRanges();

/** What the server answers per path: [status, body]. */
const routes = new Map<string, [number, string]>();
let server: http.Server;
let base = "";

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const [status, body] = routes.get(req.url ?? "") ?? [404, "not found\n"];
    res.writeHead(status, { "Content-Type": "text/plain" });
    res.end(body);
  });
  // A port in the house range, free when taken.
  for (let port = 20500 + Math.floor(Math.random() * 100); ; port++) {
    const ok = await new Promise<boolean>((resolve) => {
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => resolve(true));
    });
    if (ok) {
      base = `http://127.0.0.1:${port}`;
      break;
    }
    if (port > 20999) throw new Error("no free port in 20500-20999");
  }
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function scratch(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "fe-cfips-"));
  cpSync(path.join(FILES_DIR, "cdn"), dir, { recursive: true });
  return dir;
}

const snapshot = (dir: string) => ({
  v4: readFileSync(path.join(dir, "cloudflare-ips-v4.txt"), "utf8"),
  v6: readFileSync(path.join(dir, "cloudflare-ips-v6.txt"), "utf8"),
});

async function refresh(dir: string, v4: string, v6: string, args: string[] = []) {
  return run("bash", [SCRIPT, ...args], {
    env: { ...process.env, CLOUDFLARE_IPS_DIR: dir, CLOUDFLARE_IPS_V4_URL: v4, CLOUDFLARE_IPS_V6_URL: v6 },
    timeoutMs: 60_000,
  });
}

function serve(name: string, body: string, status = 200): string {
  routes.set(`/${name}`, [status, body]);
  return `${base}/${name}`;
}

const good4 = SHIPPED.v4.join("\n") + "\n";
const good6 = SHIPPED.v6.join("\n") + "\n";

describe("refresh-cloudflare-ips.sh", () => {
  it("rewrites a changed list with a header naming the source and date; the result parses; an unchanged list is left alone", async () => {
    const dir = scratch();
    const before = snapshot(dir);
    const v4 = serve("v4-new", good4.replace("131.0.72.0/22\n", "") + "1.1.1.0/24\n");
    const r = await refresh(dir, v4, serve("v6", good6));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("cloudflare-ips-v4.txt: changed\n");
    expect(r.stdout).toContain("\n  - 131.0.72.0/22\n");
    expect(r.stdout).toContain("\n  + 1.1.1.0/24\n");
    expect(r.stdout).toMatch(/cloudflare-ips-v6\.txt: unchanged \(7 blocks\)/);
    const after = snapshot(dir);
    expect(after.v6).toBe(before.v6);
    expect(after.v4).toContain(`# Source: ${v4}\n`);
    expect(after.v4).toMatch(/^# Retrieved: 20[0-9]{2}-[0-9]{2}-[0-9]{2} /m);
    const parsed = parseCidrList(after.v4, "v4", "refreshed");
    expect(parsed).toContain("1.1.1.0/24");
    expect(parsed).not.toContain("131.0.72.0/22");
    expect(parsed).toHaveLength(15);
    // Idempotent: the same lists again change nothing, not even the date line.
    const again = await refresh(dir, v4, serve("v6", good6));
    expect(again.code, again.stderr).toBe(0);
    expect(snapshot(dir)).toEqual(after);
  });

  it("--check reports a difference with exit 3 and writes nothing", async () => {
    const dir = scratch();
    const before = snapshot(dir);
    const r = await refresh(dir, serve("v4-plus", good4 + "1.1.1.0/24\n"), serve("v6", good6), ["--check"]);
    expect(r.code).toBe(3);
    expect(r.stdout).toContain("+ 1.1.1.0/24");
    expect(snapshot(dir)).toEqual(before);
    const same = await refresh(dir, serve("v4", good4), serve("v6", good6), ["--check"]);
    expect(same.code, same.stderr).toBe(0);
  });

  it("reads file:// URLs too", async () => {
    const dir = scratch();
    const src = mkdtempSync(path.join(tmpdir(), "fe-cfsrc-"));
    writeFileSync(path.join(src, "v4"), good4);
    writeFileSync(path.join(src, "v6"), good6 + "2001:4860::/32\n");
    const r = await refresh(dir, `file://${src}/v4`, `file://${src}/v6`);
    expect(r.code, r.stderr).toBe(0);
    expect(parseCidrList(snapshot(dir).v6, "v6", "x")).toContain("2001:4860::/32");
  });

  const refusals: [string, string, string, RegExp][] = [
    ["an HTML error page", "<html><body>Sorry, you have been blocked</body></html>\n", good6, /line 1 is not a CIDR block/],
    ["an empty body", "", good6, /0 blocks: expected between 3 and 100/],
    ["too few blocks", "173.245.48.0/20\n", good6, /1 blocks: expected between 3/],
    ["a /0", good4 + "0.0.0.0/0\n", good6, /wider than \/8/],
    ["a wide block", good4 + "64.0.0.0/4\n", good6, /wider than \/8/],
    ["a private range", good4 + "10.0.0.0/8\n", good6, /not a public range: 10\.0\.0\.0\/8/],
    ["host bits set", good4 + "1.1.1.1/24\n", good6, /host bits/],
    ["an address without prefix", good4 + "1.1.1.1\n", good6, /no prefix length/],
    ["IPv6 in the IPv4 list", good4 + "2400:cb00::/32\n", good6, /is IPv6, expected IPv4/],
    ["a duplicate", good4 + "173.245.48.0/20\n", good6, /repeats 173\.245\.48\.0\/20/],
    ["a config injection", good4 + "1.1.1.0/24; real_ip_header X\n", good6, /not a CIDR block/],
    [
      "a bad IPv6 list (the good IPv4 list is not written either)",
      good4 + "1.1.1.0/24\n",
      "2400:cb00::/32\n::/0\nfe80::/10\n",
      /wider than \/12/,
    ],
    ["a non-canonical IPv6 block", good4, good6 + "2400:CB01:0::/32\n", /canonical form/],
  ];
  for (const [i, [what, v4, v6, re]] of refusals.entries()) {
    it(`refuses ${what}; no file changes`, async () => {
      const dir = scratch();
      const before = snapshot(dir);
      const r = await refresh(dir, serve(`r4-${i}`, v4), serve(`r6-${i}`, v6));
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(re);
      expect(r.stderr).toContain("no file changed");
      expect(snapshot(dir)).toEqual(before);
    });
  }

  it("refuses a failed download (404, unreachable) and names the URL", async () => {
    const dir = scratch();
    const before = snapshot(dir);
    const r = await refresh(dir, `${base}/missing`, serve("v6", good6));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`could not download ${base}/missing`);
    expect(snapshot(dir)).toEqual(before);
    const big = await refresh(dir, serve("huge", "1.1.1.0/24\n".repeat(8000)), serve("v6", good6));
    expect(big.code).toBe(1);
    expect(snapshot(dir)).toEqual(before);
  });
});
