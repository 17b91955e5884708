// Stack configuration: one schema, one validation step, no Pulumi import.
//
// Raw config arrives as strings (Pulumi config values, or YAML scalars read by
// `npm run render`). `parseConfig` turns it into a typed, validated object or
// throws a ConfigError naming every bad key and the form it accepts. Every
// value that can reach an nginx file or a shell command is constrained to a
// character set that cannot open a new directive or command: no `;`, braces,
// quotes, `$`, backslashes, whitespace or newlines.
import { z } from "zod";
import { byFamily, CLOUDFLARE_HEADER, cloudflareRanges, isNetworkAddress, SG_INBOUND_RULES_PER_FAMILY } from "./cdn";
import { CERTBOT_PROFILES_SINCE, HOST_OS, HOST_OS_NAMES, NGINX_ORG_STABLE, NGINX_SOURCES } from "./hostos";
import { versionAtLeast } from "./version";

export const PROJECT = "fastapi-edge";

// ---------------------------------------------------------------- primitives

const HOSTNAME_RE = /^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$/;
const URL_PATH_RE = /^\/[A-Za-z0-9._~\/-]*$/;
const SIZE_RE = /^[1-9][0-9]{0,5}[km]?$/;
const DURATION_RE = /^[1-9][0-9]{0,5}(ms|s|m|h)$/;
const EMAIL_RE = /^[A-Za-z0-9._%+-]{1,64}@(?=.{1,253}$)[a-z0-9-]+(\.[a-z0-9-]+)+$/;
const SSH_PUBKEY_RE = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+\/]+={0,3}( [A-Za-z0-9@._+-]{0,100})?$/;
const AMI_RE = /^ami-[0-9a-f]{8,17}$/;
const INSTANCE_TYPE_RE = /^[a-z][a-z0-9-]*\.[a-z0-9]+$/;
const ZONE_ID_RE = /^Z[A-Z0-9]{1,31}$/;
const SUBNET_ID_RE = /^subnet-[0-9a-f]{8,17}$/;
const UNIX_USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;
const PY_MODULE_RE = /^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$/;
const VERSION_STR_RE = /^[A-Za-z0-9._+-]{1,64}$/;
const REL_DIR_RE = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;
const ABS_PATH_RE = /^\/[A-Za-z0-9._\/-]*$/;
// ACME profile names (RFC draft-ietf-acme-profiles): Let's Encrypt's are classic, tlsserver, shortlived.
const ACME_PROFILE_RE = /^[a-z][a-z0-9-]{0,62}$/;

const msg = (form: string) => ({ message: `must be ${form}` });

const hostname = z
  .string()
  .toLowerCase()
  .regex(HOSTNAME_RE, msg("a DNS name such as api.example.com (letters, digits, hyphens, dots; no scheme, port or path)"));
const urlPath = z
  .string()
  .regex(URL_PATH_RE, msg("a URL path starting with / using only letters, digits and . _ ~ / -"))
  .refine((p) => !p.includes("//") && !p.split("/").includes(".."), msg("a normalised URL path (no // or ..)"));
const size = z.string().regex(SIZE_RE, msg("an nginx size such as 512k, 10m or 4096 (digits with optional k or m)"));
const duration = z.string().regex(DURATION_RE, msg("an nginx duration such as 500ms, 60s, 5m or 1h"));
const email = z.string().regex(EMAIL_RE, msg("an e-mail address such as ops@example.com"));
// zod's own address validators: z.cidrv6() parses the address (hex digits,
// colons and dots only), so shapes like :::::/64 or ffff/64 are refused.
const cidr = z.union([z.cidrv4(), z.cidrv6()], msg("a CIDR block such as 203.0.113.4/32 or 2001:db8::/48"));

const bool = z.preprocess(
  (v) => {
    if (v === "true" || v === true) return true;
    if (v === "false" || v === false) return false;
    return v;
  },
  z.boolean({ message: "must be true or false" }),
);

const int = (min: number, max: number) =>
  z.preprocess(
    (v) => (typeof v === "string" && /^-?[0-9]+$/.test(v.trim()) ? Number(v.trim()) : v),
    z
      .number({ message: `must be a whole number from ${min} to ${max}` })
      .int({ message: `must be a whole number from ${min} to ${max}` })
      .min(min, { message: `must be a whole number from ${min} to ${max}` })
      .max(max, { message: `must be a whole number from ${min} to ${max}` }),
  );

/** A list given as a JSON/YAML array, or as a comma-separated string. */
const list = <T extends z.ZodType>(item: T) =>
  z.preprocess(
    (v) => {
      if (typeof v !== "string") return v;
      const s = v.trim();
      if (s.startsWith("[")) {
        try {
          return JSON.parse(s) as unknown;
        } catch {
          return v;
        }
      }
      return s === "" ? [] : s.split(",").map((x) => x.trim());
    },
    z.array(item, { message: "must be a list (YAML array, JSON array or comma-separated)" }),
  );

/** An app host behind the nginx edge (appHosts): reached over SSH through the edge. */
export interface AppHost {
  /** Private IPv4 address: uvicorn binds it, nginx's upstream names it, SSH dials it from the edge. */
  address: string;
  /** SSH user; unset: hostUser's value (the edge's user). */
  sshUser?: string;
  sshPort: number;
}

/** RFC 1918 blocks: an app host is reached from the edge inside a private network only. */
export function isPrivateIpv4(a: string): boolean {
  const o = a.split(".").map(Number);
  if (o.length !== 4 || o.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) return false;
  return o[0] === 10 || (o[0] === 172 && o[1]! >= 16 && o[1]! <= 31) || (o[0] === 192 && o[1] === 168);
}

const IPV4_RE = /^(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}$/;
const APP_HOST_RE = /^(?:([a-z_][a-z0-9_-]{0,31})@)?([0-9.]+)(?::([0-9]{1,5}))?$/;
const APP_HOST_FORM =
  "[USER@]ADDRESS[:SSHPORT] with a private IPv4 address (10/8, 172.16/12, 192.168/16), such as 10.0.1.11 or admin@10.0.1.12:2222";
const appHost = z
  .string()
  .refine((s) => {
    const m = APP_HOST_RE.exec(s);
    if (!m || !IPV4_RE.test(m[2]!) || !isPrivateIpv4(m[2]!)) return false;
    return m[3] === undefined || (Number(m[3]) >= 1 && Number(m[3]) <= 65535);
  }, msg(APP_HOST_FORM))
  .transform((s): AppHost => {
    // The refinement above guarantees the match.
    const m = APP_HOST_RE.exec(s)!;
    return { address: m[2]!, ...(m[1] !== undefined ? { sshUser: m[1] } : {}), sshPort: m[3] !== undefined ? Number(m[3]) : 22 };
  });
