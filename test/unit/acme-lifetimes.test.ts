// Certificate lifetimes and ACME profiles: pure parts (the certbot version
// gate, no OCSP stapling anywhere, the expiry units). The real certbot and
// Pebble behaviour is in test/live/acme-profiles.test.ts.
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../lib/config";
import { renderHostFiles } from "../../lib/hostfiles";
import { CERTBOT_PROFILES_SINCE, HOST_OS, HOST_OS_NAMES, versionAtLeast } from "../../lib/hostos";
import { renderExpiryUnits } from "../../lib/units";

const base = { domain: "api.example.com", email: "ops@example.com" };

describe("certbot version gate for acmeProfile", () => {
  it("versionAtLeast compares numerically, part by part", () => {
    expect(versionAtLeast("4.0", "4.0")).toBe(true);
    expect(versionAtLeast("4.0.1", "4.0")).toBe(true);
    expect(versionAtLeast("10.0", "4.0")).toBe(true);
    expect(versionAtLeast("2.9", "4.0")).toBe(false);
    expect(versionAtLeast("3.10", "4.0")).toBe(false);
    expect(versionAtLeast("4", "4.0.1")).toBe(false);
  });

  it("accepts acmeProfile exactly on the host systems whose certbot is 4.0 or newer", () => {
    for (const os of HOST_OS_NAMES) {
      const ok = versionAtLeast(HOST_OS[os].certbot, CERTBOT_PROFILES_SINCE);
      const parse = () => parseConfig({ ...base, hostOs: os, acmeProfile: "tlsserver" });
      if (ok) expect(parse().acmeProfile).toBe("tlsserver");
      else
        expect(parse).toThrow(
          new RegExp(`acmeProfile needs certbot 4\\.0 or newer .*hostOs ${os.replace(".", "\\.")} .*certbot ${HOST_OS[os].certbot}`),
        );
    }
    expect(HOST_OS["debian-13"].certbot).toBe("4.0");
  });
});

describe("no OCSP stapling (Let's Encrypt ended OCSP in 2025)", () => {
  it("no rendered nginx file turns on ssl_stapling, on any host system", () => {
    for (const os of HOST_OS_NAMES) {
      const set = renderHostFiles(parseConfig({ ...base, hostOs: os, alertEmail: "oncall@example.com" }), { phase: "full" });
      expect(set.nginx.length).toBeGreaterThan(3);
      for (const f of set.nginx) expect(f.content, `${os}: ${f.path}`).not.toMatch(/^\s*ssl_stapling/m);
    }
  });
});

describe("expiry check units", () => {
  it("run every 6 hours with the percentage threshold", () => {
    const u = renderExpiryUnits(parseConfig({ ...base, alertEmail: "oncall@example.com", certExpiryAlarmPercent: "20" }), "eu-west-1");
    expect(u.service).toContain("Environment=WARN_PERCENT=20\n");
    expect(u.service).not.toContain("WARN_DAYS");
    expect(u.timer).toContain("OnCalendar=*-*-* 00/6:00:00\n");
  });
});
