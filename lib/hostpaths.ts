// Where fastapi-edge puts things on a production host. Pure: no Pulumi import.
import { EdgeConfig } from "./config";
import { HostLayout, Listen } from "./nginx";

export const HOST_LAYOUT: HostLayout = {
  nginxConfDir: "/etc/nginx",
  acmeWebroot: "/var/www/letsencrypt",
  maintenanceDir: "/var/www/fastapi-edge",
  staticDir: "/opt/fastapi-edge/app/static",
  logDir: "/var/log/nginx",
  pidFile: "/run/nginx.pid",
  certDir: "/etc/letsencrypt/live/DOMAIN",
  workerUser: "www-data",
  loadDistroModules: true,
  tempDir: null,
};

export const PUBLIC_LISTEN: Listen = { address: null, http: 80, https: 443 };

/** The production layout for a domain (the cert dir is per domain). */
export function hostLayout(c: EdgeConfig, staticDir: string = HOST_LAYOUT.staticDir): HostLayout {
  return { ...HOST_LAYOUT, staticDir, certDir: `/etc/letsencrypt/live/${c.domain}` };
}