const privateIpv4 = z
  .string()
  .refine((a) => IPV4_RE.test(a) && isPrivateIpv4(a), msg("a private IPv4 address (10/8, 172.16/12, 192.168/16) such as 10.0.1.10"));

export interface RateLimit {
  path: string;
  rate: string;
  burst: number;
}

const RATE_LIMIT_RE = /^(\/[A-Za-z0-9._~\/-]*):([1-9][0-9]{0,5}r\/[sm]):([0-9]{1,4})$/;
const rateLimit = z
  .string()
  .regex(RATE_LIMIT_RE, msg("PATH:RATE:BURST such as /auth/token:5r/m:10"))
  .transform((s): RateLimit => {
    const m = RATE_LIMIT_RE.exec(s);
    // The regex above guarantees the match.
    return { path: m![1]!, rate: m![2]!, burst: Number(m![3]) };
  });

// An HTTP header name (an RFC 9110 token) narrowed to letters, digits and
// hyphens: the other token characters ($ ' * | ...) have no place in a header
// name a proxy sets, and nginx drops names with underscores by default
// (underscores_in_headers off), so such a header would never arrive.
const HEADER_NAME_RE = /^[A-Za-z][A-Za-z0-9-]{0,63}$/;
const realIpHeaderSchema = z
  .string()
  .regex(
    HEADER_NAME_RE,
    msg("an HTTP header name of letters, digits and hyphens such as X-Forwarded-For, CF-Connecting-IP or True-Client-IP"),
  )
  .refine(
    (h) => !["forwarded", "host", "connection"].includes(h.toLowerCase()),
    msg("a header that carries the client address alone or as an X-Forwarded-For list (nginx cannot read RFC 7239 Forwarded: for=...)"),
  );
const trustedCidr = cidr
  .refine((c) => !c.endsWith("/0"), msg("a narrower block than the whole internet (trusting /0 lets every client pick its address)"))
  .refine(isNetworkAddress, msg("a CIDR block with its host bits zero, such as 10.0.0.0/8 or 2001:db8::/32"));
const PEM_PATH_RE = /^[A-Za-z0-9._\/-]+\.(pem|crt)$/;

const NGINX_VERSION_RE = /^1\.(2[2-9]|[3-9][0-9])(\.[0-9]{1,3})?$/;

// ------------------------------------------------------------------- schema

/**
 * Every stack config key: its validation, its default and its one-line
 * description (`.describe()`, last in each chain so the description sits on
 * the schema that `shape` holds). Pulumi.yaml's `config:` block and the
 * README's config table are generated from this alone (npm run gen-config);
 * a unit test fails when they drift.
 */
