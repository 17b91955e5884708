// ACME profiles and lifetimes, for real: Pebble 2.10 (Debian unstable's
// package; profiles came with pebble 2.7.0, Debian 13's 2.6 has none) offers
// two profiles named like Let's Encrypt's, `tlsserver` (45 days) and
// `shortlived` (6 days). An order without a profile gets a random one of
// them ("in true pebble chaos fashion", its wfe.go), so the no-profile case
// checks what certbot sends and that the renewal window follows whatever
// lifetime came back. certbot 4.0
// from Debian 13 (the deployed target's certbot) gets certificates through
// the real files/scripts/obtain-cert.sh with a real HTTP-01 challenge (the
// webroot served on Pebble's httpPort by Python's http.server), and the real
// files/scripts/cert-expiry-check.sh judges them.
//
// Both chroots come from scripts/get-chroot.sh (cached; the first build takes
// minutes). Everything runs under 127.0.0.1 ports 24500-24599 and scratch
// directories under each chroot's /tmp, removed afterwards. Needs root
// (chroot). FASTAPI_EDGE_SKIP_ACME_PROFILES=1 skips the file.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT, run, script, startProcess, stopAll, waitFor, type RunResult, type StartedProcess } from "../helpers/proc";

const CHROOT_PACKAGES = ["nginx", "openssl", "curl", "ca-certificates", "certbot", "pebble"];
const BUILD_TIMEOUT_MS = 30 * 60_000;
const SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";
const DAY = 86400;
const LONG_S = 45 * DAY;
const SHORT_S = 6 * DAY;
const SHORT = "short.fastapi-edge.test";
const LONG = "long.fastapi-edge.test";
const ANY = "any.fastapi-edge.test";

const skip = process.env.FASTAPI_EDGE_SKIP_ACME_PROFILES === "1" || process.getuid?.() !== 0;

/** scripts/get-chroot.sh NAME SUITE PACKAGES...: the chroot's path (its last line). */
function getChroot(name: string, suite: string): string {
  const out = execFileSync("bash", [path.join(REPO_ROOT, "scripts/get-chroot.sh"), name, suite, ...CHROOT_PACKAGES], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    timeout: BUILD_TIMEOUT_MS,
  });
  const root = out.trim().split("\n").pop() ?? "";
  if (!root.startsWith("/")) throw new Error(`get-chroot.sh ${name} printed no chroot path:\n${out}`);
  return root;
}

/** Free TCP ports on 127.0.0.1 within 24500-24599. */
async function rangePorts(n: number, lo = 24500, hi = 24599): Promise<number[]> {
  const out: number[] = [];
  const start = lo + Math.floor(Math.random() * (hi - lo + 1));
  for (let i = 0; i <= hi - lo && out.length < n; i++) {
    const port = lo + ((start - lo + i) % (hi - lo + 1));
    const free = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once("error", () => resolve(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
    });
    if (free) out.push(port);
  }
  if (out.length < n) throw new Error(`fewer than ${n} free ports in ${lo}-${hi}`);
  return out;
}

/** The program and arguments that run argv inside root with a clean environment. */
function chrootArgs(root: string, env: Record<string, string>, argv: string[]): string[] {
  return [root, "/usr/bin/env", "-i", `PATH=${SYSTEM_PATH}`, ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv];
}

