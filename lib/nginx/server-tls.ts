// The port-443 servers: unknown names (SNI) are refused in the handshake; the
// site's server sets certificates, security headers and proxy timeouts, and
// holds the locations.
import { EdgeConfig } from "../config";
import {
  acmeChallengeLocation,
  appLocations,
  AppLocationSettings,
  hstsHeader,
  maintenancePageLocation,
  scannerLocations,
} from "./locations";
import { listenLines, serverBlock, versionAtLeast } from "./syntax";
import { HostLayout, Listen } from "./types";

export type TlsServerSettings = AppLocationSettings &
  Pick<
    EdgeConfig,
    | "domain"
    | "hstsMaxAge"
    | "limitConnPerIp"
    | "proxyConnectTimeout"
    | "proxyReadTimeout"
    | "proxySendTimeout"
    | "proxyBuffering"
    | "scannerPaths"
    | "http3"
  >;

export interface TlsServerOptions {
  layout: Pick<HostLayout, "certDir" | "maintenanceDir" | "acmeWebroot" | "staticDir">;
  listen: Listen;
  /** From 1.25.1 HTTP/2 is its own directive; before, a listen parameter. */
  nginxVersion: string;
  /** Retry-After seconds on the maintenance page. */
  retryAfter: number;
  /** Require a client certificate from the CA in fastapi-edge/origin-pull-ca.pem (authenticated origin pulls). */
  originPull?: boolean;
}

/** Where the origin-pull CA lands, relative to nginx's config dir (so a candidate tree tests its own copy). */
export const ORIGIN_PULL_CA = "fastapi-edge/origin-pull-ca.pem";

export function renderTlsServers(s: TlsServerSettings, o: TlsServerOptions): string[] {
  const http2Directive = versionAtLeast(o.nginxVersion, "1.25.1");
  if (s.http3 && !versionAtLeast(o.nginxVersion, "1.25")) {
    // Config validation refuses this; a caller overriding nginxVersion must not get a config nginx rejects.
    throw new Error(`http3 needs nginx 1.25 or newer, rendering for ${o.nginxVersion}`);
  }
  // QUIC listens (UDP) next to the TCP ones. reuseport may appear once per
  // address:port across all servers: the default server carries it, so each
  // worker gets its own UDP socket and the kernel keeps a QUIC connection's
  // packets on one worker. HTTP/3 is on by default on quic listens (`http3`).
  const listen = (extra: string, quic: string): string[] => [
    ...listenLines(o.listen, o.listen.https, http2Directive ? `ssl${extra}` : `ssl http2${extra}`),
    ...(s.http3 ? listenLines(o.listen, o.listen.https, `quic${quic}${extra}`) : []),
    ...(http2Directive ? ["http2 on;"] : []),
  ];
  const L = o.layout;
  return [
    s.http3
      ? "# Unknown Host names (SNI) on 443, TCP and QUIC: refuse the handshake, present no certificate."
      : "# Unknown Host names (SNI) on 443: refuse the handshake, present no certificate.",
    "# A request that got past it with the site's SNI but another Host header (:authority in",
    "# HTTP/2 and HTTP/3) lands here too: close without a response (logged: status 444, server _).",
    ...serverBlock([[...listen(" default_server", " reuseport"), "server_name _;", "ssl_reject_handshake on;", "return 444;"]]),
    "",
    ...serverBlock([
      [...listen("", ""), `server_name ${s.domain};`],
      [`ssl_certificate ${L.certDir}/fullchain.pem;`, `ssl_certificate_key ${L.certDir}/privkey.pem;`],
      ...(o.originPull
        ? [
            [
              "# Authenticated origin pulls: only a client with a certificate from this CA",
              "# (the CDN's) gets an answer; anyone else gets 400 and never reaches the app.",
              "# Port 80 (ACME challenges, the redirect) is not affected.",
              `ssl_client_certificate ${ORIGIN_PULL_CA};`,
              "ssl_verify_client on;",
            ],
          ]
        : []),
      [
        "# HSTS on every response (errors too: `always`). A location with its own",
        "# add_header loses this one, so such locations repeat it.",
        hstsHeader(s.hstsMaxAge),
        'add_header X-Content-Type-Options "nosniff" always;',
        ...(s.http3
          ? [
              "# HTTP/3: tell clients that came over TCP that the same origin answers over",
              "# QUIC on this UDP port, for a day. 0-RTT stays off (ssl_early_data's",
              "# default): early data can be replayed, and the app cannot tell a replay.",
              `add_header Alt-Svc 'h3=":${o.listen.https}"; ma=86400' always;`,
            ]
          : []),
      ],
      ...(s.limitConnPerIp > 0 ? [[`limit_conn fastapi_edge_conn ${s.limitConnPerIp};`]] : []),
      [
        "# Proxy timeouts and buffering (WebSocket locations override them).",
        `proxy_connect_timeout ${s.proxyConnectTimeout};`,
        `proxy_read_timeout ${s.proxyReadTimeout};`,
        `proxy_send_timeout ${s.proxySendTimeout};`,
        `proxy_buffering ${s.proxyBuffering ? "on" : "off"};`,
        "proxy_request_buffering on;",
        "proxy_buffer_size 16k;",
        "proxy_buffers 16 16k;",
        "proxy_busy_buffers_size 32k;",
      ],
      maintenancePageLocation({ dir: L.maintenanceDir, retryAfter: o.retryAfter, hstsMaxAge: s.hstsMaxAge }),
      acmeChallengeLocation(L.acmeWebroot),
      ...(s.scannerPaths.length ? [scannerLocations(s.scannerPaths)] : []),
      ...appLocations(s, L.staticDir),
    ]),
    "",
  ];
}
