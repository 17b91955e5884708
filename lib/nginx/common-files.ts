// Stage files the full site and the ACME bootstrap share: the proxy snippets
// and the maintenance page.
import { shipped } from "../shipped";
import { renderProxySnippet } from "./proxy";
import { HostLayout, StageFile } from "./types";

/** Files every stage holds, whatever the servers: proxy snippets and the maintenance page. */
export function commonStageFiles(
  layout: Pick<HostLayout, "maintenanceDir">,
  upstreamPorts: number[],
  /** Number of app hosts (appHosts / appHostCount); 1: the app on the edge. */
  hostCount = 1,
): { proxyHeaders: StageFile; proxy: StageFile; maintenance: StageFile } {
  return {
    proxyHeaders: { path: "conf/fastapi-edge/snippets/proxy-headers.conf", content: shipped("nginx/proxy-headers.conf") },
    proxy: { path: "conf/fastapi-edge/snippets/proxy.conf", content: renderProxySnippet(upstreamPorts, hostCount) },
    maintenance: { path: `extra${layout.maintenanceDir}/maintenance.html`, content: shipped("maintenance/maintenance.html") },
  };
}