describe.skipIf(skip)("ACME profiles with certbot 4.0 (Debian 13) against Pebble 2.10 (Debian unstable)", { timeout: 180_000 }, () => {
  let trixie = "";
  let sid = "";
  // Scratch trees as seen from the host and from inside their chroot.
  let pebbleDir = "";
  let pebbleIn = "";
  let certbotDir = "";
  let certbotIn = "";
  let ports: number[] = [];
  let directory = "";
  let pebble: StartedProcess | undefined;

  /** Run a program in the Debian 13 chroot, certbot's state under the scratch tree. */
  const inTrixie = (argv: string[], env: Record<string, string> = {}): Promise<RunResult> =>
    run("chroot", chrootArgs(trixie, env, argv), { timeoutMs: 120_000 });
  const certbotEnv = (): Record<string, string> => ({
    REQUESTS_CA_BUNDLE: `${certbotIn}/listener-ca.pem`,
    CERTBOT_CONFIG_DIR: `${certbotIn}/le/etc`,
    CERTBOT_WORK_DIR: `${certbotIn}/le/lib`,
    CERTBOT_LOGS_DIR: `${certbotIn}/le/log`,
  });
  const obtain = (domain: string, profile?: string): Promise<RunResult> =>
    inTrixie(
      [
        "bash",
        `${certbotIn}/bin/obtain-cert.sh`,
        ...["--domain", domain, "--email", "ops@fastapi-edge.test", "--server", directory, "--webroot", `${certbotIn}/webroot`],
        ...(profile !== undefined ? ["--profile", profile] : []),
      ],
      certbotEnv(),
    );
  const certIn = (domain: string): string => `${certbotIn}/le/etc/live/${domain}/cert.pem`;
  const renewalConf = (domain: string): string => readFileSync(`${certbotDir}/le/etc/renewal/${domain}.conf`, "utf8");
  /** notBefore, notAfter (epoch seconds) and serial of a lineage's current certificate, read by the chroot's openssl. */
  const certInfo = async (domain: string): Promise<{ notBefore: number; notAfter: number; serial: string }> => {
    const r = await inTrixie([
      "openssl",
      "x509",
      "-noout",
      "-startdate",
      "-enddate",
      "-serial",
      "-dateopt",
      "iso_8601",
      "-in",
      certIn(domain),
    ]);
    expect(r.code, r.stderr).toBe(0);
    const field = (k: string): string => new RegExp(`^${k}=(.*)$`, "m").exec(r.stdout)?.[1] ?? "";
    const epoch = (s: string): number => Date.parse(s.replace(" ", "T")) / 1000;
    return { notBefore: epoch(field("notBefore")), notAfter: epoch(field("notAfter")), serial: field("serial") };
  };
  /**
   * The last new-order payload in certbot's debug log (letsencrypt.log is the
   * latest run's), which logs each JWS payload as a bytes literal on one line:
   * JWS payload:\nb'{\n  "profile": "shortlived",\n  "identifiers": [...]}'
   */
  const newOrderPayload = (): string => {
    const log = readFileSync(`${certbotDir}/le/log/letsencrypt.log`, "utf8");
    const all = [...log.matchAll(/JWS payload:\nb'(\{\\n.*"identifiers".*)'$/gm)];
    return all.at(-1)?.[1] ?? "";
  };
  const lifetime = async (domain: string): Promise<number> => {
    const i = await certInfo(domain);
    return i.notAfter - i.notBefore;
  };
  const expiryCheck = (domain: string, nowEpoch?: number): Promise<RunResult> =>
    inTrixie(
      ["bash", `${certbotIn}/bin/cert-expiry-check.sh`, certIn(domain)],
      nowEpoch === undefined ? {} : { NOW_EPOCH: String(nowEpoch) },
    );

  beforeAll(async () => {
    trixie = getChroot("edge-trixie", "trixie");
    sid = getChroot("edge-sid", "sid");
    pebbleDir = mkdtempSync(path.join(sid, "tmp", "fe-acme-profiles-"));
    pebbleIn = "/" + path.relative(sid, pebbleDir);
    certbotDir = mkdtempSync(path.join(trixie, "tmp", "fe-acme-profiles-"));
    certbotIn = "/" + path.relative(trixie, certbotDir);
    ports = await rangePorts(5);
    const [acmePort, mgmtPort, httpPort, dnsPort, ctsPort] = ports as [number, number, number, number, number];
    directory = `https://127.0.0.1:${acmePort}/dir`;

    // Pebble's HTTPS listener: a throwaway CA and a certificate for 127.0.0.1.
    const sh = (args: string[]): void => {
      execFileSync("openssl", args, { cwd: pebbleDir, stdio: "ignore" });
    };
    sh(
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.pem"].concat(
        ["-days", "2", "-subj", "/CN=fastapi-edge acme-profiles test CA", "-addext", "basicConstraints=critical,CA:TRUE"],
      ),
    );
    sh(
      [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "listener.key",
        "-out",
        "listener.csr",
      ].concat(["-subj", "/CN=localhost"]),
    );
    writeFileSync(path.join(pebbleDir, "ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    sh(
      ["x509", "-req", "-in", "listener.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "1", "-days", "2"].concat([
        "-extfile",
        "ext.cnf",
        "-out",
        "listener.pem",
      ]),
    );
    writeFileSync(
      path.join(pebbleDir, "pebble-config.json"),
      JSON.stringify({
        pebble: {
          listenAddress: `127.0.0.1:${acmePort}`,
          managementListenAddress: `127.0.0.1:${mgmtPort}`,
          certificate: `${pebbleIn}/listener.pem`,
          privateKey: `${pebbleIn}/listener.key`,
          httpPort,
          tlsPort: httpPort, // TLS-ALPN-01 is not used; Pebble needs a number
          ocspResponderURL: "",
          externalAccountBindingRequired: false,
          profiles: {
            tlsserver: { description: "45 days", validityPeriod: LONG_S },
            shortlived: { description: "6 days", validityPeriod: SHORT_S },
          },
        },
      }),
    );

    // certbot's side: the real scripts, the CA it trusts, the webroot.
    mkdirSync(path.join(certbotDir, "bin"));
    mkdirSync(path.join(certbotDir, "webroot"));
    for (const s of ["obtain-cert.sh", "cert-expiry-check.sh"]) copyFileSync(script(s), path.join(certbotDir, "bin", s));
    copyFileSync(path.join(pebbleDir, "ca.pem"), path.join(certbotDir, "listener-ca.pem"));

    // Fake DNS (every name is 127.0.0.1): pebble-challtestsrv 2.10 calls the
    // DNS flag -dnsserver (2.6: -dns01) and serves DoH on :8443 unless told not to.
    startProcess(
      "chroot",
      chrootArgs(
        sid,
        {},
        ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]
          .concat(["-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", ""])
          .concat(["-dnsserver", `127.0.0.1:${dnsPort}`, "-management", `127.0.0.1:${ctsPort}`]),
      ),
    );
    pebble = startProcess(
      "chroot",
      chrootArgs(
        sid,
        { PEBBLE_VA_NOSLEEP: "1", PEBBLE_WFE_NONCEREJECT: "0" },
        ["pebble", "-config", `${pebbleIn}/pebble-config.json`].concat(["-dnsserver", `127.0.0.1:${dnsPort}`]),
      ),
    );
    // The HTTP-01 responder: certbot --webroot writes the token, this serves it (nginx does on a host).
    startProcess(
      "chroot",
      chrootArgs(trixie, {}, [
        "python3",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "--directory",
        `${certbotIn}/webroot`,
        String(httpPort),
      ]),
    );
    const caFile = path.join(pebbleDir, "ca.pem");
    await waitFor(async () => (await run("curl", ["-sf", "--cacert", caFile, directory])).code === 0, `Pebble at ${directory}`, 30_000);
    await waitFor(
      async () => (await run("curl", ["-s", "-o", "/dev/null", `http://127.0.0.1:${httpPort}/`])).code === 0,
      "http.server",
      15_000,
    );
    const versions = await inTrixie(["certbot", "--version"]);
    console.log(`acme-profiles: ${versions.stdout.trim()} (Debian 13) against pebble 2.10 (Debian unstable) at ${directory}`);
  }, BUILD_TIMEOUT_MS * 2);

  afterAll(async () => {
    await stopAll();
    if (pebbleDir !== "") rmSync(pebbleDir, { recursive: true, force: true });
    if (certbotDir !== "") rmSync(certbotDir, { recursive: true, force: true });
  });

  it("Pebble 2.10 lists both profiles in its directory's meta.profiles", async () => {
    const r = await run("curl", ["-sf", "--cacert", path.join(pebbleDir, "ca.pem"), directory]);
    const dir = JSON.parse(r.stdout) as { meta?: { profiles?: Record<string, string> } };
    expect(dir.meta?.profiles).toEqual({ tlsserver: "45 days", shortlived: "6 days" });
    expect(pebble?.output()).toMatch(/Loaded profile "shortlived" with certificate validity period of 518400 seconds/);
  });

  it("shortlived: a 6-day certificate, the profile in the renewal config, the renewal window at half the lifetime", async () => {
    const r = await obtain(SHORT, "shortlived");
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(newOrderPayload()).toMatch(/^\{\\n {2}"profile": "shortlived",\\n {2}"identifiers": \[.*"short\.fastapi-edge\.test"/);
    // Pebble's notAfter is notBefore + validityPeriod - 1 s (the last second is inclusive).
    expect(await lifetime(SHORT)).toBe(SHORT_S - 1);
    const conf = renewalConf(SHORT);
    expect(conf).toMatch(/^preferred_profile = shortlived$/m);
    expect(conf).not.toMatch(/required_profile/);
    expect(conf.split("\n")[0]).toBe(`renew_before_expiry = ${Math.floor((SHORT_S - 1) / 2)} seconds`);
    expect(r.stdout).toMatch(/certbot renews short\.fastapi-edge\.test with 71 hour\(s\) left \(6-day certificate\)/);
  });

  it("tlsserver: a 45-day certificate, the profile recorded, the renewal window at a third", async () => {
    const r = await obtain(LONG, "tlsserver");
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await lifetime(LONG)).toBe(LONG_S - 1);
    const conf = renewalConf(LONG);
    expect(conf).toMatch(/^preferred_profile = tlsserver$/m);
    expect(conf.split("\n")[0]).toBe(`renew_before_expiry = ${Math.floor((LONG_S - 1) / 3)} seconds`);
  });

  it("no profile: certbot asks for none, records none, and the window follows the lifetime the CA chose", async () => {
    const r = await obtain(ANY);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(newOrderPayload()).toContain(ANY);
    expect(newOrderPayload()).not.toContain("profile");
    expect(renewalConf(ANY)).not.toMatch(/_profile/);
    const life = await lifetime(ANY);
    expect([LONG_S - 1, SHORT_S - 1]).toContain(life);
    const window = life < 10 * DAY ? Math.floor(life / 2) : Math.floor(life / 3);
    expect(renewalConf(ANY).split("\n")[0]).toBe(`renew_before_expiry = ${window} seconds`);
    // Setting a profile later replaces the certificate, and the order carries it.
    const short = await obtain(ANY, "shortlived");
    expect(short.code, short.stderr).toBe(0);
    expect(short.stdout).toContain("ACME profile changed (CA default -> shortlived): replacing the certificate");
    expect(newOrderPayload()).toMatch(/"profile": "shortlived"/);
    expect(await lifetime(ANY)).toBe(SHORT_S - 1);
  });

  it("a second run keeps the certificate; without the pinned window certbot 4.0 would renew a fresh 6-day certificate", async () => {
    const before = await certInfo(SHORT);
    const again = await obtain(SHORT, "shortlived");
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/Certificate not yet due for renewal/);
    expect((await certInfo(SHORT)).serial).toBe(before.serial);

    // certbot 4.0's own window: drop the line obtain-cert.sh writes and ask
    // certbot alone to keep the certificate until it is due.
    const confPath = `${certbotDir}/le/etc/renewal/${SHORT}.conf`;
    const pinned = renewalConf(SHORT);
    writeFileSync(confPath, pinned.split("\n").slice(1).join("\n"));
    const bare = await inTrixie(
      ["certbot", "certonly", "--webroot", "-w", `${certbotIn}/webroot`, "-d", SHORT, "--cert-name", SHORT, "--server", directory]
        .concat(["--non-interactive", "--keep-until-expiring", "--preferred-profile", "shortlived"])
        .concat(["--config-dir", `${certbotIn}/le/etc`, "--work-dir", `${certbotIn}/le/lib`, "--logs-dir", `${certbotIn}/le/log`]),
      { REQUESTS_CA_BUNDLE: `${certbotIn}/listener-ca.pem` },
    );
    expect(bare.code, bare.stderr).toBe(0);
    expect(bare.stdout).toMatch(/Renewing an existing certificate/);
    expect((await certInfo(SHORT)).serial).not.toBe(before.serial);
    const log = readFileSync(`${certbotDir}/le/log/letsencrypt.log`, "utf8");
    expect(log).toMatch(/Should renew, less than 30 days before certificate expiry/);

    // obtain-cert.sh pins the window again.
    const restored = await obtain(SHORT, "shortlived");
    expect(restored.code, restored.stderr).toBe(0);
    expect(renewalConf(SHORT).split("\n")[0]).toBe(`renew_before_expiry = ${Math.floor((SHORT_S - 1) / 2)} seconds`);
  });

  it("a scheduled renewal (certbot renew) asks for the recorded profile again and keeps the window", async () => {
    const before = await certInfo(SHORT);
    const r = await inTrixie(
      ["certbot", "renew", "--cert-name", SHORT, "--force-renewal", "--non-interactive", "--no-random-sleep-on-renew"].concat([
        "--config-dir",
        `${certbotIn}/le/etc`,
        "--work-dir",
        `${certbotIn}/le/lib`,
        "--logs-dir",
        `${certbotIn}/le/log`,
      ]),
      { REQUESTS_CA_BUNDLE: `${certbotIn}/listener-ca.pem` },
    );
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // The order names the profile (Pebble would otherwise pick one at random).
    expect(newOrderPayload()).toMatch(/"profile": "shortlived"/);
    const after = await certInfo(SHORT);
    expect(after.serial).not.toBe(before.serial);
    expect(after.notAfter - after.notBefore).toBe(SHORT_S - 1);
    const conf = renewalConf(SHORT);
    expect(conf).toMatch(/^preferred_profile = shortlived$/m);
    expect(conf.split("\n")[0]).toBe(`renew_before_expiry = ${Math.floor((SHORT_S - 1) / 2)} seconds`);
  });

  it("refuses a profile the CA does not offer before asking for a certificate, and leaves the old one", async () => {
    const before = await certInfo(SHORT);
    const r = await obtain(SHORT, "classic");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`obtain-cert.sh: ACME profile 'classic' (acmeProfile) is not offered by ${directory}; it offers: `);
    expect(r.stderr).toMatch(/it offers: (shortlived,tlsserver|tlsserver,shortlived)\n/);
    expect((await certInfo(SHORT)).serial).toBe(before.serial);
    expect(renewalConf(SHORT)).toMatch(/^preferred_profile = shortlived$/m);
  });

  it("a changed profile replaces the certificate, both ways", async () => {
    const toShort = await obtain(LONG, "shortlived");
    expect(toShort.code, toShort.stderr).toBe(0);
    expect(toShort.stdout).toContain("ACME profile changed (tlsserver -> shortlived): replacing the certificate");
    expect(newOrderPayload()).toMatch(/"profile": "shortlived"/);
    expect(await lifetime(LONG)).toBe(SHORT_S - 1);
    expect(renewalConf(LONG)).toMatch(/^preferred_profile = shortlived$/m);
    const back = await obtain(LONG, "tlsserver");
    expect(back.code, back.stderr).toBe(0);
    expect(back.stdout).toContain("ACME profile changed (shortlived -> tlsserver): replacing the certificate");
    expect(newOrderPayload()).toMatch(/"profile": "tlsserver"/);
    expect(await lifetime(LONG)).toBe(LONG_S - 1);
    const conf = renewalConf(LONG);
    expect(conf).toMatch(/^preferred_profile = tlsserver$/m);
    expect(conf.split("\n")[0]).toBe(`renew_before_expiry = ${Math.floor((LONG_S - 1) / 3)} seconds`);
  });

  it("the expiry check fires on the 6-day certificate at under 25% of its lifetime, not on the 45-day one", async () => {
    const short = await certInfo(SHORT);
    const long = await certInfo(LONG);
    // Now: both fresh.
    for (const d of [SHORT, LONG]) {
      const r = await expiryCheck(d);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^percent_left=(99|100) days_left=(5|44)\n$/);
    }
    // At certbot's renewal point of the short one (half left): no alarm yet.
    const half = await expiryCheck(SHORT, short.notBefore + Math.floor((short.notAfter - short.notBefore) / 2));
    expect(half.code, half.stderr).toBe(0);
    expect(half.stdout).toBe("percent_left=50 days_left=3\n");
    // 80% through the short certificate's life: 19% left (1 day), the alarm fires...
    const t = short.notBefore + Math.ceil(0.8 * (short.notAfter - short.notBefore));
    const fired = await expiryCheck(SHORT, t);
    expect(fired.code).toBe(2);
    expect(fired.stdout).toBe("percent_left=19 days_left=1\n");
    expect(fired.stderr).toMatch(/has 19% of its 6-day lifetime left, below threshold 25%: it expires in 1 day\(s\)/);
    // ...while the 45-day certificate at the same moment has most of its life left.
    const quiet = await expiryCheck(LONG, t);
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stdout).toMatch(/^percent_left=(8[5-9]|9\d) days_left=(39|40)\n$/);
    // The 45-day one at a third left (certbot's renewal point, 15 days) is fine; at a fifth
    // (9 days left, six days of failed renewals) it fires.
    const third = await expiryCheck(LONG, long.notAfter - 15 * DAY);
    expect(third.code).toBe(0);
    expect(third.stdout).toBe("percent_left=33 days_left=15\n");
    const fifth = await expiryCheck(LONG, long.notAfter - 9 * DAY);
    expect(fifth.code).toBe(2);
    expect(fifth.stdout).toBe("percent_left=20 days_left=9\n");
  });
});
