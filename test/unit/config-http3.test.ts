// The http3 setting: accepted where the target's nginx has QUIC (1.25+),
// refused with the key and the reason elsewhere and in ALB mode.
import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig, RawConfig } from "../../lib/config";

const base = { domain: "api.example.com", email: "ops@example.com" };

function errorOf(raw: RawConfig): string {
  try {
    parseConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.message;
    throw e;
  }
  return "";
}

describe("http3", () => {
  it("is off by default and accepted on Debian 13 (nginx 1.26)", () => {
    expect(parseConfig(base).http3).toBe(false);
    expect(parseConfig({ ...base, http3: "true" }).http3).toBe(true);
    expect(parseConfig({ ...base, http3: "true", hostOs: "debian-13" }).http3).toBe(true);
  });

  it("is accepted on an older OS when nginxVersion says a newer nginx is installed", () => {
    expect(parseConfig({ ...base, http3: "true", hostOs: "debian-12", nginxVersion: "1.30" }).http3).toBe(true);
    expect(parseConfig({ ...base, http3: "true", hostOs: "ubuntu-24.04", nginxVersion: "1.25" }).http3).toBe(true);
  });

  it("is accepted on any OS with nginxSource nginx.org (nginx 1.30)", () => {
    expect(parseConfig({ ...base, http3: "true", hostOs: "debian-12", nginxSource: "nginx.org" }).http3).toBe(true);
    expect(parseConfig({ ...base, http3: "true", hostOs: "ubuntu-24.04", nginxSource: "nginx.org" }).http3).toBe(true);
  });

  it("is refused where the target's nginx is older than 1.25, naming the key and the way out", () => {
    expect(errorOf({ ...base, http3: "true", hostOs: "debian-12" })).toContain(
      'fastapi-edge:http3 needs nginx 1.25 or newer (QUIC), but hostOs debian-12 packages nginx 1.22: use hostOs debian-13 or nginxSource nginx.org, or install a newer nginx and set nginxVersion (got "true")',
    );
    expect(errorOf({ ...base, http3: "true", hostOs: "ubuntu-24.04" })).toMatch(
      /http3 needs nginx 1\.25 or newer .*hostOs ubuntu-24\.04 packages nginx 1\.24/,
    );
    expect(errorOf({ ...base, http3: "true", nginxVersion: "1.24.0" })).toMatch(
      /http3 needs nginx 1\.25 or newer \(QUIC\), but nginxVersion is 1\.24\.0/,
    );
  });

  it("is refused in ALB mode", () => {
    const alb = { domain: "api.example.com", frontend: "alb", route53ZoneId: "Z0123456789ABC" };
    expect(parseConfig(alb).http3).toBe(false);
    expect(errorOf({ ...alb, http3: "true" })).toMatch(
      /fastapi-edge:http3 must be false when frontend is alb \(nginx serves HTTP\/3; an Application Load Balancer does not\)/,
    );
  });

  it("takes only true or false", () => {
    expect(errorOf({ ...base, http3: "yes" })).toMatch(/fastapi-edge:http3 must be true or false/);
  });
});
