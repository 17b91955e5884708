// The operating systems the program deploys to, and what each one's own
// packages bring. The renderer picks nginx syntax and TLS groups from this
// table, the EC2 host picks its AMI and login user from it. Versions are the
// distributions' own (checked against Debian's archive and Ubuntu's package
// pages); a user who installs nginx some other way sets nginxVersion.

export const HOST_OS_NAMES = ["debian-13", "debian-12", "ubuntu-24.04"] as const;
export type HostOsName = (typeof HOST_OS_NAMES)[number];

export interface HostOs {
  name: HostOsName;
  /** Human name for docs and errors. */
  label: string;
  /** nginx version of the distribution's package (major.minor). */
  nginx: string;
  /** OpenSSL version the distribution's nginx links against (major.minor). */
  openssl: string;
  /** certbot version of the distribution's package (major.minor). */
  certbot: string;
  /** EC2: the AMI publisher's account and the image name pattern, newest wins. */
  ami: { owner: string; name: string };
  /** EC2: the login user the image's cloud-init creates. */
  ec2User: string;
}

export const HOST_OS: Record<HostOsName, HostOs> = {
  "debian-13": {
    name: "debian-13",
    label: "Debian 13 (trixie)",
    nginx: "1.26",
    openssl: "3.5",
    certbot: "4.0",
    // Debian's cloud team publishes from this account.
    ami: { owner: "136693071363", name: "debian-13-amd64-*" },
    ec2User: "admin",
  },
  "debian-12": {
    name: "debian-12",
    label: "Debian 12 (bookworm)",
    nginx: "1.22",
    openssl: "3.0",
    certbot: "2.1",
    ami: { owner: "136693071363", name: "debian-12-amd64-*" },
    ec2User: "admin",
  },
  "ubuntu-24.04": {
    name: "ubuntu-24.04",
    label: "Ubuntu 24.04 LTS (noble)",
    nginx: "1.24",
    openssl: "3.0",
    certbot: "2.9",
    ami: { owner: "099720109477", name: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*" },
    ec2User: "ubuntu",
  },
};

// ------------------------------------------------------------ nginx.org

/** Where nginx comes from: the distribution's package, or nginx.org's stable repository. */
export const NGINX_SOURCES = ["distribution", "nginx.org"] as const;
export type NginxSource = (typeof NGINX_SOURCES)[number];

/**
 * nginx.org's stable line (major.minor) the apt pin holds (`Pin: version
 * 1.30.*`), and so the version the renderer targets with nginxSource
 * nginx.org. Moving to the next stable line (1.32, spring 2027) is a change
 * here, checked by the renderer's real-nginx tests first.
 */
export const NGINX_ORG_STABLE = "1.30";
/** certbot release that added ACME profiles (--preferred-profile, --required-profile) and lifetime-relative renewal. */
export const CERTBOT_PROFILES_SINCE = "4.0";

/** True when version a (major.minor[.patch]) is at least b: the renderer's own comparison. */
export { versionAtLeast } from "./version";