export const configSchema = z
  .object({
    // Front end and host
    frontend: z
      .enum(["nginx", "alb"], { message: "must be nginx or alb" })
      .default("nginx")
      .describe(
        "What terminates TLS: nginx (on the host, certbot certificate) or alb (AWS Application Load Balancer, ACM certificate, no nginx).",
      ),
    hostMode: z
      .enum(["ec2", "existing"], { message: "must be ec2 or existing" })
      .default("ec2")
      .describe(
        "ec2 creates an EC2 instance; existing deploys to any server reachable over SSH (hostAddress, hostPort, hostUser, hostPrivateKey).",
      ),
    hostOs: z
      .enum(HOST_OS_NAMES, { message: `must be one of ${HOST_OS_NAMES.join(", ")}` })
      .default("debian-13")
      .describe(
        "Operating system of the host: debian-13 (default, the tested target), debian-12 or ubuntu-24.04. On EC2 it picks the AMI and login user; on an existing host it says what is there. The renderer picks nginx syntax and TLS groups from it.",
      ),
    domain: hostname.describe("DNS name the site answers to, e.g. api.example.com. Required."),
    // EC2
    instanceType: z
      .string()
      .regex(INSTANCE_TYPE_RE, msg("an EC2 instance type such as t3.small"))
      .default("t3.small")
      .describe("EC2 instance type (hostMode ec2)."),
    amiId: z
      .string()
      .regex(AMI_RE, msg("an AMI id such as ami-0123456789abcdef0"))
      .optional()
      .describe("AMI to boot; default: the newest image of hostOs from its publisher (Debian's cloud team or Canonical), found by lookup."),
    rootVolumeGb: int(8, 1024).default(20).describe("Size of the encrypted gp3 root volume in GiB."),
    sshAllowedCidrs: list(
      // Any /0 is the whole internet, however the address is spelled (0::/0, 1.2.3.4/0).
      cidr.refine((c) => !c.endsWith("/0"), msg("a narrower block than the whole internet (SSH is never opened to 0.0.0.0/0 or ::/0)")),
    )
      .default([])
      .describe("CIDR blocks allowed to reach port 22. Empty (the default) opens SSH to nobody; 0.0.0.0/0 is refused."),
    sshPublicKey: z
      .string()
      .regex(SSH_PUBKEY_RE, msg("one OpenSSH public key line (ssh-ed25519 AAAA... comment)"))
      .optional()
      .describe(
        "OpenSSH public key for the instance. Unset: a key pair is generated with @pulumi/tls and its private key kept only as a Pulumi secret.",
      ),
    protect: bool.default(false).describe("Protect the instance, Elastic IP and certificate resources from deletion (prod)."),
    // Existing host
    hostAddress: z
      .union([z.ipv4(), z.string().regex(HOSTNAME_RE), z.literal("localhost")], msg("an IPv4 address or DNS name"))
      .optional()
      .describe("hostMode existing: IP address or DNS name of the server."),
    hostPort: int(1, 65535).default(22).describe("SSH port of the server."),
    hostUser: z
      .string()
      .regex(UNIX_USER_RE, msg("a Unix user name such as root or ubuntu"))
      .optional()
      .describe(
        "SSH user (default on EC2: admin on Debian, ubuntu on Ubuntu; root on an existing host). A non-root user needs passwordless sudo.",
      ),
    hostKey: z
      .string()
      .regex(SSH_PUBKEY_RE, msg("the host's public key line, to pin it (ssh-ed25519 AAAA...)"))
      .optional()
      .describe("Pin the server's SSH host key (the public key line); unset, the host key is not checked."),
    nginxSource: z
      .enum(NGINX_SOURCES, { message: `must be ${NGINX_SOURCES.join(" or ")}` })
      .default("distribution")
      .describe(
        `Where nginx comes from: distribution (default, the hostOs package) or nginx.org (nginx.org's signed stable apt repository, pinned to ${NGINX_ORG_STABLE}.*, replacing the distribution's nginx; the renderer then targets ${NGINX_ORG_STABLE}).`,
      ),
    // The target's nginx, so the renderer emits syntax it accepts.
    nginxVersion: z
      .string()
      .regex(NGINX_VERSION_RE, msg("an nginx version 1.22 or newer such as 1.22, 1.24 or 1.26.1"))
      .optional()
      .describe(
        `nginx version on the target, so the renderer emits syntax it accepts (http2 on from 1.25.1, keepalive_min_timeout from 1.27.4). Default: the version hostOs packages (1.26 on Debian 13, 1.22 on Debian 12, 1.24 on Ubuntu 24.04), or ${NGINX_ORG_STABLE} with nginxSource nginx.org.`,
      ),
    // TLS
    acme: z
      .enum(["letsencrypt-staging", "letsencrypt", "custom"], { message: "must be letsencrypt-staging, letsencrypt or custom" })
      .default("letsencrypt-staging")
      .describe(
        "ACME server: letsencrypt-staging (untrusted test certificates, no rate-limit risk), letsencrypt (production) or custom (acmeDirectoryUrl).",
      ),
    acmeDirectoryUrl: z
      .string()
      .regex(/^https:\/\/[A-Za-z0-9.-]+(:[0-9]{1,5})?(\/[A-Za-z0-9._~\/-]*)?$/, msg("an https:// ACME directory URL"))
      .optional()
      .describe("acme custom: the ACME directory URL, e.g. https://acme.example.test/dir."),
    acmeCaBundle: z
      .string()
      .regex(PEM_PATH_RE, msg("a local path to a PEM file (.pem or .crt)"))
      .optional()
      .describe("acme custom: local path of a PEM bundle certbot must trust to reach the ACME server (also used by scheduled renewals)."),
    acmeProfile: z
      .string()
      .regex(ACME_PROFILE_RE, msg("an ACME profile name: a lowercase token such as classic, tlsserver or shortlived"))
      .optional()
      .describe(
        "ACME certificate profile certbot asks for (certbot --preferred-profile; needs certbot 4.0+, so hostOs debian-13), e.g. tlsserver (45 days) or shortlived (6 days) at Let's Encrypt. The first issuance fails when the ACME server does not offer it; scheduled renewals fall back to the CA's default. Unset: the CA's default profile.",
      ),
    email: email.optional().describe("ACME account e-mail (nginx front end)."),
    http3: bool
      .default(false)
      .describe(
        "Serve HTTP/3 over QUIC on UDP 443 as well (listen ... quic, Alt-Svc header, UDP 443 in the security group). Needs nginx 1.25 or newer (hostOs debian-13, or nginxVersion); not with frontend alb.",
      ),
    hstsMaxAge: int(0, 126144000).default(63072000).describe("HSTS max-age in seconds, sent on every HTTPS response."),
    // App
    appSource: z
      .string()
      .regex(/^[A-Za-z0-9._\/-]+$/, msg("a local directory path"))
      .default("files/app")
      .describe("Local directory uploaded as the app (the sample app in files/app by default)."),
    appModule: z
      .string()
      .regex(PY_MODULE_RE, msg("MODULE:ATTRIBUTE such as main:app"))
      .default("main:app")
      .describe("ASGI app as MODULE:ATTRIBUTE, relative to the app directory."),
    appStaticDir: z
      .string()
      .regex(REL_DIR_RE, msg("a directory relative to the app source such as static"))
      .refine((d) => !d.split("/").includes(".."), msg("a directory inside the app source (no ..)"))
      .default("static")
      .describe("Static files directory inside the app, served by nginx at staticPath."),
    appVersion: z
      .string()
      .regex(VERSION_STR_RE, msg("a version string of letters, digits and . _ + -"))
      .default("1")
      .describe("App version string (APP_VERSION in the app's environment); changing it rolls the app processes one at a time."),
    appProcesses: int(1, 16).default(2).describe("Number of uvicorn processes (one systemd instance per port) behind nginx."),
    appBasePort: int(1024, 65000).default(8000).describe("Port of the first app process on 127.0.0.1; the others follow."),
    appHealthPath: urlPath.default("/healthz").describe("Health route the rolling restart waits on (and the ALB health check uses)."),
    appStartTimeout: int(5, 1800)
      .default(60)
      .describe(
        "Seconds the rolling restart waits for each restarted process to answer its health route before the deploy fails (the old processes keep serving). Raise it for slow hosts: a guest under software emulation needs minutes.",
      ),
    appPython: z
      .string()
      .regex(ABS_PATH_RE, msg("an absolute path to a Python interpreter"))
      .refine((p) => !p.split("/").includes("..") && !p.includes("//"), msg("a normalised absolute path (no // or ..)"))
      .default("/usr/bin/python3")
      .describe("Python interpreter that runs uvicorn on the host."),
    appPackages: list(z.string().regex(/^[a-z0-9][a-z0-9.+-]+$/, msg("Debian package names")))
      .default(["python3-fastapi", "python3-uvicorn"])
      .describe("Debian/Ubuntu packages the app needs, installed with apt."),
    appRuntime: z
      .enum(["host", "container"], { message: "must be host or container" })
      .default("host")
      .describe(
        "How the app runs: host (uvicorn from the distribution's packages, or from a virtualenv per release when the app has a requirements file) or container (an OCI image under podman, one container per port, published on 127.0.0.1 only). nginx front end only.",
      ),
    appUpstream: z
      .enum(["tcp", "unix"], { message: "must be tcp or unix" })
      .default("tcp")
      .describe(
        "How nginx reaches the app processes: tcp (default, 127.0.0.1:PORT) or unix (each process serves the socket /run/fastapi-edge/app-PORT.sock, uvicorn --uds; about 5% more JSON throughput in npm run bench). Opt-in: frontend nginx, appRuntime host and the app on the edge (no appHosts or appHostCount) only.",
      ),
    appImage: z
      .string()
      .regex(
        /^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:[0-9]{1,5})?(\/[a-z0-9]+([._-][a-z0-9]+)*)+@sha256:[0-9a-f]{64}$/,
        msg("an image reference pinned by digest, such as ghcr.io/acme/api@sha256:<64 hex> (a tag can move)"),
      )
      .optional()
      .describe(
        "appRuntime container: the image to pull from a registry, pinned by digest. Unset: the image is built from appSource where pulumi runs (scripts/build-app-image.sh, needs podman and debootstrap there) and shipped over SSH.",
      ),
    appRegistryUsername: z
      .string()
      .regex(/^[A-Za-z0-9._@+-]{1,128}$/, msg("a registry user name (letters, digits and . _ @ + -)"))
      .optional()
      .describe("User for appImage's registry; its password or token is the secret appRegistryPassword. Unset: an anonymous pull."),
    appWheelhouse: z
      .string()
      .regex(/^[A-Za-z0-9._\/-]+$/, msg("a local directory path"))
      .optional()
      .describe(
        "Local directory of wheels uploaded with each release: pip installs the app's requirements from it only (--no-index --find-links), for hosts without index access and byte-for-byte reproducible deploys. Needs a requirements.txt or pyproject.toml in the app.",
      ),
    appPackageIndex: z
      .string()
      .regex(
        /^https:\/\/[A-Za-z0-9.-]+(:[0-9]{1,5})?(\/[A-Za-z0-9._~%\/-]*)?$/,
        msg("an https:// URL of a package index without credentials, such as https://pypi.example.com/simple"),
      )
      .optional()
      .describe("Package index pip installs the app's requirements from (pip's --index-url; unset: PyPI). Not with appWheelhouse."),
    appVenvSystemPackages: bool
      .default(false)
      .describe(
        "The release's virtualenv also sees the distribution's Python packages (appPackages; --system-site-packages), so the requirements only need what the distribution lacks. Off: the virtualenv holds exactly what the requirements resolve to.",
      ),
    // nginx
    staticPath: urlPath
      .default("/static/")
      .describe("URL prefix served from appStaticDir by nginx, with a 30-day expiry and no access log."),
    websocketPaths: list(urlPath).default(["/ws/"]).describe("URL prefixes proxied as WebSockets (upgrade headers, long read timeout)."),
    clientMaxBodySize: size.default("10m").describe("Largest request body (nginx size, e.g. 10m); larger bodies get 413."),
    proxyForwardedHeaders: z
      .enum(["minimal", "extended"], { message: "must be minimal or extended" })
      .default("minimal")
      .describe(
        "What nginx tells the app about the client besides Host: minimal (default) sends X-Forwarded-For and X-Forwarded-Proto, the two uvicorn's --proxy-headers reads, and clears a client's own X-Real-IP, X-Forwarded-Host and X-Forwarded-Port; extended sets those three too ($remote_addr, $host, $server_port), for an app that reads them. Each header costs the app parse time: the three cost uvicorn about 6% of its JSON throughput (npm run bench).",
      ),
    proxyConnectTimeout: duration
      .default("5s")
      .describe(
        "Timeout to connect to an app process. With `appRuntime: container` or app hosts, the rolling restart also waits this long between instances (a connect can fail that late). With app hosts on one LAN, 1-2s: a powered-off host's connects time out instead of failing (docs/multi-host.md).",
      ),
    proxyReadTimeout: duration
      .default("60s")
      .describe(
        "Timeout between two reads from the app. With app hosts, set it to what the slowest endpoint needs (e.g. 4s): a request already sent to a host that loses power waits this long before nginx retries it on the next host (docs/multi-host.md).",
      ),
    proxySendTimeout: duration.default("60s").describe("Timeout between two writes to the app."),
    websocketReadTimeout: duration.default("1h").describe("Read/send timeout of WebSocket locations (idle sockets stay open this long)."),
    clientHeaderTimeout: duration.default("10s").describe("Time a client has to send the request headers (slow-client protection)."),
    clientBodyTimeout: duration.default("10s").describe("Time between two reads of the request body."),
    sendTimeout: duration.default("10s").describe("Time between two writes of the response to the client."),
    keepaliveTimeout: duration.default("65s").describe("Idle time of client keep-alive connections."),
    upstreamKeepalive: int(0, 1024)
      .default(32)
      .describe("Idle connections to the app kept open per worker (0 disables upstream keepalive)."),
    upstreamMaxFails: int(0, 100).default(3).describe("Failed attempts before an app process is taken out for upstreamFailTimeout."),
    upstreamFailTimeout: duration.default("10s").describe("Window for upstreamMaxFails, and how long a failed process stays out."),
    proxyBuffering: bool.default(true).describe("Buffer app responses in nginx, so slow clients never hold an app process."),
    workerConnections: int(512, 1048576)
      .default(16384)
      .describe("Connections per nginx worker (Debian's default is 768); worker_rlimit_nofile and the service's LimitNOFILE follow."),
    limitConnPerIp: int(0, 100000).default(0).describe("Concurrent connections allowed per client address (0: no limit)."),
    // A prefault, not a default: the default is given in input form and parsed
    // like a configured value (and Pulumi.yaml declares that input form).
    rateLimits: list(rateLimit)
      .prefault(["/auth/token:5r/m:10"])
      .describe("Rate-limited paths as PATH:RATE:BURST; excess requests get 429."),
    scannerPaths: list(urlPath)
      .default(["/wp-login.php", "/wp-admin", "/xmlrpc.php"])
      .describe("URL prefixes closed without a response (444)."),
    maintenanceMode: bool.default(false).describe("Serve the maintenance page (503, Retry-After) for every request."),
    accessLog: bool.default(true).describe("Write the access log (/var/log/nginx/fastapi-edge.access.log)."),
    // What stands in front of nginx
    frontedBy: z
      .enum(["none", "cloudflare", "custom"], { message: "must be none, cloudflare or custom" })
      .default("none")
      .describe(
        "What stands in front of nginx: none (clients connect directly), cloudflare (proxied DNS: the client address comes from CF-Connecting-IP, trusted only from Cloudflare's ranges in files/cdn/) or custom (trustedProxyCidrs and realIpHeader).",
      ),
    trustedProxyCidrs: list(trustedCidr)
      .default([])
      .describe(
        "frontedBy custom: CIDR blocks of the proxies or CDN in front; only requests from these addresses may set the client address (required, non-empty; /0 refused).",
      ),
    realIpHeader: realIpHeaderSchema
      .optional()
      .describe(
        "frontedBy custom: the header carrying the client address, e.g. X-Forwarded-For (the default; a chain, read right to left past trusted addresses), CF-Connecting-IP or True-Client-IP.",
      ),
    restrictHttpToCdn: bool
      .default(false)
      .describe(
        "hostMode ec2 with frontedBy cloudflare or custom: open ports 80 and 443 in the security group only to the front's ranges (IPv4 and IPv6) instead of to everyone.",
      ),
    originPullCaFile: z
      .string()
      .regex(PEM_PATH_RE, msg("a local path to a PEM file (.pem or .crt)"))
      .optional()
      .describe(
        "Authenticated origin pulls: local path of the PEM CA certificate the CDN's client certificates come from (Cloudflare's origin-pull CA); nginx then refuses HTTPS clients without one. nginx front end with frontedBy cloudflare or custom.",
      ),
    // ALB
    albIdleTimeout: int(1, 4000).default(3600).describe("ALB idle timeout in seconds (raised for WebSockets)."),
    albDeregistrationDelay: int(0, 3600).default(15).describe("Seconds the ALB drains a deregistered target."),
    wafRateLimit: int(0, 2000000000)
      .default(0)
      .describe("ALB mode: requests per 5 minutes per client address before WAF blocks (0: no WAF)."),
    // ALB: an Auto Scaling Group instead of the one instance (components/asg.ts, docs/asg.md)
    albAutoScaling: bool
      .default(false)
      .describe(
        "frontend alb: serve from an Auto Scaling Group (launch template, release from an S3 bucket the program creates, instance refresh on a release change, target tracking on requests per target) instead of the one EC2 instance. See docs/asg.md. Off: the single instance, as before.",
      ),
    albAsgSubnetIds: list(z.string().regex(SUBNET_ID_RE, msg("a subnet id such as subnet-0123456789abcdef0")))
      .default([])
      .describe(
        "albAutoScaling: the default VPC's subnets the instances run in (several AZs). The instances have no public address, so these must reach apt and S3 through a NAT gateway (or VPC endpoints); the default subnets do not. Required with albAutoScaling.",
      ),
    albAsgMinSize: int(1, 100).default(2).describe("albAutoScaling: fewest instances."),
    albAsgMaxSize: int(1, 100).default(4).describe("albAutoScaling: most instances (at least albAsgMinSize)."),
    albAsgDesiredCapacity: int(1, 100)
      .default(2)
      .describe("albAutoScaling: instances at creation, from albAsgMinSize to albAsgMaxSize (target tracking moves it afterwards)."),
    albAsgTargetRequests: int(1, 1000000)
      .default(1000)
      .describe(
        "albAutoScaling: requests per minute per target (one app process: ALBRequestCountPerTarget) the target-tracking policy holds by adding or removing instances.",
      ),
    albAsgHealthCheckGracePeriod: int(60, 7200)
      .default(600)
      .describe(
        "albAutoScaling: seconds a new instance has before failed ELB health checks replace it (first boot installs packages and builds the virtualenv); also the instance warm-up of scaling and instance refresh.",
      ),
    albAsgMinHealthyPercentage: int(0, 100)
      .default(100)
      .describe(
        "albAutoScaling: capacity an instance refresh keeps in service, in percent; at 100 new instances are launched and healthy before old ones go (up to twice the capacity for a while).",
      ),
    // nginx: several app hosts behind the edge (docs/multi-host.md)
    appHosts: list(appHost)
      .default([])
      .describe(
        "frontend nginx: existing app servers behind the edge, as [USER@]ADDRESS[:SSHPORT] with a private IPv4 address (10.0.1.11, admin@10.0.1.12:2222). Each gets the host bootstrap and the app, uvicorn bound to ADDRESS; nginx on the edge (the host of hostMode) proxies to every ADDRESS:port and runs no app process: it keeps the release for the static files it serves, and its own uvicorns stop after nginx switches. SSH reaches them through the edge (same key and, unless given, hostUser). Not with appHostCount, frontend alb or appRuntime container. Empty: the app runs on the edge, as before. See docs/multi-host.md.",
      ),
    appHostCount: int(0, 16)
      .default(0)
      .describe(
        "hostMode ec2, frontend nginx: create this many EC2 app instances (instanceType, hostOs, the edge's key) in appHostSubnetIds with no public address, admitting the app ports and SSH only from the edge's security group. 0: none. Not with appHosts. See docs/multi-host.md.",
      ),
    appHostSubnetIds: list(z.string().regex(SUBNET_ID_RE, msg("a subnet id such as subnet-0123456789abcdef0")))
      .default([])
      .describe(
        "appHostCount: subnets of the default VPC the app instances run in, taken in turn. The instances have no public address, so these must reach apt through a NAT gateway (or a mirror); the default subnets do not. Required with appHostCount.",
      ),
    appHostKeys: list(z.string().regex(SSH_PUBKEY_RE, msg("the host's public key line (ssh-ed25519 AAAA...)")))
      .default([])
      .describe(
        "appHosts: pin each app host's SSH host key, one public key line per appHosts entry in the same order (comma-separated or a YAML list); a host step then refuses a server whose key differs. Empty: app hosts' keys are not checked (hostKey pins the edge, the bastion hop, only). Not with appHostCount: EC2 instances' keys are not known before they boot.",
      ),
    edgePrivateAddress: privateIpv4
      .optional()
      .describe(
        "appHosts with hostMode existing: the edge's private IPv4 address, the one its connections to the app hosts come from: the app hosts' uvicorn trusts X-Forwarded-* from it alone, and SSH is proxied through it. hostMode ec2 takes the instance's own private address (leave unset).",
      ),
    // DNS and alerts
    route53ZoneId: z
      .string()
      .regex(ZONE_ID_RE, msg("a Route53 hosted zone id such as Z0123456789ABC"))
      .optional()
      .describe("Route53 hosted zone for the domain's record (and ALB mode's ACM validation)."),
    alertEmail: email.optional().describe("E-mail subscribed to the certificate-expiry alarm topic (unset: no alarm)."),
    certExpiryAlarmPercent: int(1, 50)
      .default(25)
      .describe(
        "nginx mode: alarm when less than this percentage of the certificate's lifetime is left, (notAfter-now)/(notAfter-notBefore); certbot renews at a third left (half for certificates under 10 days), so the default 25 leaves it several tries. Works alike for 90-, 45- and 6-day certificates.",
      ),
  })
  .strict()
  .superRefine((c, ctx) => {
    const need = (key: string, when: string) => ctx.addIssue({ code: "custom", path: [key], message: `is required when ${when}` });
    if (c.hostMode === "existing") {
      if (!c.hostAddress) need("hostAddress", "hostMode is existing");
      if (c.frontend === "alb") {
        ctx.addIssue({ code: "custom", path: ["frontend"], message: "alb needs hostMode ec2 (the ALB targets an EC2 instance)" });
      }
    }
    if (c.frontend === "alb" && !c.route53ZoneId) need("route53ZoneId", "frontend is alb (ACM validates the certificate through Route53)");
    if (c.frontend === "nginx" && !c.email) need("email", "frontend is nginx (the ACME account e-mail)");
    if (c.acme === "custom" && !c.acmeDirectoryUrl) need("acmeDirectoryUrl", "acme is custom");
    if (c.acme !== "custom" && (c.acmeDirectoryUrl || c.acmeCaBundle)) {
      ctx.addIssue({ code: "custom", path: ["acme"], message: "must be custom when acmeDirectoryUrl or acmeCaBundle is set" });
    }
    if (c.appRuntime === "container" && c.frontend === "alb") {
      ctx.addIssue({
        code: "custom",
        path: ["appRuntime"],
        message:
          "container is for frontend nginx: behind the ALB the container would see podman's gateway as every client (its port forwarding masquerades), so use appRuntime host with the app's own virtualenv",
      });
    }
    if (c.appRuntime !== "container" && c.appImage) {
      ctx.addIssue({ code: "custom", path: ["appImage"], message: "is only used with appRuntime container" });
    }
    if (c.appRegistryUsername && !c.appImage) {
      ctx.addIssue({ code: "custom", path: ["appRegistryUsername"], message: "is only used with appImage (a registry to pull from)" });
    }
    if (c.appRuntime === "container" && (c.appWheelhouse || c.appPackageIndex || c.appVenvSystemPackages)) {
      ctx.addIssue({
        code: "custom",
        path: ["appRuntime"],
        message:
          "container takes the app's packages from the image: unset appWheelhouse, appPackageIndex and appVenvSystemPackages (they build a host virtualenv)",
      });
    }
    if (c.appWheelhouse && c.appPackageIndex) {
      ctx.addIssue({
        code: "custom",
        path: ["appPackageIndex"],
        message: "must be unset when appWheelhouse is set (pip installs from the wheelhouse only, with --no-index)",
      });
    }
    if (c.http3 && c.frontend === "alb") {
      ctx.addIssue({
        code: "custom",
        path: ["http3"],
        message: "must be false when frontend is alb (nginx serves HTTP/3; an Application Load Balancer does not)",
      });
    } else if (c.http3) {
      const v = targetNginxVersion(c);
      if (!versionAtLeast(v, "1.25")) {
        const from = c.nginxVersion ? `nginxVersion is ${v}` : `hostOs ${c.hostOs} packages nginx ${v}`;
        ctx.addIssue({
          code: "custom",
          path: ["http3"],
          message: `needs nginx 1.25 or newer (QUIC), but ${from}: use hostOs debian-13 or nginxSource nginx.org, or install a newer nginx and set nginxVersion`,
        });
      }
    }
    checkFront(c, ctx);
    checkAutoScaling(c, ctx);
    checkAppHosts(c, ctx);
    checkAppUpstream(c, ctx);
    if (
      c.nginxSource === "nginx.org" &&
      c.nginxVersion &&
      !c.nginxVersion.startsWith(`${NGINX_ORG_STABLE}.`) &&
      c.nginxVersion !== NGINX_ORG_STABLE
    ) {
      ctx.addIssue({
        code: "custom",
        path: ["nginxVersion"],
        message: `must be ${NGINX_ORG_STABLE} or ${NGINX_ORG_STABLE}.x, or unset, when nginxSource is nginx.org (the apt pin installs ${NGINX_ORG_STABLE}.*)`,
      });
    }
    if (c.acmeProfile !== undefined) {
      const os = HOST_OS[c.hostOs];
      if (c.frontend === "alb") {
        ctx.addIssue({
          code: "custom",
          path: ["acmeProfile"],
          message: "applies to frontend nginx only (in ALB mode ACM issues the certificate)",
        });
      } else if (!versionAtLeast(os.certbot, CERTBOT_PROFILES_SINCE)) {
        ctx.addIssue({
          code: "custom",
          path: ["acmeProfile"],
          message: `needs certbot ${CERTBOT_PROFILES_SINCE} or newer (ACME profiles), but hostOs ${c.hostOs} (${os.label}) packages certbot ${os.certbot}: use hostOs debian-13 or unset acmeProfile`,
        });
      }
    }
    if (c.workerConnections < 2 * (c.limitConnPerIp || 0)) {
      ctx.addIssue({ code: "custom", path: ["limitConnPerIp"], message: "must be at most half of workerConnections" });
    }
    const ports = c.appBasePort + c.appProcesses - 1;
    if (ports > 65535) ctx.addIssue({ code: "custom", path: ["appBasePort"], message: "leaves no room for appProcesses ports" });
    const seen = new Set<string>();
    for (const p of [c.staticPath, ...c.websocketPaths, ...c.rateLimits.map((r) => r.path), ...c.scannerPaths]) {
      if (seen.has(p))
        ctx.addIssue({
          code: "custom",
          path: ["websocketPaths"],
          message: `path ${p} is claimed twice (static, WebSocket, rate-limited and scanner paths must differ)`,
        });
      seen.add(p);
    }
  });

