// The nginx renderer: a pure function of validated config and the target host's
// layout. No Pulumi import: `npm run render`, the tests and the program all call
// it, and `nginx -t` checks what it returns.
//
// Output is a list of files in the stage layout that files/scripts/nginx-apply.sh
// installs: `conf/...` relative to the nginx config dir, `extra/...` absolute
// paths of other files. The main nginx.conf uses only relative includes, so a
// candidate tree can be tested in a scratch copy before anything goes live.
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { appPorts, EdgeConfig, targetNginxVersion } from "./config";

export const FILES_DIR = path.resolve(__dirname, "..", "files");

export interface HostLayout {
  /** nginx's config directory (the stage's `conf/` lands here). */
  nginxConfDir: string;
  /** ACME HTTP-01 webroot. */
  acmeWebroot: string;
  /** Directory holding maintenance.html. */
  maintenanceDir: string;
  /** Directory nginx serves the static URL path from. */
  staticDir: string;
  /** Directory for access and error logs. */
  logDir: string;
  pidFile: string;
  /** Directory with fullchain.pem and privkey.pem. */
  certDir: string;
  /** Unix user for worker processes; null keeps the invoking user (tests). */
  workerUser: string | null;
  /** Load the distribution's dynamic modules (modules-enabled/). */
  loadDistroModules: boolean;
  /** Directory for nginx's temp files; null keeps the compiled-in default. */
  tempDir: string | null;
}

export interface Listen {
  /** Address for listen directives; null means all IPv4 and IPv6 addresses. */
  address: string | null;
  http: number;
  https: number;
}

export interface RenderOptions {
  /**
   * `acme-bootstrap`: HTTP only (ACME webroot plus redirect), used once before
   * the first certificate exists. `full`: the whole site with TLS.
   */
  phase: "acme-bootstrap" | "full";
  layout: HostLayout;
  listen: Listen;
  nginxVersion?: string;
  /** Upstream app ports; defaults to those derived from config. */
  upstreamPorts?: number[];
  /** Retry-After seconds on the maintenance page. */
  retryAfter?: number;
}

export interface RenderedFile {
  /** Stage-relative path: `conf/...` or `extra/<absolute path without leading slash>`. */
  path: string;
  content: string;
}

export const HOST_LAYOUT: HostLayout = {
  nginxConfDir: "/etc/nginx",
  acmeWebroot: "/var/www/letsencrypt",
  maintenanceDir: "/var/www/fastapi-edge",
  staticDir: "/opt/fastapi-edge/app/static",
  logDir: "/var/log/nginx",
  pidFile: "/run/nginx.pid",
  certDir: "/etc/letsencrypt/live/DOMAIN",
  workerUser: "www-data",
  loadDistroModules: true,
  tempDir: null,
};

export const PUBLIC_LISTEN: Listen = { address: null, http: 80, https: 443 };

/** The production layout for a domain (the cert dir is per domain). */
export function hostLayout(c: EdgeConfig, staticDir: string = HOST_LAYOUT.staticDir): HostLayout {
  return { ...HOST_LAYOUT, staticDir, certDir: `/etc/letsencrypt/live/${c.domain}` };
}

export function readTemplate(rel: string): string {
  return readFileSync(path.join(FILES_DIR, rel), "utf8");
}

// ------------------------------------------------------------------ helpers

/** nginx version as comparable [major, minor, patch]. */
export function parseVersion(v: string): [number, number, number] {
  const [a = 0, b = 0, c = 0] = v.split(".").map(Number);
  return [a, b, c];
}

export function versionAtLeast(v: string, min: string): boolean {
  const x = parseVersion(v);
  const y = parseVersion(min);
  for (let i = 0; i < 3; i++) if (x[i]! !== y[i]!) return x[i]! > y[i]!;
  return true;
}

/** Seconds in an nginx duration (validated form: digits + ms|s|m|h). */
export function durationSeconds(d: string): number {
  const m = /^([0-9]+)(ms|s|m|h)$/.exec(d);
  if (!m) throw new Error(`not an nginx duration: ${d}`);
  const n = Number(m[1]);
  return m[2] === "ms" ? n / 1000 : m[2] === "s" ? n : m[2] === "m" ? n * 60 : n * 3600;
}

/** Indent a block of lines (empty lines stay empty). */
function indent(text: string, by = "    "): string {
  return text
    .split("\n")
    .map((l) => (l.trim() === "" ? "" : by + l))
    .join("\n");
}

