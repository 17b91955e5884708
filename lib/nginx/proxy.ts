// fastapi-edge/snippets/proxy.conf, included by every proxied location: the
// snippet in files/nginx/proxy.conf plus how many app processes a failed
// idempotent request may be tried on.
import { snippetLines } from "./syntax";

/**
 * How many servers a failed request may be tried on: every server of the
 * upstream (each app host's every port), at least 2. proxy.conf's
 * proxy_next_upstream has no non_idempotent, so a POST, PATCH or LOCK that
 * reached an app process is never sent again; only a request that was not
 * sent (the connection failed) moves on, and an idempotent one also after an
 * error, timeout, 502 or 503. With a whole app host down, its P ports take P
 * tries before a live host answers, so the bound is every server, not 2.
 */
export function nextUpstreamTries(upstreamPorts: number[], hostCount = 1): number {
  return Math.max(2, upstreamPorts.length * hostCount);
}

export function renderProxySnippet(upstreamPorts: number[], hostCount = 1): string {
  return [...snippetLines("proxy.conf"), `proxy_next_upstream_tries ${nextUpstreamTries(upstreamPorts, hostCount)};`, ""].join("\n");
}
