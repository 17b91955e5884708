// The HTTP-only config pushed once, before the first certificate exists:
// nginx -t refuses a TLS server whose certificate file is missing, yet the
// HTTP-01 challenge needs nginx serving the ACME webroot on port 80. It has
// the port-80 servers of the full site and no TLS at all.
//
// It takes only the domain, the host layout and the listen ports. Every other
// value is fixed below, not read from config: the step runs while no
// certificate exists, and its text must not change when a setting does (a
// changed text re-runs the step on every host). The HTTP-only site proxies
// nothing, so none of these values matter to it; they are the defaults this
// config has always been rendered with, kept so its text stays what existing
// hosts were sent.
import { HttpSettings, renderHttpConf } from "./http";
import { commonStageFiles, type ForwardedHeaders } from "./common-files";
import { renderMainConf } from "./main";
import { renderHttpServers } from "./server-http";
import { renderSiteConf } from "./site";
import { HostLayout, Listen, StageFile } from "./types";

export interface AcmeBootstrapOptions {
  domain: string;
  layout: HostLayout;
  listen: Listen;
  /** proxyForwardedHeaders (default minimal). */
  forwardedHeaders?: ForwardedHeaders;
}

const WORKER_CONNECTIONS = 16384;
const UPSTREAM_PORTS = [8000, 8001];
const HTTP: HttpSettings = {
  clientHeaderTimeout: "10s",
  clientBodyTimeout: "10s",
  sendTimeout: "10s",
  keepaliveTimeout: "65s",
  clientMaxBodySize: "10m",
  accessLog: true,
  rateLimits: [{ path: "/auth/token", rate: "5r/m", burst: 10 }],
  limitConnPerIp: 0,
  upstreamMaxFails: 3,
  upstreamFailTimeout: "10s",
  upstreamKeepalive: 32,
};

export function renderAcmeBootstrap(o: AcmeBootstrapOptions): StageFile[] {
  const common = commonStageFiles(o.layout, UPSTREAM_PORTS, 1, o.forwardedHeaders ?? "minimal");
  return [
    { path: "conf/nginx.conf", content: renderMainConf(o.layout, WORKER_CONNECTIONS) },
    { path: "conf/fastapi-edge/http.conf", content: renderHttpConf(HTTP, { layout: o.layout, upstreamPorts: UPSTREAM_PORTS, tls: false }) },
    common.proxyHeaders,
    common.proxy,
    {
      path: "conf/fastapi-edge/site.conf",
      content: renderSiteConf([renderHttpServers({ domain: o.domain, listen: o.listen, acmeWebroot: o.layout.acmeWebroot })]),
    },
    common.maintenance,
  ];
}