function listenLines(l: Listen, port: number, opts: string): string[] {
  const suffix = opts ? ` ${opts}` : "";
  if (l.address) return [`listen ${l.address}:${port}${suffix};`];
  return [`listen ${port}${suffix};`, `listen [::]:${port}${suffix};`];
}

function zoneName(p: string): string {
  const slug = p.replace(/[^A-Za-z0-9]+/g, "_").replace(/^_+|_+$/g, "");
  return `rl_${slug || "root"}`;
}

/** File descriptors a worker needs: client + upstream socket per connection, plus files. */
export function workerNofile(c: EdgeConfig): number {
  return c.workerConnections * 2 + 1024;
}

// ------------------------------------------------------------------- render

export function renderNginx(c: EdgeConfig, o: RenderOptions): RenderedFile[] {
  const version = o.nginxVersion ?? targetNginxVersion(c);
  const http2Directive = versionAtLeast(version, "1.25.1");
  const ports = o.upstreamPorts ?? appPorts(c);
  const L = o.layout;
  const retryAfter = o.retryAfter ?? 30;
  const full = o.phase === "full";
  // Cleared so nginx does not send `Connection: close`: upstream keepalive needs it.
  const keepaliveConnection = '        proxy_set_header Connection "";';
  const hsts = `add_header Strict-Transport-Security "max-age=${c.hstsMaxAge}; includeSubDomains" always;`;
  const files: RenderedFile[] = [];

  // ---- nginx.conf (main context)
  const main = [
    "# Rendered by fastapi-edge. Do not edit on the host: the next `pulumi up` replaces it.",
    "# Includes are relative to this file's directory, so a candidate copy of the",
    "# whole tree can be checked with `nginx -t -c CANDIDATE/nginx.conf` before it goes live.",
    ...(L.workerUser ? [`user ${L.workerUser};`] : []),
    "worker_processes auto;",
    `# Raised from the distribution default so ${c.workerConnections} connections per worker,`,
    "# each with a client and an upstream socket, never run out of descriptors.",
    `worker_rlimit_nofile ${workerNofile(c)};`,
    `pid ${L.pidFile};`,
    `error_log ${L.logDir}/error.log warn;`,
    ...(L.loadDistroModules ? ["include modules-enabled/*.conf;"] : []),
    "",
    "events {",
    `    worker_connections ${c.workerConnections};`,
    "    multi_accept on;",
    "}",
    "",
    "http {",
    "    include mime.types;",
    "    default_type application/octet-stream;",
    "    include fastapi-edge/http.conf;",
    "    include fastapi-edge/site.conf;",
    "}",
    "",
  ];
  files.push({ path: "conf/nginx.conf", content: main.join("\n") });

  // ---- http-level settings
  const httpConf: string[] = [
    "# http-level settings for the fastapi-edge site.",
    "sendfile on;",
    "tcp_nopush on;",
    "tcp_nodelay on;",
    "server_tokens off;",
    "types_hash_max_size 2048;",
    "",
    "# Slow clients: nginx buffers them, so no app process waits on a slow network.",
    `client_header_timeout ${c.clientHeaderTimeout};`,
    `client_body_timeout ${c.clientBodyTimeout};`,
    `send_timeout ${c.sendTimeout};`,
    `keepalive_timeout ${c.keepaliveTimeout};`,
    "reset_timedout_connection on;",
    "client_body_buffer_size 128k;",
    "large_client_header_buffers 4 16k;",
    `client_max_body_size ${c.clientMaxBodySize};`,
    "",
    "log_format fastapi_edge '$remote_addr - $remote_user [$time_local] \"$request\" '",
    "                        '$status $body_bytes_sent \"$http_referer\" \"$http_user_agent\" '",
    "                        'rt=$request_time uct=$upstream_connect_time urt=$upstream_response_time ups=$upstream_addr';",
    c.accessLog ? `access_log ${L.logDir}/fastapi-edge.access.log fastapi_edge;` : "access_log off;",
    "",
  ];
  if (L.tempDir) {
    for (const t of ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]) {
      httpConf.push(`${t}_temp_path ${L.tempDir}/${t};`);
    }
    httpConf.push("");
  }
  if (full) {
    httpConf.push("include fastapi-edge/snippets/tls.conf;", "");
  }
  httpConf.push(
    "# WebSocket upgrade: `Connection: upgrade` only when the client asked for it.",
    "map $http_upgrade $connection_upgrade {",
    "    default upgrade;",
    "    ''      close;",
    "}",
    "",
  );
  if (c.rateLimits.length) {
    httpConf.push("# Rate limits answer 429 (the default 503 would show the maintenance page).");
    for (const r of c.rateLimits) {
      httpConf.push(`limit_req_zone $binary_remote_addr zone=${zoneName(r.path)}:10m rate=${r.rate};`);
    }
    httpConf.push("limit_req_status 429;", "");
  }
  if (c.limitConnPerIp > 0) {
    httpConf.push("limit_conn_zone $binary_remote_addr zone=fastapi_edge_conn:10m;", "limit_conn_status 429;", "");
  }
  httpConf.push(
    "upstream fastapi_edge_app {",
    ...ports.map(
      (p) => `    server 127.0.0.1:${p} max_fails=${c.upstreamMaxFails} fail_timeout=${c.upstreamFailTimeout};`,
    ),
  );
  if (c.upstreamKeepalive > 0) {
    httpConf.push(
      "    # Idle connections kept open to the app. This only engages because every",
      "    # proxied location sends HTTP/1.1 and clears the Connection header (see",
      "    # snippets/proxy.conf); the seed guide's `keepalive 32` alone never does.",
      `    keepalive ${c.upstreamKeepalive};`,
      "    # nginx closes an upstream connection after this many requests (1000 by",
      "    # default: one reconnect per 1,000 requests in steady state, measured).",
      "    keepalive_requests 10000;",
      "    # Shorter than uvicorn's --timeout-keep-alive, so nginx closes idle",
      "    # connections first and never reuses one the app is closing.",
      "    keepalive_timeout 60s;",
    );
  }
  httpConf.push("}", "");
  files.push({ path: "conf/fastapi-edge/http.conf", content: httpConf.join("\n") });

  // ---- snippets
  if (full) files.push({ path: "conf/fastapi-edge/snippets/tls.conf", content: readTemplate("nginx/tls-intermediate.conf") });
  files.push({ path: "conf/fastapi-edge/snippets/proxy-headers.conf", content: readTemplate("nginx/proxy-headers.conf") });
  const proxyConf = [
    "# Proxy to the app over HTTP/1.1 (needed for upstream keepalive and WebSockets).",
    "# Timeouts and buffering are set per server, so a location can override them.",
    "# Each location also sets the Connection header: cleared (keepalive) or upgrade.",
    "proxy_pass http://fastapi_edge_app;",
    "proxy_http_version 1.1;",
    "include fastapi-edge/snippets/proxy-headers.conf;",
    "# Failover: a request that failed on one app process is retried on the next,",
    "# but only when it is idempotent (nginx never retries POST, PATCH or LOCK",
    "# unless told to with non_idempotent, which we do not).",
    "proxy_next_upstream error timeout http_502 http_503;",
    `proxy_next_upstream_tries ${Math.max(2, ports.length)};`,
    "",
  ];
  files.push({ path: "conf/fastapi-edge/snippets/proxy.conf", content: proxyConf.join("\n") });

  // ---- servers
  const site: string[] = ["# Servers for the fastapi-edge site.", ""];
  const acmeLocation = [
    "# ACME HTTP-01 challenges, served from the webroot over plain HTTP.",
    "# ^~ so that no regex location can shadow it.",
    "location ^~ /.well-known/acme-challenge/ {",
    `    root ${L.acmeWebroot};`,
    "    default_type text/plain;",
    "    try_files $uri =404;",
    "}",
  ];
  const httpsPortSuffix = o.listen.https === 443 ? "" : `:${o.listen.https}`;
  site.push(
    "# Unknown Host names on port 80: close without a response.",
    "server {",
    indent(listenLines(o.listen, o.listen.http, "default_server").join("\n")),
    "    server_name _;",
    "    access_log off;",
    "    return 444;",
    "}",
    "",
    "server {",
    indent(listenLines(o.listen, o.listen.http, "").join("\n")),
    `    server_name ${c.domain};`,
    "",
    indent(acmeLocation.join("\n")),
    "",
    "    location / {",
    `        return 301 https://$host${httpsPortSuffix}$request_uri;`,
    "    }",
    "}",
    "",
  );

  if (full) {
    const tlsListen = (extra: string) =>
      http2Directive ? listenLines(o.listen, o.listen.https, `ssl${extra}`) : listenLines(o.listen, o.listen.https, `ssl http2${extra}`);
    site.push(
      "# Unknown Host names (SNI) on 443: refuse the handshake, present no certificate.",
      "server {",
      indent(tlsListen(" default_server").join("\n")),
      ...(http2Directive ? ["    http2 on;"] : []),
      "    server_name _;",
      "    access_log off;",
      "    ssl_reject_handshake on;",
      "}",
      "",
      "server {",
      indent(tlsListen("").join("\n")),
      ...(http2Directive ? ["    http2 on;"] : []),
      `    server_name ${c.domain};`,
      "",
      `    ssl_certificate ${L.certDir}/fullchain.pem;`,
      `    ssl_certificate_key ${L.certDir}/privkey.pem;`,
      "",
      "    # HSTS on every response (errors too: `always`). A location with its own",
      "    # add_header loses this one, so such locations repeat it.",
      `    ${hsts}`,
      '    add_header X-Content-Type-Options "nosniff" always;',
      "",
    );
    if (c.limitConnPerIp > 0) site.push(`    limit_conn fastapi_edge_conn ${c.limitConnPerIp};`, "");
    site.push(
      "    # Proxy timeouts and buffering (WebSocket locations override them).",
      `    proxy_connect_timeout ${c.proxyConnectTimeout};`,
      `    proxy_read_timeout ${c.proxyReadTimeout};`,
      `    proxy_send_timeout ${c.proxySendTimeout};`,
      `    proxy_buffering ${c.proxyBuffering ? "on" : "off"};`,
      "    proxy_request_buffering on;",
      "    proxy_buffer_size 16k;",
      "    proxy_buffers 16 16k;",
      "    proxy_busy_buffers_size 32k;",
      "",
      "    # App down or restarting: the maintenance page, as 503 with Retry-After",
      "    # (the seed's plain `error_page 502 503 504` keeps the upstream's 502).",
      "    error_page 502 503 504 =503 /_fastapi_edge/maintenance.html;",
      "    location = /_fastapi_edge/maintenance.html {",
      "        internal;",
      `        alias ${L.maintenanceDir}/maintenance.html;`,
      "        default_type text/html;",
      `        add_header Retry-After ${retryAfter} always;`,
      '        add_header Cache-Control "no-store" always;',
      `        ${hsts}`,
      "    }",
      "",
      indent(acmeLocation.join("\n")),
      "",
    );
    if (c.scannerPaths.length) {
      site.push("    # Scanner paths: close the connection without a response.");
      for (const p of c.scannerPaths) site.push(`    location ^~ ${p} { access_log off; return 444; }`);
      site.push("");
    }
    if (c.maintenanceMode) {
      site.push(
        "    # maintenanceMode is on: every request gets the maintenance page.",
        "    location / {",
        "        return 503;",
        "    }",
        "}",
        "",
      );
    } else {
      site.push(
        "    # Static files straight from disk: the app never sees these requests.",
        `    location ^~ ${c.staticPath} {`,
        `        alias ${L.staticDir}/;`,
        "        expires 30d;",
        "        access_log off;",
        "    }",
        "",
      );
      for (const w of c.websocketPaths) {
        site.push(
          "    # WebSockets: upgrade headers and a read timeout long enough for idle sockets.",
          `    location ^~ ${w} {`,
          "        include fastapi-edge/snippets/proxy.conf;",
          "        proxy_set_header Upgrade $http_upgrade;",
          "        proxy_set_header Connection $connection_upgrade;",
          `        proxy_read_timeout ${c.websocketReadTimeout};`,
          `        proxy_send_timeout ${c.websocketReadTimeout};`,
          "        proxy_buffering off;",
          "    }",
          "",
        );
      }
      for (const r of c.rateLimits) {
        site.push(
          `    location = ${r.path} {`,
          r.burst > 0 ? `        limit_req zone=${zoneName(r.path)} burst=${r.burst} nodelay;` : `        limit_req zone=${zoneName(r.path)};`,
          "        include fastapi-edge/snippets/proxy.conf;",
          keepaliveConnection,
          "    }",
          "",
        );
      }
      site.push("    location / {", "        include fastapi-edge/snippets/proxy.conf;", keepaliveConnection, "    }", "}", "");
    }
  }
  files.push({ path: "conf/fastapi-edge/site.conf", content: site.join("\n") });

  files.push({
    path: `extra${L.maintenanceDir}/maintenance.html`,
    content: readTemplate("maintenance/maintenance.html"),
  });
  return files;
}
