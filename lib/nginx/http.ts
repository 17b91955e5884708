// fastapi-edge/http.conf, the http-level settings: connection handling and
// slow clients, the access log, rate-limit and connection-limit zones, and
// the upstream of app processes.
import { EdgeConfig } from "../config";
import { durationSeconds, snippetLines, versionAtLeast, zoneName } from "./syntax";
import { tlsGroupLines } from "./tls";
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
  /** App ports, one upstream server each (on every upstream host). */
  upstreamPorts: number[];
  /**
   * App hosts' addresses (appHosts / appHostCount): every host:port is an
   * upstream server. Unset: the app on the edge, 127.0.0.1:port.
   */
  upstreamHosts?: string[];
  /**
   * appUpstream unix: the directory of the app processes' sockets; each port's
   * server is unix:DIR/app-PORT.sock. Not with upstreamHosts.
   */
  upstreamSocketDir?: string;
  /**
   * The site has TLS servers: include the TLS settings (snippets/tls.conf) and
   * set the key-exchange groups the target's OpenSSL (major.minor) supports.
   */
  tls: false | { opensslVersion: string };
  /** Include realip.conf: a CDN or proxy stands in front and reports the client address. */
  realIp?: boolean;
  /**
   * The target's nginx version, for version-dependent directives; unset (the
   * ACME bootstrap, whose text must not depend on settings) renders none.
   */
  nginxVersion?: string;
}

/** nginx version that added keepalive_min_timeout. */
export const KEEPALIVE_MIN_TIMEOUT_SINCE = "1.27.4";
/**
 * keepalive_min_timeout in seconds, capped by keepalive_timeout. Long enough
 * to cover the gap between two requests of an active client (a page's next
 * requests, an API client's next call: well under a second to a few seconds),
 * short because an old worker generation stays alive after a reload until its
 * connections have been idle this long, and a connection inside it is not
 * reclaimed when worker_connections run out. See docs/nginx-versions.md.
 */
export const KEEPALIVE_MIN_TIMEOUT_S = 5;

/**
 * `keepalive_min_timeout`, where the target has it (1.27.4+): a keep-alive
 * connection is not closed for that long after a response, neither for reuse
 * nor by a graceful shutdown, so an old worker after a reload no longer closes
 * a connection on which the client is already sending its next request.
 */
export function keepaliveMinTimeoutLines(keepaliveTimeout: string, nginxVersion: string | undefined): string[] {
  if (nginxVersion === undefined || !versionAtLeast(nginxVersion, KEEPALIVE_MIN_TIMEOUT_SINCE)) return [];
  const s = Math.min(KEEPALIVE_MIN_TIMEOUT_S, durationSeconds(keepaliveTimeout));
  // Whole seconds keep the value valid (a sub-second keepalive_timeout renders in ms).
  const value = Number.isInteger(s) ? `${s}s` : `${Math.round(s * 1000)}ms`;
  return [
    "# Reloads: an old worker keeps a keep-alive connection open this long after its",
    "# last response instead of closing it under a client that is already sending",
    "# the next request (nginx >= 1.27.4; before, that request is lost).",
    `keepalive_min_timeout ${value};`,
  ];
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
    ...keepaliveMinTimeoutLines(s.keepaliveTimeout, o.nginxVersion),
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
  if (o.tls) lines.push("include fastapi-edge/snippets/tls.conf;", ...tlsGroupLines(o.tls.opensslVersion), "");
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
  lines.push(...upstreamBlock(s, upstreamServers(o.upstreamPorts, o.upstreamHosts, o.upstreamSocketDir)), "");
  return lines.join("\n");
}

/**
 * The upstream's servers, as address:port (unix:PATH with a socket directory). With app hosts, port by port across
 * the hosts (h1:p1, h2:p1, h1:p2, h2:p2): round-robin walks the list in order
 * and a retry takes the next server, so consecutive picks and a failed
 * request's next try land on another host, not on a sibling process of a host
 * that may be down as a whole.
 */
export function upstreamServers(ports: number[], hosts?: string[], socketDir?: string): string[] {
  if (socketDir !== undefined) {
    if (hosts !== undefined) throw new Error("an upstream of unix sockets has no app hosts (appUpstream unix is for the app on the edge)");
    return ports.map((p) => `unix:${appSocketPath(socketDir, p)}`);
  }
  if (hosts === undefined) return ports.map((p) => `127.0.0.1:${p}`);
  return ports.flatMap((p) => hosts.map((h) => `${h}:${p}`));
}

/** The unix socket app process `port` serves (appUpstream unix; run-app.sh's APP_UDS_DIR/app-PORT.sock). */
export function appSocketPath(socketDir: string, port: number): string {
  return `${socketDir}/app-${port}.sock`;
}

function upstreamBlock(s: HttpSettings, servers: string[]): string[] {
  return [
    "upstream fastapi_edge_app {",
    ...servers.map((a) => `    server ${a} max_fails=${s.upstreamMaxFails} fail_timeout=${s.upstreamFailTimeout};`),
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