type AutoScalingSettings = {
  frontend: "nginx" | "alb";
  albAutoScaling: boolean;
  albAsgSubnetIds: string[];
  albAsgMinSize: number;
  albAsgMaxSize: number;
  albAsgDesiredCapacity: number;
  albAsgTargetRequests: number;
  albAsgHealthCheckGracePeriod: number;
  albAsgMinHealthyPercentage: number;
  sshAllowedCidrs: string[];
  sshPublicKey?: string | undefined;
};

/** The defaults of the albAsg* keys: a changed one without albAutoScaling is refused (it would do nothing). */
const ASG_DEFAULTS = {
  albAsgMinSize: 2,
  albAsgMaxSize: 4,
  albAsgDesiredCapacity: 2,
  albAsgTargetRequests: 1000,
  albAsgHealthCheckGracePeriod: 600,
  albAsgMinHealthyPercentage: 100,
} as const;

/** The cross-key rules of albAutoScaling. */
function checkAutoScaling(c: AutoScalingSettings, ctx: z.RefinementCtx): void {
  const issue = (key: string, message: string) => ctx.addIssue({ code: "custom", path: [key], message });
  if (!c.albAutoScaling) {
    if (c.albAsgSubnetIds.length) issue("albAsgSubnetIds", "is only used with albAutoScaling true");
    for (const [key, def] of Object.entries(ASG_DEFAULTS)) {
      if (c[key as keyof typeof ASG_DEFAULTS] !== def) issue(key, "is only used with albAutoScaling true");
    }
    return;
  }
  if (c.frontend !== "alb") {
    issue("albAutoScaling", "needs frontend alb (the Auto Scaling Group is the ALB's target; behind nginx there is one host)");
  }
  if (!c.albAsgSubnetIds.length) {
    issue(
      "albAsgSubnetIds",
      "is required when albAutoScaling is true: subnet ids (subnet-...) of the default VPC whose route reaches the internet through a NAT gateway (the instances have no public address)",
    );
  } else if (new Set(c.albAsgSubnetIds).size !== c.albAsgSubnetIds.length) {
    issue("albAsgSubnetIds", "must not name a subnet twice");
  }
  if (c.albAsgMinSize > c.albAsgMaxSize) {
    issue("albAsgMinSize", `must be at most albAsgMaxSize (${c.albAsgMinSize} > ${c.albAsgMaxSize})`);
  } else if (c.albAsgDesiredCapacity < c.albAsgMinSize || c.albAsgDesiredCapacity > c.albAsgMaxSize) {
    issue(
      "albAsgDesiredCapacity",
      `must be from albAsgMinSize to albAsgMaxSize (${c.albAsgMinSize} to ${c.albAsgMaxSize}, got ${c.albAsgDesiredCapacity})`,
    );
  }
  if (c.sshAllowedCidrs.length) {
    issue(
      "sshAllowedCidrs",
      "must be empty with albAutoScaling: the group's instances take no SSH (no key, no public address, no port 22)",
    );
  }
  if (c.sshPublicKey) {
    issue("sshPublicKey", "must be unset with albAutoScaling: the group's instances get no SSH key");
  }
}

