// Stage files the full site and the ACME bootstrap share: the proxy snippets
// and the maintenance page.
import { replaceExact, shipped } from "../shipped";
import { renderProxySnippet } from "./proxy";
import { HostLayout, StageFile } from "./types";

/** proxyForwardedHeaders: what nginx tells the app about the client besides Host, X-Forwarded-For and -Proto. */
export type ForwardedHeaders = "minimal" | "extended";

/** The headers `extended` sets, which `minimal` clears (the shipped snippet's lines). */
const EXTENDED_HEADERS: [string, string][] = [
  ["X-Real-IP", "$remote_addr"],
  ["X-Forwarded-Host", "$host"],
  ["X-Forwarded-Port", "$server_port"],
];

/** snippets/proxy-headers.conf: the shipped file (minimal), or with the extended headers set instead of cleared. */
export function renderProxyHeaders(mode: ForwardedHeaders): string {
  let text = shipped("nginx/proxy-headers.conf");
  if (mode === "minimal") return text;
  for (const [name, value] of EXTENDED_HEADERS) {
    text = replaceExact("nginx/proxy-headers.conf", text, `proxy_set_header ${name} "";`, `proxy_set_header ${name} ${value};`);
  }
  return text;
}

/** Files every stage holds, whatever the servers: proxy snippets and the maintenance page. */
export function commonStageFiles(
  layout: Pick<HostLayout, "maintenanceDir">,
  upstreamPorts: number[],
  /** Number of app hosts (appHosts / appHostCount); 1: the app on the edge. */
  hostCount = 1,
  forwardedHeaders: ForwardedHeaders = "minimal",
): { proxyHeaders: StageFile; proxy: StageFile; maintenance: StageFile } {
  return {
    proxyHeaders: { path: "conf/fastapi-edge/snippets/proxy-headers.conf", content: renderProxyHeaders(forwardedHeaders) },
    proxy: { path: "conf/fastapi-edge/snippets/proxy.conf", content: renderProxySnippet(upstreamPorts, hostCount) },
    maintenance: { path: `extra${layout.maintenanceDir}/maintenance.html`, content: shipped("maintenance/maintenance.html") },
  };
}
