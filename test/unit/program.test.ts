// The resource graph of both front ends and both host modes, under Pulumi mocks.
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import { FAKE_PRIVATE_KEY, isSecretValue, runProgram, unwrap } from "../helpers/mocks";

const nginxEc2 = { domain: "api.example.com", email: "ops@example.com", sshAllowedCidrs: '["198.51.100.7/32"]' };
// ALB mode needs a uvicorn from the app's own virtualenv (a CIDR in --forwarded-allow-ips).
const VENV_APP = "test/fixtures/app-venv";
const albEc2 = { domain: "api.example.com", frontend: "alb", route53ZoneId: "Z0123456789ABC", wafRateLimit: "2000", appSource: VENV_APP };

type Rule = {
  inputs: {
    ipProtocol?: string;
    fromPort?: number;
    toPort?: number;
    cidrIpv4?: string;
    cidrIpv6?: string;
    referencedSecurityGroupId?: string;
    securityGroupId?: string;
  };
};
const ingress = (r: { ofType(t: string): Rule[] }) => r.ofType("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule");

describe("nginx front end on EC2", () => {
  it("hardens the instance: IMDSv2, encrypted gp3, tags, Elastic IP", async () => {
    const run = await runProgram(nginxEc2);
    const inst = run.one("aws:ec2/instance:Instance").inputs as Record<string, never>;
    expect(inst["metadataOptions"]).toMatchObject({ httpTokens: "required" });
    expect(inst["rootBlockDevice"]).toMatchObject({ encrypted: true, volumeType: "gp3", volumeSize: 20 });
    expect(inst["ami"]).toBe("ami-0123456789abcdef0");
    expect(inst["tags"]).toMatchObject({ Project: "fastapi-edge", Stack: "test" });
    expect(run.one("aws:ec2/eip:Eip").inputs).toMatchObject({ instance: "host-instance-id" });
  });

  it("opens 80/443 to the world and 22 only to the configured CIDRs", async () => {
    const run = await runProgram(nginxEc2);
    const rules = ingress(run);
    const ssh = rules.filter((r) => r.inputs.fromPort === 22);
    expect(ssh.map((r) => r.inputs.cidrIpv4)).toEqual(["198.51.100.7/32"]);
    for (const port of [80, 443]) {
      const open = rules.filter((r) => r.inputs.fromPort === port).map((r) => r.inputs.cidrIpv4 ?? r.inputs.cidrIpv6);
      expect(open.sort()).toEqual(["0.0.0.0/0", "::/0"]);
    }
    for (const r of rules) expect(r.inputs.fromPort === 22 && /\/0$/.test(r.inputs.cidrIpv4 ?? r.inputs.cidrIpv6 ?? "")).toBe(false);
  });

  it("opens UDP 443 (QUIC) to the world only when http3 is on", async () => {
    const udp = (rules: Rule[]) => rules.filter((r) => r.inputs.ipProtocol === "udp");
    expect(udp(ingress(await runProgram(nginxEc2)))).toEqual([]);
    const rules = ingress(await runProgram({ ...nginxEc2, http3: "true" }));
    const quic = udp(rules);
    expect(quic.map((r) => [r.inputs.fromPort, r.inputs.toPort, r.inputs.cidrIpv4 ?? r.inputs.cidrIpv6]).sort()).toEqual([
      [443, 443, "0.0.0.0/0"],
      [443, 443, "::/0"],
    ]);
    // TCP 80/443 stay as they were.
    for (const port of [80, 443]) {
      const tcp = rules.filter((r) => r.inputs.ipProtocol === "tcp" && r.inputs.fromPort === port);
      expect(tcp.map((r) => r.inputs.cidrIpv4 ?? r.inputs.cidrIpv6).sort()).toEqual(["0.0.0.0/0", "::/0"]);
    }
  });

  it("opens SSH to nobody by default", async () => {
    const run = await runProgram({ domain: "api.example.com", email: "ops@example.com" });
    expect(ingress(run).filter((r) => r.inputs.fromPort === 22)).toEqual([]);
  });

  it("generates a key whose private half is only ever a secret", async () => {
    const run = await runProgram(nginxEc2);
    run.one("tls:index/privateKey:PrivateKey");
    const mod = (await import("../../index")) as { sshPrivateKey?: pulumi.Output<string> };
    expect(mod.sshPrivateKey).toBeDefined();
    expect(await pulumi.isSecret(mod.sshPrivateKey!)).toBe(true);
    // Nothing but the connection carries it, and no output, tag or script holds it in plain text.
    for (const r of run.resources) {
      if (r.type === "command:remote:Command" || r.type === "command:remote:CopyToRemote") {
        // The connection carries the key, and the provider keeps it secret.
        expect(isSecretValue(r.inputs["connection"])).toBe(true);
        expect(unwrap<{ privateKey: string }>(r.inputs["connection"]).privateKey).toBe(FAKE_PRIVATE_KEY);
        const { connection: _c, ...rest } = r.inputs;
        expect(JSON.stringify(rest)).not.toContain("PRIVATE KEY");
        continue;
      }
      expect(JSON.stringify(r.inputs)).not.toContain("BEGIN OPENSSH PRIVATE KEY");
    }
    for (const [k, v] of Object.entries(run.outputs))
      if (k !== "sshPrivateKey") expect(JSON.stringify(v) ?? "").not.toContain("PRIVATE KEY");
  });

  it("uses a configured public key instead of generating one", async () => {
    const run = await runProgram({ ...nginxEc2, sshPublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 me@laptop" });
    expect(run.ofType("tls:index/privateKey:PrivateKey")).toEqual([]);
    expect(run.one("aws:ec2/keyPair:KeyPair").inputs).toMatchObject({ publicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 me@laptop" });
  });

  it("creates no load balancer and pushes nginx after the certificate, after the app", async () => {
    const run = await runProgram(nginxEc2);
    expect(run.ofType("aws:lb/loadBalancer:LoadBalancer")).toEqual([]);
    expect(run.ofType("aws:acm/certificate:Certificate")).toEqual([]);
    const names = run.ofType("command:remote:Command").map((r) => r.name);
    const order = ["bootstrap-wait-ssh", "bootstrap-install", "app-deploy", "nginx-acme-bootstrap", "nginx-certificate", "nginx-site"];
    expect(names.filter((n) => order.includes(n))).toEqual(order);
  });

  it("pushes the rendered site as the command's stdin and tests it before reload", async () => {
    const run = await runProgram(nginxEc2);
    const site = run.one("command:remote:Command", "nginx-site").inputs as { stdin: string; create: string; delete: string };
    expect(site.create).toBe("sudo -n bash -s");
    expect(site.stdin).toContain("server_name api.example.com;");
    expect(site.stdin).toContain('/opt/fastapi-edge/bin/nginx-apply.sh "$stage"');
    // nginx-remove.sh runs nginx-apply.sh --remove (test/unit/scripts.test.ts).
    expect(site.delete).toContain(
      "/opt/fastapi-edge/bin/nginx-remove.sh --drop-in '/etc/systemd/system/nginx.service.d/fastapi-edge.conf'",
    );
    const install = run.one("command:remote:Command", "bootstrap-install").inputs as { stdin: string };
    expect(install.stdin).toMatch(/install-packages\.sh 'nginx' 'certbot'/);
    const cert = run.one("command:remote:Command", "nginx-certificate").inputs as { stdin: string };
    expect(cert.stdin).toContain("--server 'https://acme-staging-v02.api.letsencrypt.org/directory'");
  });

  it("waits for SSH with unlimited dial retries inside a create timeout", async () => {
    const run = await runProgram(nginxEc2);
    const wait = run.one("command:remote:Command", "bootstrap-wait-ssh").inputs;
    expect(unwrap(wait["connection"])).toMatchObject({ dialErrorLimit: -1, host: "203.0.113.10", user: "admin" });
  });

  it("binds uvicorn to loopback and trusts forwarded headers from nginx only", async () => {
    const run = await runProgram(nginxEc2);
    const deploy = run.one("command:remote:Command", "app-deploy").inputs as { stdin: string };
    expect(deploy.stdin).toContain("FORWARDED_ALLOW_IPS=127.0.0.1\n");
    expect(deploy.stdin).toContain("UVICORN_HOST=127.0.0.1\n");
    // app-deploy.sh hands the ports on to app-rollout.sh, in this order.
    expect(deploy.stdin).toMatch(/\/app-deploy\.sh --release '[0-9a-f]{16}' .* '8000' '8001'$/m);
  });

  it("adds a Route53 A record and the cert-expiry alarm when configured", async () => {
    const run = await runProgram({ ...nginxEc2, route53ZoneId: "Z0123456789ABC", alertEmail: "oncall@example.com" });
    expect(run.one("aws:route53/record:Record").inputs).toMatchObject({ type: "A", records: ["203.0.113.10"], name: "api.example.com" });
    expect(run.one("aws:cloudwatch/metricAlarm:MetricAlarm").inputs).toMatchObject({
      namespace: "FastapiEdge",
      metricName: "CertificateLifetimeLeftPercent",
      dimensions: { Domain: "api.example.com" },
      comparisonOperator: "LessThanThreshold",
      statistic: "Minimum",
      threshold: 25,
      period: 21600,
      evaluationPeriods: 2,
      datapointsToAlarm: 2,
      treatMissingData: "breaching",
    });
    expect(run.one("aws:sns/topicSubscription:TopicSubscription").inputs).toMatchObject({
      protocol: "email",
      endpoint: "oncall@example.com",
    });
    expect(run.one("aws:ec2/instance:Instance").inputs).toHaveProperty("iamInstanceProfile");
    run.one("command:remote:Command", "cert-expiry-timer");
  });

  it("passes acmeProfile to obtain-cert.sh, and nothing when unset", async () => {
    const stdinOf = (r: Awaited<ReturnType<typeof runProgram>>) =>
      String((r.one("command:remote:Command", "nginx-certificate").inputs as { stdin: string }).stdin);
    expect(stdinOf(await runProgram({ ...nginxEc2, acmeProfile: "shortlived" }))).toMatch(
      /\/obtain-cert\.sh --domain .* --profile 'shortlived'$/m,
    );
    expect(stdinOf(await runProgram(nginxEc2))).not.toContain("--profile");
  });

  it("the expiry check publishes the lifetime percentage every 6 hours, threshold from certExpiryAlarmPercent", async () => {
    const run = await runProgram({ ...nginxEc2, alertEmail: "oncall@example.com", certExpiryAlarmPercent: "30" });
    const timer = String((run.one("command:remote:Command", "cert-expiry-timer").inputs as { stdin: string }).stdin);
    expect(timer).toContain("Environment=WARN_PERCENT=30\n");
    expect(timer).toContain("OnCalendar=*-*-* 00/6:00:00\n");
    expect(run.one("aws:cloudwatch/metricAlarm:MetricAlarm").inputs).toMatchObject({ threshold: 30 });
  });

  it("exports the URL, address, ssh command and mode", async () => {
    const run = await runProgram(nginxEc2);
    expect(run.outputs).toMatchObject({
      frontend: "nginx",
      url: "https://api.example.com/",
      publicIp: "203.0.113.10",
      sshCommand: "ssh admin@203.0.113.10",
    });
  });

  it("protects instance, EIP and certificate in prod-style stacks", async () => {
    const run = await runProgram({ ...nginxEc2, protect: "true" });
    // Mocks see protect through the registered options only indirectly: the stack file sets it,
    // and the config flows into the resource options (checked in components by type).
    expect(run.one("aws:ec2/instance:Instance")).toBeDefined();
  });
});

describe("change isolation", () => {
  it("a setting other than the domain changes only the site push, never the ACME bootstrap step", async () => {
    const a = await runProgram(nginxEc2);
    const b = await runProgram({ ...nginxEc2, clientMaxBodySize: "20m", appProcesses: "3", rateLimits: "[]" });
    const stdin = (r: typeof a, n: string) => (r.one("command:remote:Command", n).inputs as { stdin: string }).stdin;
    expect(stdin(b, "nginx-acme-bootstrap")).toBe(stdin(a, "nginx-acme-bootstrap"));
    expect(stdin(b, "nginx-certificate")).toBe(stdin(a, "nginx-certificate"));
    expect(stdin(b, "nginx-site")).not.toBe(stdin(a, "nginx-site"));
  });
});

describe("ALB front end", () => {
  it("creates listeners with redirect and a TLS 1.3/1.2 policy, and installs no nginx", async () => {
    const run = await runProgram(albEc2);
    const listeners = run.ofType("aws:lb/listener:Listener").map((l) => l.inputs as Record<string, never>);
    const http = listeners.find((l) => l["port"] === 80)!;
    const https = listeners.find((l) => l["port"] === 443)!;
    expect(http["defaultActions"]).toEqual([
      expect.objectContaining({ type: "redirect", redirect: expect.objectContaining({ protocol: "HTTPS", statusCode: "HTTP_301" }) }),
    ]);
    expect(https).toMatchObject({
      protocol: "HTTPS",
      sslPolicy: "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
      certificateArn: "arn:aws:acm:eu-west-1:123456789012:certificate/abc",
    });
    expect(run.one("aws:lb/loadBalancer:LoadBalancer").inputs).toMatchObject({
      dropInvalidHeaderFields: true,
      idleTimeout: 3600,
      loadBalancerType: "application",
    });
    const install = run.one("command:remote:Command", "bootstrap-install").inputs as { stdin: string };
    expect(install.stdin).not.toMatch(/'nginx'|'certbot'/);
    expect(
      run
        .ofType("command:remote:Command")
        .map((c) => c.name)
        .filter((n) => n.startsWith("nginx")),
    ).toEqual([]);
  });

  it("validates the ACM certificate through Route53 and targets every app port", async () => {
    const run = await runProgram(albEc2);
    expect(run.one("aws:acm/certificate:Certificate").inputs).toMatchObject({ domainName: "api.example.com", validationMethod: "DNS" });
    run.one("aws:acm/certificateValidation:CertificateValidation");
    const records = run.ofType("aws:route53/record:Record").map((r) => r.inputs as Record<string, unknown>);
    expect(records).toContainEqual(expect.objectContaining({ type: "CNAME", zoneId: "Z0123456789ABC" }));
    expect(records).toContainEqual(
      expect.objectContaining({ type: "A", aliases: [expect.objectContaining({ name: "alb-123.eu-west-1.elb.amazonaws.com" })] }),
    );
    expect(run.one("aws:lb/targetGroup:TargetGroup").inputs).toMatchObject({
      port: 8000,
      deregistrationDelay: 15,
      healthCheck: expect.objectContaining({ path: "/healthz" }),
    });
    expect(run.ofType("aws:lb/targetGroupAttachment:TargetGroupAttachment").map((a) => (a.inputs as { port: number }).port)).toEqual([
      8000, 8001,
    ]);
  });

  it("admits the app ports on the instance only from the ALB's security group", async () => {
    const run = await runProgram(albEc2);
    const rules = ingress(run);
    const app = rules.filter((r) => r.inputs.fromPort === 8000);
    expect(app).toHaveLength(1);
    expect(app[0]!.inputs).toMatchObject({ securityGroupId: "host-sg-id", referencedSecurityGroupId: "alb-sg-id", toPort: 8001 });
    expect(
      rules.filter((r) => r.inputs.securityGroupId === "host-sg-id" && (r.inputs.fromPort === 80 || r.inputs.fromPort === 443)),
    ).toEqual([]);
    const deploy = run.one("command:remote:Command", "app-deploy").inputs as { stdin: string };
    expect(deploy.stdin).toContain("FORWARDED_ALLOW_IPS=172.31.0.0/16\n");
    expect(deploy.stdin).toContain("UVICORN_HOST=0.0.0.0\n");
  });

  it("adds a WAF rate-based rule when wafRateLimit is set", async () => {
    const run = await runProgram(albEc2);
    const acl = run.one("aws:wafv2/webAcl:WebAcl").inputs as { rules: { statement: { rateBasedStatement: { limit: number } } }[] };
    expect(acl.rules[0]!.statement.rateBasedStatement.limit).toBe(2000);
    run.one("aws:wafv2/webAclAssociation:WebAclAssociation");
  });

  it("alarms on ACM DaysToExpiry", async () => {
    const run = await runProgram({ ...albEc2, alertEmail: "oncall@example.com" });
    expect(run.one("aws:cloudwatch/metricAlarm:MetricAlarm").inputs).toMatchObject({
      namespace: "AWS/CertificateManager",
      metricName: "DaysToExpiry",
      threshold: 30,
      period: 86400,
      comparisonOperator: "LessThanThreshold",
    });
  });

  it("the HTTPS listener's policy passes the policy pack's TLS 1.2+ allow-list", async () => {
    const { TLS12_PLUS_SSL_POLICIES } = await import("../../policy/rules");
    const { ALB_TLS_POLICY } = await import("../../components/alb");
    expect(ALB_TLS_POLICY).toBe("ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09");
    expect(TLS12_PLUS_SSL_POLICIES.has(ALB_TLS_POLICY)).toBe(true);
  });
});

describe("existing host", () => {
  it("connects as root with the secret key and creates no AWS resource", async () => {
    const run = await runProgram(
      { domain: "api.example.com", email: "ops@example.com", hostMode: "existing", hostAddress: "192.0.2.5", hostPort: "2222" },
      { secrets: { hostPrivateKey: FAKE_PRIVATE_KEY } },
    );
    expect(run.resources.filter((r) => r.type.startsWith("aws:"))).toEqual([]);
    const wait = run.one("command:remote:Command", "bootstrap-wait-ssh").inputs;
    expect(isSecretValue(wait["connection"])).toBe(true);
    expect(unwrap(wait["connection"])).toMatchObject({ host: "192.0.2.5", port: 2222, user: "root", privateKey: FAKE_PRIVATE_KEY });
    expect(String(wait["create"]).startsWith("bash -s")).toBe(true);
    expect(run.outputs).toMatchObject({ sshCommand: "ssh -p 2222 root@192.0.2.5", publicIp: "192.0.2.5" });
  });

  it("refuses a malformed private key before anything runs", async () => {
    await expect(
      runProgram(
        { domain: "api.example.com", email: "ops@example.com", hostMode: "existing", hostAddress: "192.0.2.5" },
        { secrets: { hostPrivateKey: "not a key" } },
      ),
    ).rejects.toThrow(/hostPrivateKey must be a PEM or OpenSSH private key/);
  });

  it("refuses a private key stored in plain text", async () => {
    await expect(
      runProgram({
        domain: "api.example.com",
        email: "ops@example.com",
        hostMode: "existing",
        hostAddress: "192.0.2.5",
        hostPrivateKey: FAKE_PRIVATE_KEY,
      }),
    ).rejects.toThrow(/hostPrivateKey must be stored as a secret/);
  });
});

describe("config errors stop the program before any resource", () => {
  it("names the key and the accepted form", async () => {
    await expect(runProgram({ domain: "api.example.com;evil", email: "ops@example.com" })).rejects.toThrow(
      /fastapi-edge:domain must be a DNS name/,
    );
    await expect(runProgram({ domain: "api.example.com", email: "ops@example.com", sshAllowedCidrs: '["0.0.0.0/0"]' })).rejects.toThrow(
      /sshAllowedCidrs/,
    );
  });
});