type AppHostSettings = {
  frontend: "nginx" | "alb";
  hostMode: "ec2" | "existing";
  appRuntime: "host" | "container";
  appHosts: AppHost[];
  appHostCount: number;
  appHostSubnetIds: string[];
  appHostKeys: string[];
  edgePrivateAddress?: string | undefined;
  hostAddress?: string | undefined;
};

/** The cross-key rules of appHosts and appHostCount. */
function checkAppHosts(c: AppHostSettings, ctx: z.RefinementCtx): void {
  const issue = (key: string, message: string) => ctx.addIssue({ code: "custom", path: [key], message });
  const listed = c.appHosts.length > 0;
  const created = c.appHostCount > 0;
  if (c.appHostKeys.length && !listed) {
    issue(
      "appHostKeys",
      created
        ? "is only for appHosts: the instances appHostCount creates have keys nobody knows before they boot"
        : "is only used with appHosts (one key per app host)",
    );
  }
  if (listed && c.appHostKeys.length && c.appHostKeys.length !== c.appHosts.length) {
    issue(
      "appHostKeys",
      `must name one key per appHosts entry, in the same order: ${c.appHosts.length} host(s), ${c.appHostKeys.length} key(s)`,
    );
  }
  if (!listed && !created) {
    if (c.appHostSubnetIds.length) issue("appHostSubnetIds", "is only used with appHostCount above 0");
    if (c.edgePrivateAddress) issue("edgePrivateAddress", "is only used with appHosts (and hostMode existing)");
    return;
  }
  const key = listed ? "appHosts" : "appHostCount";
  if (listed && created)
    issue("appHostCount", "must be 0 when appHosts is set: list existing servers or let the program create instances, not both");
  if (c.frontend === "alb") {
    issue(key, "is for frontend nginx: behind the ALB several app servers are albAutoScaling's Auto Scaling Group (docs/asg.md)");
  }
  if (c.appRuntime === "container") {
    issue(
      key,
      "needs appRuntime host for now: the containers publish their ports on 127.0.0.1 only and trust podman's gateway as the proxy, so nginx on another machine could not reach them and the client address would be lost",
    );
  }
  if (listed) {
    const seen = new Set<string>();
    for (const h of c.appHosts) {
      if (seen.has(h.address)) issue("appHosts", `names ${h.address} twice (each app host once)`);
      seen.add(h.address);
      if (h.address === c.edgePrivateAddress || h.address === c.hostAddress) {
        issue("appHosts", `must not name the edge itself (${h.address}): the edge runs nginx; leave appHosts empty to run the app there`);
      }
    }
    if (c.hostMode === "existing" && !c.edgePrivateAddress) {
      issue(
        "edgePrivateAddress",
        "is required when appHosts is set with hostMode existing: the edge's private IPv4 address, which the app hosts trust forwarded headers from",
      );
    }
    if (c.hostMode === "ec2" && c.edgePrivateAddress) {
      issue("edgePrivateAddress", "must be unset with hostMode ec2 (the edge instance's own private address is used)");
    }
    if (c.appHostSubnetIds.length) issue("appHostSubnetIds", "is only used with appHostCount (appHosts are existing servers)");
  }
  if (created && !listed) {
    if (c.hostMode !== "ec2") {
      issue("appHostCount", "needs hostMode ec2 (it creates EC2 instances); list existing servers in appHosts instead");
    }
    if (!c.appHostSubnetIds.length) {
      issue(
        "appHostSubnetIds",
        "is required when appHostCount is above 0: subnet ids (subnet-...) of the default VPC whose route reaches the internet through a NAT gateway (the app instances have no public address)",
      );
    } else if (new Set(c.appHostSubnetIds).size !== c.appHostSubnetIds.length) {
      issue("appHostSubnetIds", "must not name a subnet twice");
    }
    if (c.edgePrivateAddress)
      issue("edgePrivateAddress", "must be unset with appHostCount (the edge instance's own private address is used)");
  }
}

