// The nginx renderer: pure functions of validated config and the target
// host's layout, one generator per output file. No Pulumi import: `npm run
// render`, the tests and the program all call it, and `nginx -t` checks what
// it returns.
//
//   nginx.conf                             main.ts
//   fastapi-edge/http.conf                 http.ts
//   fastapi-edge/snippets/proxy.conf       proxy.ts
//   fastapi-edge/realip.conf               realip.ts (frontedBy cloudflare|custom)
//   fastapi-edge/origin-pull-ca.pem        the CA of originPullCaFile, as read
//   fastapi-edge/site.conf                 site.ts: server-http.ts (port 80),
//                                            server-tls.ts (443), locations.ts
//   fastapi-edge/snippets/tls.conf,        files/nginx/, as they are
//   fastapi-edge/snippets/proxy-headers.conf
//   maintenance.html                       files/maintenance/, as it is
//
// renderSite is the whole site with TLS; renderAcmeBootstrap (acme-bootstrap.ts)
// the HTTP-only config pushed once before the first certificate exists.
import { appPorts, EdgeConfig, realIp, targetNginxVersion, targetOpenSslVersion } from "../config";
import { shipped } from "../shipped";
import { commonStageFiles } from "./common-files";
import { renderHttpConf } from "./http";
import { renderMainConf } from "./main";
import { renderRealIpConf } from "./realip";
import { renderHttpServers } from "./server-http";
import { ORIGIN_PULL_CA, renderTlsServers } from "./server-tls";
import { renderSiteConf } from "./site";
import { HostLayout, Listen, StageFile } from "./types";

export type { HostLayout, Listen, StageFile } from "./types";
export { renderAcmeBootstrap } from "./acme-bootstrap";
export type { AcmeBootstrapOptions } from "./acme-bootstrap";
export { workerNofile } from "./main";
export { durationSeconds, parseVersion, versionAtLeast } from "./syntax";
export { CLASSIC_GROUPS, PQ_GROUPS, tlsGroups } from "./tls";

export interface SiteOptions {
  layout: HostLayout;
  listen: Listen;
  /** Defaults to the version config targets. */
  nginxVersion?: string;
  /** OpenSSL the target's nginx links against (major.minor); defaults to hostOs's. */
  opensslVersion?: string;
  /** Upstream app ports; defaults to those derived from config. */
  upstreamPorts?: number[];
  /** App hosts' private addresses (appHosts / appHostCount); unset: the app on the edge (127.0.0.1). */
  upstreamHosts?: string[];
  /** Retry-After seconds on the maintenance page. */
  retryAfter?: number;
  /** The origin-pull CA's PEM text (hostfiles.ts readOriginPullCa), required when config sets originPullCaFile. */
  originPullCaPem?: string;
}

/** The full site, with TLS: the stage the nginx-site step pushes. */
export function renderSite(c: EdgeConfig, o: SiteOptions): StageFile[] {
  const ports = o.upstreamPorts ?? appPorts(c);
  const nginxVersion = o.nginxVersion ?? targetNginxVersion(c);
  const hosts = o.upstreamHosts?.length ? o.upstreamHosts : undefined;
  const common = commonStageFiles(o.layout, ports, hosts?.length ?? 1, c.proxyForwardedHeaders);
  if (c.originPullCaFile && o.originPullCaPem === undefined) {
    throw new Error(`originPullCaFile is set (${c.originPullCaFile}) but its PEM text was not read (readOriginPullCa)`);
  }
  const caPem = c.originPullCaFile ? o.originPullCaPem : undefined;
  const originPull = caPem !== undefined;
  const real = realIp(c);
  const site = renderSiteConf([
    renderHttpServers({ domain: c.domain, listen: o.listen, acmeWebroot: o.layout.acmeWebroot }),
    renderTlsServers(c, {
      layout: o.layout,
      listen: o.listen,
      nginxVersion,
      retryAfter: o.retryAfter ?? 30,
      originPull,
    }),
  ]);
  return [
    { path: "conf/nginx.conf", content: renderMainConf(o.layout, c.workerConnections) },
    {
      path: "conf/fastapi-edge/http.conf",
      content: renderHttpConf(c, {
        layout: o.layout,
        upstreamPorts: ports,
        ...(hosts ? { upstreamHosts: hosts } : {}),
        ...(c.appUpstream === "unix" ? { upstreamSocketDir: o.layout.appSocketDir } : {}),
        tls: { opensslVersion: o.opensslVersion ?? targetOpenSslVersion(c) },
        realIp: real !== null,
        nginxVersion,
      }),
    },
    ...(real ? [{ path: "conf/fastapi-edge/realip.conf", content: renderRealIpConf(real) }] : []),
    { path: "conf/fastapi-edge/snippets/tls.conf", content: shipped("nginx/tls-intermediate.conf") },
    ...(caPem !== undefined ? [{ path: `conf/${ORIGIN_PULL_CA}`, content: caPem }] : []),
    common.proxyHeaders,
    common.proxy,
    { path: "conf/fastapi-edge/site.conf", content: site },
    common.maintenance,
  ];
}
