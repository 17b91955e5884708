// What stands in front of nginx (a CDN or a load balancer): the address
// ranges nginx trusts to tell it the client's address, and the shipped lists
// of Cloudflare's published ranges (files/cdn/). Pure: no Pulumi import.
import { isIPv4, isIPv6 } from "node:net";
import { shipped } from "./shipped";

export type IpFamily = "v4" | "v6";

/** The shipped lists of Cloudflare's ranges (files/cdn/), refreshed by scripts/refresh-cloudflare-ips.sh. */
export const CLOUDFLARE_FILES: Record<IpFamily, string> = {
  v4: "cdn/cloudflare-ips-v4.txt",
  v6: "cdn/cloudflare-ips-v6.txt",
};

/** The header Cloudflare writes the visitor's address into (one address, set by Cloudflare itself). */
export const CLOUDFLARE_HEADER = "CF-Connecting-IP";

function ipv4Bits(a: string): bigint {
  return a.split(".").reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
}

function ipv6Bits(a: string): bigint {
  let s = a;
  // An embedded IPv4 tail (::ffff:192.0.2.1) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const n = ipv4Bits(v4[1]!);
    s = s.slice(0, -v4[1]!.length) + `${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head = "", tail] = s.split("::");
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** The family of a CIDR block, or null when it is not one (address/prefix, prefix in range). */
export function cidrFamily(cidr: string): IpFamily | null {
  const m = /^([0-9A-Fa-f:.]+)\/([0-9]{1,3})$/.exec(cidr);
  if (!m) return null;
  const prefix = Number(m[2]);
  if (isIPv4(m[1]!) && prefix <= 32 && String(prefix) === m[2]) return "v4";
  if (isIPv6(m[1]!) && prefix <= 128 && String(prefix) === m[2]) return "v6";
  return null;
}

/**
 * True when the block's address has no bits set below its prefix (10.0.0.0/8,
 * not 10.0.0.1/8): nginx warns about such "low address bits" and AWS refuses
 * them in security group rules.
 */
export function isNetworkAddress(cidr: string): boolean {
  const family = cidrFamily(cidr);
  if (!family) return false;
  const [addr, p] = cidr.split("/") as [string, string];
  const width = family === "v4" ? 32n : 128n;
  const bits = family === "v4" ? ipv4Bits(addr) : ipv6Bits(addr);
  const hostBits = width - BigInt(Number(p));
  return (bits & ((1n << hostBits) - 1n)) === 0n;
}

/** The prefix length of a valid CIDR block. */
export function prefixLength(cidr: string): number {
  return Number(cidr.split("/")[1]);
}

/**
 * A ranges file: one CIDR block a line, `#` comments and blank lines ignored.
 * Throws naming the file and line for anything else (a wrong family, host
 * bits set, a /0).
 */
export function parseCidrList(text: string, family: IpFamily, source: string): string[] {
  const out: string[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const where = `${source}:${i + 1}`;
    if (cidrFamily(line) !== family) throw new Error(`${where}: not an IP${family} CIDR block: ${JSON.stringify(line)}`);
    if (!isNetworkAddress(line)) throw new Error(`${where}: host bits set below the prefix: ${line}`);
    if (prefixLength(line) === 0) throw new Error(`${where}: a /0 is the whole internet, never a CDN's range: ${line}`);
    if (out.includes(line)) throw new Error(`${where}: listed twice: ${line}`);
    out.push(line);
  });
  if (!out.length) throw new Error(`${source}: no CIDR blocks`);
  return out;
}

/** Cloudflare's published ranges as shipped in files/cdn/, IPv4 then IPv6. */
export function cloudflareRanges(): Record<IpFamily, string[]> {
  return {
    v4: parseCidrList(shipped(CLOUDFLARE_FILES.v4), "v4", `files/${CLOUDFLARE_FILES.v4}`),
    v6: parseCidrList(shipped(CLOUDFLARE_FILES.v6), "v6", `files/${CLOUDFLARE_FILES.v6}`),
  };
}

/** Split CIDR blocks by family. */
export function byFamily(cidrs: readonly string[]): Record<IpFamily, string[]> {
  return { v4: cidrs.filter((c) => cidrFamily(c) === "v4"), v6: cidrs.filter((c) => cidrFamily(c) === "v6") };
}

/** AWS's default quota of inbound rules per security group, counted separately for IPv4 and IPv6. */
export const SG_INBOUND_RULES_PER_FAMILY = 60;