type AppUpstreamSettings = {
  frontend: "nginx" | "alb";
  appRuntime: "host" | "container";
  appUpstream: "tcp" | "unix";
  appHosts: AppHost[];
  appHostCount: number;
};

/** The cross-key rules of appUpstream: a unix socket is only reachable from nginx on the same machine. */
function checkAppUpstream(c: AppUpstreamSettings, ctx: z.RefinementCtx): void {
  if (c.appUpstream !== "unix") return;
  const issue = (message: string) => ctx.addIssue({ code: "custom", path: ["appUpstream"], message });
  if (c.frontend === "alb") {
    issue("unix is for frontend nginx: the ALB reaches the app over the network, so use appUpstream tcp");
  }
  if (c.appRuntime === "container") {
    issue("unix needs appRuntime host: the containers publish TCP ports on 127.0.0.1 only, so use appUpstream tcp");
  }
  if (c.appHosts.length > 0 || c.appHostCount > 0) {
    const key = c.appHosts.length > 0 ? "appHosts" : "appHostCount";
    issue(`unix needs the app on the edge: nginx cannot reach a unix socket on another machine (${key}), so use appUpstream tcp`);
  }
}

type FrontSettings = {
  frontend: "nginx" | "alb";
  hostMode: "ec2" | "existing";
  frontedBy: "none" | "cloudflare" | "custom";
  trustedProxyCidrs: string[];
  realIpHeader?: string | undefined;
  restrictHttpToCdn: boolean;
  originPullCaFile?: string | undefined;
  sshAllowedCidrs: string[];
};

