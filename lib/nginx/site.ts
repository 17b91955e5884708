// fastapi-edge/site.conf: the site's servers (server-http.ts, server-tls.ts).
export function renderSiteConf(servers: string[][]): string {
  return ["# Servers for the fastapi-edge site.", "", ...servers.flat()].join("\n");
}
