// fastapi-edge/http.conf, the http-level settings: connection handling and
// slow clients, the access log, rate-limit and connection-limit zones, and
// the upstream of app processes.
import { EdgeConfig } from "../config";
import { snippetLines, zoneName } from "./syntax";
import { HostLayout } from "./types";

export type HttpSettings = Pick<
  EdgeConfig,
  | "clientHeaderTimeout"
  | "clientBodyTimeout"
  | "sendTimeout"
  | "keepaliveTimeout"
  | "clientMaxBodySize"
  | "accessLog"
  | "rateLimits"
  | "limitConnPerIp"
  | "upstreamMaxFails"
  | "upstreamFailTimeout"
  | "upstreamKeepalive"
>;

export interface HttpOptions {
  layout: Pick<HostLayout, "logDir" | "tempDir">;
  /** App ports, one upstream server each. */
  upstreamPorts: number[];
  /** Include the TLS settings (snippets/tls.conf): the site has TLS servers. */
  tls: boolean;
  /** Include realip.conf: a CDN or proxy stands in front and reports the client address. */
  realIp?: boolean;
}

export function renderHttpConf(s: HttpSettings, o: HttpOptions): string {
  const lines: string[] = [
    "# http-level settings for the fastapi-edge site.",
    "sendfile on;",
    "tcp_nopush on;",
    "tcp_nodelay on;",
    "server_tokens off;",
    "types_hash_max_size 2048;",
    "",
    "# Slow clients: nginx buffers them, so no app process waits on a slow network.",
    `client_header_timeout ${s.clientHeaderTimeout};`,
    `client_body_timeout ${s.clientBodyTimeout};`,
    `send_timeout ${s.sendTimeout};`,
    `keepalive_timeout ${s.keepaliveTimeout};`,
    "reset_timedout_connection on;",
    "client_body_buffer_size 128k;",
    "large_client_header_buffers 4 16k;",
    `client_max_body_size ${s.clientMaxBodySize};`,
    "",
    ...snippetLines("log-format.conf"),
    s.accessLog ? `access_log ${o.layout.logDir}/fastapi-edge.access.log fastapi_edge;` : "access_log off;",
    "",
  ];
  if (o.layout.tempDir) {
    for (const t of ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]) lines.push(`${t}_temp_path ${o.layout.tempDir}/${t};`);
    lines.push("");
  }
  if (o.tls) lines.push("include fastapi-edge/snippets/tls.conf;", "");
  if (o.realIp) lines.push("# The client address behind the CDN or proxy in front (frontedBy).", "include fastapi-edge/realip.conf;", "");
  lines.push(...snippetLines("websocket-upgrade.conf"), "");
  if (s.rateLimits.length) {
    lines.push("# Rate limits answer 429 (the default 503 would show the maintenance page).");
    for (const r of s.rateLimits) lines.push(`limit_req_zone $binary_remote_addr zone=${zoneName(r.path)}:10m rate=${r.rate};`);
    lines.push("limit_req_status 429;", "");
  }
  if (s.limitConnPerIp > 0) {
    lines.push("limit_conn_zone $binary_remote_addr zone=fastapi_edge_conn:10m;", "limit_conn_status 429;", "");
  }
  lines.push(...upstreamBlock(s, o.upstreamPorts), "");
  return lines.join("\n");
}

function upstreamBlock(s: HttpSettings, ports: number[]): string[] {
  return [
    "upstream fastapi_edge_app {",
    ...ports.map((p) => `    server 127.0.0.1:${p} max_fails=${s.upstreamMaxFails} fail_timeout=${s.upstreamFailTimeout};`),
    ...(s.upstreamKeepalive > 0
      ? [
          "    # Idle connections kept open to the app. This only engages because every",
          "    # proxied location sends HTTP/1.1 and clears the Connection header (see",
          "    # snippets/proxy.conf); the seed guide's `keepalive 32` alone never does.",
          `    keepalive ${s.upstreamKeepalive};`,
          "    # nginx closes an upstream connection after this many requests (1000 by",
          "    # default: one reconnect per 1,000 requests in steady state, measured).",
          "    keepalive_requests 10000;",
          "    # Shorter than uvicorn's --timeout-keep-alive, so nginx closes idle",
          "    # connections first and never reuses one the app is closing.",
          "    keepalive_timeout 60s;",
        ]
      : []),
    "}",
  ];
}