/** The cross-key rules of frontedBy and the settings that go with it. */
function checkFront(c: FrontSettings, ctx: z.RefinementCtx): void {
  const issue = (key: string, message: string) => ctx.addIssue({ code: "custom", path: [key], message });
  if (c.frontedBy === "custom" && !c.trustedProxyCidrs.length) {
    issue(
      "trustedProxyCidrs",
      "is required (non-empty) when frontedBy is custom: nginx restores the client address only from these blocks",
    );
  }
  if (c.frontedBy !== "custom" && c.trustedProxyCidrs.length) {
    issue("trustedProxyCidrs", "is only used with frontedBy custom (cloudflare uses the shipped ranges in files/cdn/)");
  }
  if (c.frontedBy !== "custom" && c.realIpHeader) {
    issue("realIpHeader", `is only used with frontedBy custom (cloudflare always uses ${CLOUDFLARE_HEADER})`);
  }
  if (c.frontend === "alb" && c.frontedBy !== "none") {
    issue(
      "frontedBy",
      "must be none with frontend alb: there is no nginx to restore the client address (the ALB appends to X-Forwarded-For itself)",
    );
  }
  if (c.originPullCaFile) {
    if (c.frontend === "alb") {
      issue("originPullCaFile", "is refused with frontend alb: nginx checks the client certificate, and ALB mode has no nginx");
    } else if (c.frontedBy === "none") {
      issue("originPullCaFile", "needs frontedBy cloudflare or custom: with nothing in front, every browser would be refused");
    }
  }
  if (c.restrictHttpToCdn) {
    if (c.frontedBy === "none") issue("restrictHttpToCdn", "needs frontedBy cloudflare or custom (the ranges to open 80/443 to)");
    else if (c.hostMode !== "ec2") issue("restrictHttpToCdn", "needs hostMode ec2 (only the EC2 security group is managed here)");
    else if (c.frontend !== "nginx") issue("restrictHttpToCdn", "needs frontend nginx (in ALB mode the instance admits only the ALB)");
    else {
      const ranges = frontRanges(c);
      const ssh = byFamily(c.sshAllowedCidrs);
      for (const f of ["v4", "v6"] as const) {
        const rules = 2 * ranges[f].length + ssh[f].length;
        if (rules > SG_INBOUND_RULES_PER_FAMILY) {
          issue(
            "restrictHttpToCdn",
            `would need ${rules} IP${f} inbound rules (2 ports x ${ranges[f].length} ranges + ${ssh[f].length} SSH), over AWS's default quota of ${SG_INBOUND_RULES_PER_FAMILY} per security group`,
          );
        }
      }
    }
  }
}

