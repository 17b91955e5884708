// What the nginx renderer is told about the host besides config, and what it returns.

export interface HostLayout {
  /** nginx's config directory (the stage's `conf/` lands here). */
  nginxConfDir: string;
  /** ACME HTTP-01 webroot. */
  acmeWebroot: string;
  /** Directory holding maintenance.html. */
  maintenanceDir: string;
  /** Directory nginx serves the static URL path from. */
  staticDir: string;
  /** Directory for access and error logs. */
  logDir: string;
  pidFile: string;
  /** Directory with fullchain.pem and privkey.pem. */
  certDir: string;
  /** Unix user for worker processes; null keeps the invoking user (tests). */
  workerUser: string | null;
  /** Load the distribution's dynamic modules (modules-enabled/). */
  loadDistroModules: boolean;
  /** Directory for nginx's temp files; null keeps the compiled-in default. */
  tempDir: string | null;
  /** Directory of the app processes' unix sockets, app-PORT.sock (appUpstream unix). */
  appSocketDir: string;
}

export interface Listen {
  /** Address for listen directives; null means all IPv4 and IPv6 addresses. */
  address: string | null;
  http: number;
  https: number;
}

/**
 * One file of an nginx stage, the layout files/scripts/nginx-apply.sh installs:
 * `conf/REL` lands in the nginx config dir, `extra/ABS` (an absolute path
 * without its leading slash) anywhere else.
 */
export interface StageFile {
  path: string;
  content: string;
}
