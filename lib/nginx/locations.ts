// Location blocks of the site's servers, each with the comment that says why
// it is there. Lines are unindented; the server generators indent them.
import { EdgeConfig } from "../config";
import { zoneName } from "./syntax";

/** The HSTS header; locations that set their own headers repeat it. */
export function hstsHeader(maxAge: number): string {
  return `add_header Strict-Transport-Security "max-age=${maxAge}; includeSubDomains" always;`;
}

/** ACME HTTP-01 challenges from the webroot, on port 80 and 443 alike. */
export function acmeChallengeLocation(webroot: string): string[] {
  return [
    "# ACME HTTP-01 challenges, served from the webroot over plain HTTP.",
    "# ^~ so that no regex location can shadow it.",
    "location ^~ /.well-known/acme-challenge/ {",
    `    root ${webroot};`,
    "    default_type text/plain;",
    "    try_files $uri =404;",
    "}",
  ];
}

/** Everything else on port 80 goes to HTTPS. */
export function httpsRedirectLocation(httpsPort: number): string[] {
  const port = httpsPort === 443 ? "" : `:${httpsPort}`;
  return ["location / {", `    return 301 https://$host${port}$request_uri;`, "}"];
}

export interface MaintenancePage {
  /** Directory holding maintenance.html. */
  dir: string;
  retryAfter: number;
  hstsMaxAge: number;
}

/** The maintenance page for a failing app: 503 with Retry-After. */
export function maintenancePageLocation(m: MaintenancePage): string[] {
  return [
    "# App down or restarting: the maintenance page, as 503 with Retry-After",
    "# (the seed's plain `error_page 502 503 504` keeps the upstream's 502).",
    "error_page 502 503 504 =503 /_fastapi_edge/maintenance.html;",
    "location = /_fastapi_edge/maintenance.html {",
    "    internal;",
    `    alias ${m.dir}/maintenance.html;`,
    "    default_type text/html;",
    `    add_header Retry-After ${m.retryAfter} always;`,
    '    add_header Cache-Control "no-store" always;',
    `    ${hstsHeader(m.hstsMaxAge)}`,
    "}",
  ];
}

/** Paths only scanners ask for: no response at all. */
export function scannerLocations(paths: string[]): string[] {
  return [
    "# Scanner paths: close the connection without a response (logged: status 444).",
    ...paths.map((p) => `location ^~ ${p} { return 444; }`),
  ];
}

export type AppLocationSettings = Pick<
  EdgeConfig,
  "maintenanceMode" | "staticPath" | "websocketPaths" | "websocketReadTimeout" | "rateLimits"
>;

// Cleared so nginx does not send `Connection: close`: upstream keepalive needs it.
const KEEPALIVE_CONNECTION = '    proxy_set_header Connection "";';

/**
 * The locations that serve the site, one part each: static files, WebSockets,
 * rate-limited paths and the app; or, in maintenance mode, the maintenance page
 * for everything.
 */
export function appLocations(s: AppLocationSettings, staticDir: string): string[][] {
  if (s.maintenanceMode) {
    return [["# maintenanceMode is on: every request gets the maintenance page.", "location / {", "    return 503;", "}"]];
  }
  return [
    [
      "# Static files straight from disk: the app never sees these requests.",
      `location ^~ ${s.staticPath} {`,
      `    alias ${staticDir}/;`,
      "    expires 30d;",
      "    access_log off;",
      "}",
    ],
    ...s.websocketPaths.map((w) => [
      "# WebSockets: upgrade headers and a read timeout long enough for idle sockets.",
      `location ^~ ${w} {`,
      "    include fastapi-edge/snippets/proxy.conf;",
      "    proxy_set_header Upgrade $http_upgrade;",
      "    proxy_set_header Connection $connection_upgrade;",
      `    proxy_read_timeout ${s.websocketReadTimeout};`,
      `    proxy_send_timeout ${s.websocketReadTimeout};`,
      "    proxy_buffering off;",
      "}",
    ]),
    ...s.rateLimits.map((r) => [
      `location = ${r.path} {`,
      r.burst > 0 ? `    limit_req zone=${zoneName(r.path)} burst=${r.burst} nodelay;` : `    limit_req zone=${zoneName(r.path)};`,
      "    include fastapi-edge/snippets/proxy.conf;",
      KEEPALIVE_CONNECTION,
      "}",
    ]),
    ["location / {", "    include fastapi-edge/snippets/proxy.conf;", KEEPALIVE_CONNECTION, "}"],
  ];
}
