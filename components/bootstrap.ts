// Waits for SSH on the host, then installs packages and the fastapi-edge
// scripts. Every later step on the host depends on this component.
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { EdgeConfig } from "../lib/config";
import { bootstrapCommands, hostInstallFiles, nginxSourceFiles, waitForBootShell } from "../lib/hostfiles";
import { stepShell } from "../lib/shell";
import { HostTarget, hostStep, rootShell } from "./remote";

export interface HostBootstrapArgs {
  config: EdgeConfig;
  target: HostTarget;
  /** How long to keep dialling a new host before giving up. */
  sshWaitTimeout?: string;
  /** The app has a dependencies file: each release builds a virtualenv (python3-venv). */
  venv?: boolean;
  /** edge (default): the host of hostMode, nginx included; app: an app host behind the edge (appHosts), no nginx. */
  role?: HostRole;
}

/** What a host is for: the edge (nginx, and the app unless there are app hosts) or an app host behind it. */
export type HostRole = "edge" | "app";

/**
 * Packages a host needs for the chosen front end, installed by
 * install-packages.sh. With nginxSource nginx.org, nginx-org-repo.sh installs
 * nginx before it, from nginx.org's repository. logrotate: Debian's nginx
 * package (and nginx.org's) ships /etc/logrotate.d/nginx (daily, 14 kept, which
 * covers our /var/log/nginx/fastapi-edge.access.log) but does not depend on
 * logrotate, and minimal images lack it: without it the access log grows forever.
 */
export function hostPackages(c: EdgeConfig, venv = false, role: HostRole = "edge"): string[] {
  // A release virtualenv needs `python3 -m venv`, which Debian and Ubuntu package apart.
  const runtime = c.appRuntime === "container" ? [] : c.appPackages;
  const base = ["curl", "ca-certificates", "openssl", ...runtime, ...(venv ? ["python3-venv"] : [])];
  if (c.frontend !== "nginx" || role === "app") return base;
  return c.nginxSource === "nginx.org" ? ["certbot", "logrotate", ...base] : ["nginx", "certbot", "logrotate", ...base];
}

/**
 * Packages installed without their recommends: podman for appRuntime container.
 * Its recommends (buildah, criu, cpp, gpg, an initramfs rebuild) took most of the
 * 11 minutes `apt-get install podman` took on the emulated e2e guest; rootful
 * podman publishing on 127.0.0.1 needs only its dependencies plus what podman
 * merely recommends but its networking needs: netavark (Debian 12 and Ubuntu
 * 24.04 would otherwise satisfy container-network-stack with the CNI plugins) and
 * both firewall front ends netavark may drive: iptables (netavark 1.4, Debian 12,
 * Ubuntu 24.04) and nftables (netavark 1.14, Debian 13: without nft every
 * container start fails with "netavark: nftables error: unable to execute nft",
 * found by the e2e). nftables also serves run-container.sh's opt-in port guard.
 */
export function leanPackages(c: EdgeConfig): string[] {
  return c.appRuntime === "container" ? ["podman", "netavark", "iptables", "nftables"] : [];
}

export class HostBootstrap extends pulumi.ComponentResource {
  /** The last step: depend on it to run after the host is ready. */
  readonly ready: command.remote.Command;
  readonly packages: string[];

  constructor(name: string, args: HostBootstrapArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:host:Bootstrap", name, {}, opts);
    const c = args.config;

    // A new instance takes a while to answer SSH: retry dialling without limit
    // (the provider's default gives up after 10 failed dials) within a create
    // timeout, the pattern of pulumi-command's own EC2 example.
    const waitConnection = { ...args.target.connection, dialErrorLimit: -1, perDialTimeout: 15 };
    const wait = new command.remote.Command(
      `${name}-wait-ssh`,
      {
        connection: waitConnection,
        create: rootShell(args.target.user),
        stdin: waitForBootShell(),
        triggers: [args.target.machineId],
        addPreviousOutputInEnv: false,
      },
      { parent: this, customTimeouts: { create: args.sshWaitTimeout ?? "10m" } },
    );

    const lean = leanPackages(c);
    const role = args.role ?? "edge";
    const packages = hostPackages(c, args.venv ?? false, role);
    this.packages = [...packages, ...lean];
    // An app host takes no nginx, so no nginx.org repository either.
    const source = role === "app" ? { frontend: c.frontend, nginxSource: "distribution" as const } : c;
    const stdin = stepShell([...hostInstallFiles(), ...nginxSourceFiles(source)], bootstrapCommands(source, packages, lean));
    this.ready = hostStep(`${name}-install`, { target: args.target, stdin }, { parent: this, dependsOn: [wait] });
    this.registerOutputs({ packages: this.packages });
  }
}
