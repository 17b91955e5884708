// fastapi-edge/realip.conf, included at http level when something stands in
// front of nginx (frontedBy cloudflare or custom): the client address is
// restored from a header, and only on connections from the trusted blocks.
// At http level it applies to every server (the site, and the default
// servers that close unknown Host names), before any other module runs: the
// rate limits and connection limits ($binary_remote_addr), the access log
// ($remote_addr) and the headers sent to the app (snippets/proxy-headers.conf
// sends $remote_addr, overwriting what the client sent) all see the restored
// address. $realip_remote_addr keeps the proxy's own address.
import { RealIp } from "../config";

export function renderRealIpConf(r: RealIp): string {
  const source =
    r.frontedBy === "cloudflare"
      ? ["Cloudflare's published ranges, files/cdn/cloudflare-ips-v4.txt and -v6.txt", "(refresh: scripts/refresh-cloudflare-ips.sh)."]
      : ["the stack's trustedProxyCidrs."];
  return [
    "# The client's address as the CDN or proxy in front reports it. Only a",
    "# connection from these blocks may set it; from anywhere else the header",
    "# is ignored and the peer's own address stays. The blocks are",
    ...source.map((l) => `# ${l}`),
    ...r.cidrs.map((c) => `set_real_ip_from ${c};`),
    `real_ip_header ${r.header};`,
    ...(r.recursive
      ? [
          "# X-Forwarded-For is a chain (client, proxy1, proxy2...): read it from the",
          "# right, skipping trusted addresses, and take the first untrusted one.",
          "# Entries a client wrote itself sit left of it and are never taken.",
          "real_ip_recursive on;",
        ]
      : [`# ${r.header} holds one address, written by the proxy itself: no chain to walk.`, "real_ip_recursive off;"]),
    "",
  ].join("\n");
}
