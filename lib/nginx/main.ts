// nginx.conf, the main context: workers, pid, error log, and the http block
// that includes the site's two files. Includes are relative, so a candidate
// copy of the whole tree can be tested before it goes live.
import { HostLayout } from "./types";

export type MainLayout = Pick<HostLayout, "workerUser" | "pidFile" | "logDir" | "loadDistroModules">;

/** File descriptors a worker needs: client + upstream socket per connection, plus files. */
export function workerNofile(workerConnections: number): number {
  return workerConnections * 2 + 1024;
}

export function renderMainConf(layout: MainLayout, workerConnections: number): string {
  return [
    "# Rendered by fastapi-edge. Do not edit on the host: the next `pulumi up` replaces it.",
    "# Includes are relative to this file's directory, so a candidate copy of the",
    "# whole tree can be checked with `nginx -t -c CANDIDATE/nginx.conf` before it goes live.",
    ...(layout.workerUser ? [`user ${layout.workerUser};`] : []),
    "worker_processes auto;",
    `# Raised from the distribution default so ${workerConnections} connections per worker,`,
    "# each with a client and an upstream socket, never run out of descriptors.",
    `worker_rlimit_nofile ${workerNofile(workerConnections)};`,
    `pid ${layout.pidFile};`,
    `error_log ${layout.logDir}/error.log warn;`,
    ...(layout.loadDistroModules ? ["include modules-enabled/*.conf;"] : []),
    "",
    "events {",
    `    worker_connections ${workerConnections};`,
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
  ].join("\n");
}
