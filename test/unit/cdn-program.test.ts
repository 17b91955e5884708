// frontedBy in the resource graph (Pulumi mocks): the EC2 security group with
// restrictHttpToCdn, and what the nginx-site step pushes.
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { cloudflareRanges } from "../../lib/cdn";
import { runProgram, type ProgramRun } from "../helpers/mocks";

const nginxEc2 = { domain: "api.example.com", email: "ops@example.com", sshAllowedCidrs: '["198.51.100.7/32"]' };
const TEST_CA = "test/unit/fixtures/origin-pull-ca.pem";

interface Rule {
  name: string;
  inputs: { fromPort?: number; toPort?: number; cidrIpv4?: string; cidrIpv6?: string; description?: string };
}

function ingress(run: ProgramRun): Rule[] {
  return run.ofType("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") as Rule[];
}

const cidrOf = (r: Rule): string => r.inputs.cidrIpv4 ?? r.inputs.cidrIpv6 ?? "";

function webRules(run: ProgramRun, port: number): Rule[] {
  return ingress(run).filter((r) => r.inputs.fromPort === port);
}

describe("restrictHttpToCdn on EC2", () => {
  it("cloudflare: 80 and 443 open only to Cloudflare's shipped ranges, IPv4 and IPv6, never to /0; SSH as configured", async () => {
    const run = await runProgram({ ...nginxEc2, frontedBy: "cloudflare", restrictHttpToCdn: "true" });
    const r = cloudflareRanges();
    for (const port of [80, 443]) {
      const rules = webRules(run, port);
      expect(rules.filter((x) => x.inputs.cidrIpv4).map(cidrOf)).toEqual(r.v4);
      expect(rules.filter((x) => x.inputs.cidrIpv6).map(cidrOf)).toEqual(r.v6);
      for (const x of rules) {
        expect(cidrOf(x)).not.toMatch(/\/0$/);
        expect(x.inputs.toPort).toBe(port);
        expect(x.inputs.description).toMatch(/from Cloudflare$/);
      }
    }
    const all = ingress(run);
    // 2 ports x (15 + 7) ranges + 1 SSH rule; per family within AWS's default 60.
    expect(all).toHaveLength(2 * (15 + 7) + 1);
    expect(all.filter((x) => x.inputs.cidrIpv4)).toHaveLength(31);
    expect(all.filter((x) => x.inputs.cidrIpv6)).toHaveLength(14);
    expect(all.filter((x) => x.inputs.fromPort === 22).map(cidrOf)).toEqual(["198.51.100.7/32"]);
    expect(all.some((x) => ["0.0.0.0/0", "::/0"].includes(cidrOf(x)))).toBe(false);
    // Rules are named after their block: a refreshed list replaces only what changed.
    const names = all.map((x) => x.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toContain("host-443-cdn-173-245-48-0-20");
    expect(names).toContain("host-80-cdn-2a06-98c0-29");
  });

  it("custom: only trustedProxyCidrs", async () => {
    const run = await runProgram({
      ...nginxEc2,
      frontedBy: "custom",
      trustedProxyCidrs: '["192.0.2.0/24","2001:db8::/32"]',
      restrictHttpToCdn: "true",
    });
    for (const port of [80, 443]) expect(webRules(run, port).map(cidrOf)).toEqual(["192.0.2.0/24", "2001:db8::/32"]);
    expect(ingress(run)).toHaveLength(5);
  });

  it("without it, 80/443 stay open to everyone under the same resource names as before (no replacement)", async () => {
    const run = await runProgram({ ...nginxEc2, frontedBy: "cloudflare" });
    for (const port of [80, 443]) {
      const rules = webRules(run, port);
      expect(rules.map(cidrOf).sort()).toEqual(["0.0.0.0/0", "::/0"]);
      expect(rules.map((x) => x.name).sort()).toEqual([`host-${port}-v4`, `host-${port}-v6`]);
    }
  });

  it("is refused before any resource exists when it cannot apply", async () => {
    await expect(runProgram({ ...nginxEc2, restrictHttpToCdn: "true" })).rejects.toThrow(/restrictHttpToCdn needs frontedBy/);
  });
});

describe("what nginx-site pushes", () => {
  it("cloudflare: realip.conf with every range, included from http.conf", async () => {
    const run = await runProgram({ ...nginxEc2, frontedBy: "cloudflare" });
    const stdin = (run.one("command:remote:Command", "nginx-site").inputs as { stdin: string }).stdin;
    expect(stdin).toContain('"$stage/conf/fastapi-edge/realip.conf"');
    expect(stdin.match(/^set_real_ip_from /gm)).toHaveLength(22);
    expect(stdin).toMatch(/^real_ip_header CF-Connecting-IP;$/m);
    expect(stdin).toMatch(/^include fastapi-edge\/realip\.conf;$/m);
  });

  it("originPullCaFile: the CA (certificates only) and ssl_verify_client on", async () => {
    const run = await runProgram({ ...nginxEc2, frontedBy: "cloudflare", originPullCaFile: TEST_CA });
    const stdin = (run.one("command:remote:Command", "nginx-site").inputs as { stdin: string }).stdin;
    expect(stdin).toContain('"$stage/conf/fastapi-edge/origin-pull-ca.pem"');
    expect(stdin).toContain(readFileSync(path.resolve(__dirname, "../..", TEST_CA), "utf8").trim());
    expect(stdin).toMatch(/^\s+ssl_verify_client on;$/m);
  });

  it("originPullCaFile is refused in ALB mode", async () => {
    await expect(
      runProgram({ domain: "api.example.com", frontend: "alb", route53ZoneId: "Z0123456789ABC", originPullCaFile: TEST_CA }),
    ).rejects.toThrow(/originPullCaFile is refused with frontend alb/);
  });
});
