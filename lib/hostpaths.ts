// Where fastapi-edge puts things on a host: the one table of host paths, for
// the manifest of host files (hostfiles.ts), the nginx layout and the host
// steps' arguments. Pure: no Pulumi import.
import { EdgeConfig } from "./config";
import { HostLayout, Listen } from "./nginx";

export const HOST_PATHS = {
  base: "/opt/fastapi-edge",
  /** Symlink to the live release. */
  appDir: "/opt/fastapi-edge/app",
  releasesDir: "/opt/fastapi-edge/releases",
  /** The host scripts (HOST_SCRIPTS). */
  binDir: "/opt/fastapi-edge/bin",
  etcDir: "/etc/fastapi-edge",
  envFile: "/etc/fastapi-edge/app.env",
  stateDir: "/var/lib/fastapi-edge",
  /**
   * appUpstream unix: the app processes' sockets, app-PORT.sock. The unit's
   * RuntimeDirectory (lib/units.ts renderAppUnit); /run is cleared at boot.
   */
  appSocketDir: "/run/fastapi-edge",
  appUnit: "/etc/systemd/system/fastapi-edge-app@.service",
  /** appRuntime container: the unit template and the containers' environment. */
  containerUnit: "/etc/systemd/system/fastapi-edge-container@.service",
  containerEnvFile: "/etc/fastapi-edge/container.env",
  nginxDropIn: "/etc/systemd/system/nginx.service.d/fastapi-edge.conf",
  certbotDropIn: "/etc/systemd/system/certbot.service.d/fastapi-edge.conf",
  acmeCaBundle: "/etc/fastapi-edge/acme-ca.pem",
  /** nginx.org's signing keys (nginxSource nginx.org), as shipped in files/apt/. */
  nginxOrgKeys: "/etc/fastapi-edge/nginx-org-signing-keys.asc",
  deployHook: "/etc/letsencrypt/renewal-hooks/deploy/fastapi-edge-reload-nginx.sh",
  expiryService: "/etc/systemd/system/fastapi-edge-cert-expiry.service",
  expiryTimer: "/etc/systemd/system/fastapi-edge-cert-expiry.timer",
  nginxConfDir: "/etc/nginx",
  nginxLogDir: "/var/log/nginx",
  nginxPidFile: "/run/nginx.pid",
  acmeWebroot: "/var/www/letsencrypt",
  maintenanceDir: "/var/www/fastapi-edge",
  /** certbot's live certificates, one directory per domain. */
  certsDir: "/etc/letsencrypt/live",
} as const;

/** Where a release is uploaded before the deploy step installs it. */
export function uploadDir(release: string): string {
  return `/var/tmp/fastapi-edge-upload-${release}`;
}

/** Where a release's wheelhouse (appWheelhouse) is uploaded; removed once its virtualenv is built. */
export function wheelhouseDir(release: string): string {
  return `/var/tmp/fastapi-edge-wheels-${release}`;
}

/** Where a release's image archive is uploaded (appRuntime container, built here); removed once loaded. */
export function imageArchiveDir(release: string): string {
  return `/var/tmp/fastapi-edge-image-${release}`;
}

/** nginx on a host answers on every address, on the standard ports. */
export const PUBLIC_LISTEN: Listen = { address: null, http: 80, https: 443 };

/** The nginx layout of a production host for this config. */
export function hostLayout(c: EdgeConfig): HostLayout {
  return {
    nginxConfDir: HOST_PATHS.nginxConfDir,
    acmeWebroot: HOST_PATHS.acmeWebroot,
    maintenanceDir: HOST_PATHS.maintenanceDir,
    staticDir: `${HOST_PATHS.appDir}/${c.appStaticDir}`,
    logDir: HOST_PATHS.nginxLogDir,
    pidFile: HOST_PATHS.nginxPidFile,
    certDir: `${HOST_PATHS.certsDir}/${c.domain}`,
    // nginx.org's package runs its workers as its own user `nginx` and has no
    // modules-enabled/ (a Debian convention; modules left there by a replaced
    // distribution nginx are built for another version and must not load).
    workerUser: c.nginxSource === "nginx.org" ? "nginx" : "www-data",
    loadDistroModules: c.nginxSource !== "nginx.org",
    tempDir: null,
    appSocketDir: HOST_PATHS.appSocketDir,
  };
}
