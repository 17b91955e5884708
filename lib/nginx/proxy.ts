// fastapi-edge/snippets/proxy.conf, included by every proxied location: the
// snippet in files/nginx/proxy.conf plus how many app processes a failed
// idempotent request may be tried on.
import { snippetLines } from "./syntax";

export function renderProxySnippet(upstreamPorts: number[]): string {
  return [...snippetLines("proxy.conf"), `proxy_next_upstream_tries ${Math.max(2, upstreamPorts.length)};`, ""].join("\n");
}