/** The blocks nginx trusts to set the client address, by family (empty when nothing is in front). */
export function frontRanges(c: Pick<FrontSettings, "frontedBy" | "trustedProxyCidrs">): { v4: string[]; v6: string[] } {
  if (c.frontedBy === "cloudflare") return cloudflareRanges();
  if (c.frontedBy === "custom") return byFamily(c.trustedProxyCidrs);
  return { v4: [], v6: [] };
}

export type EdgeConfig = z.output<typeof configSchema>;
export type RawConfig = Record<string, unknown>;
export const CONFIG_KEYS = Object.keys(configSchema.shape) as (keyof EdgeConfig)[];

/** Keys that existed once, with what replaced them (a clearer refusal than "unknown key"). */
const RETIRED_KEYS: Record<string, string> = {
  certExpiryAlarmDays:
    "was replaced by certExpiryAlarmPercent (the alarm fires on the fraction of the certificate's lifetime left, so 6-day and 45-day certificates are handled alike); remove it and set certExpiryAlarmPercent if 25 does not suit",
};

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid ${PROJECT} stack config:\n` + problems.map((p) => `  - ${p}`).join("\n"));
    this.name = "ConfigError";
  }
}

function describe(value: unknown): string {
  const s = typeof value === "string" ? value : JSON.stringify(value);
  return s === undefined ? "nothing" : JSON.stringify(s.length > 60 ? s.slice(0, 60) + "..." : s);
}

/** Validate raw config. Unknown keys, missing keys and bad values all fail here. */
export function parseConfig(raw: RawConfig): EdgeConfig {
  const input: RawConfig = {};
  for (const [k, v] of Object.entries(raw)) {
    // "" is unset: Pulumi.yaml declares optional keys with an empty default.
    if (v !== undefined && v !== null && v !== "") input[k.startsWith(`${PROJECT}:`) ? k.slice(PROJECT.length + 1) : k] = v;
  }
  const result = configSchema.safeParse(input);
  if (result.success) return result.data;
  const problems = result.error.issues.flatMap((issue) => {
    const key = issue.path.length ? String(issue.path[0]) : "";
    if (issue.code === "unrecognized_keys") {
      const retired = issue.keys.filter((k) => RETIRED_KEYS[k] !== undefined);
      const unknown = issue.keys.filter((k) => RETIRED_KEYS[k] === undefined);
      return [
        ...retired.map((k) => `${PROJECT}:${k} ${RETIRED_KEYS[k]!}`),
        ...(unknown.length
          ? [`${unknown.map((k) => `${PROJECT}:${k}`).join(", ")}: unknown config key (known keys: see Pulumi.yaml)`]
          : []),
      ];
    }
    const value = key ? input[key] : undefined;
    const got = value === undefined ? "" : ` (got ${describe(value)})`;
    const message = issue.code === "invalid_type" && value === undefined ? "is required" : issue.message;
    return `${PROJECT}:${key} ${message}${got}`;
  });
  throw new ConfigError(problems);
}

// --------------------------------------------------------- derived settings

/** nginx version the renderer targets, from config, nginx.org's pinned stable line, or the host's distribution. */
export function targetNginxVersion(c: EdgeConfig): string {
  if (c.nginxVersion) return c.nginxVersion;
  if (c.nginxSource === "nginx.org") return NGINX_ORG_STABLE;
  return HOST_OS[c.hostOs].nginx;
}

/** OpenSSL version the target's nginx links against (it decides the TLS groups nginx accepts). */
export function targetOpenSslVersion(c: EdgeConfig): string {
  return HOST_OS[c.hostOs].openssl;
}

export function appPorts(c: EdgeConfig): number[] {
  return Array.from({ length: c.appProcesses }, (_, i) => c.appBasePort + i);
}

export function acmeDirectory(c: EdgeConfig): string {
  switch (c.acme) {
    case "letsencrypt":
      return "https://acme-v02.api.letsencrypt.org/directory";
    case "letsencrypt-staging":
      return "https://acme-staging-v02.api.letsencrypt.org/directory";
    case "custom":
      return c.acmeDirectoryUrl!;
  }
}

/** How nginx restores the client address: the trusted blocks, the header, and whether to walk a chain. */
export interface RealIp {
  frontedBy: "cloudflare" | "custom";
  cidrs: string[];
  header: string;
  /** X-Forwarded-For is a chain: skip trusted addresses from the right (real_ip_recursive on). */
  recursive: boolean;
}

export function realIp(c: EdgeConfig): RealIp | null {
  if (c.frontedBy === "none") return null;
  const r = frontRanges(c);
  const header = c.frontedBy === "cloudflare" ? CLOUDFLARE_HEADER : (c.realIpHeader ?? "X-Forwarded-For");
  return { frontedBy: c.frontedBy, cidrs: [...r.v4, ...r.v6], header, recursive: header.toLowerCase() === "x-forwarded-for" };
}
