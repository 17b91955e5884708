// Several app hosts behind the nginx edge (appHosts, appHostCount): each gets
// the host bootstrap and the app, as the single host does, with uvicorn bound
// to its private address and trusting forwarded headers from the edge alone.
// Host steps reach them through the edge (bastionTarget). The app steps are
// chained, so a release rolls host by host (and, inside a host, process by
// process): at most one host is restarting at any time.
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";
import { EdgeConfig } from "../lib/config";
import { installedScript } from "../lib/hostfiles";
import { PythonDeps } from "../lib/pyapp";
import { commandLine, stepShell } from "../lib/shell";
import { AppService } from "./app";
import { HostBootstrap } from "./bootstrap";
import { bastionTarget, HostTarget, hostStep, PrivateHost } from "./remote";

export interface AppHostsArgs {
  config: EdgeConfig;
  /** The edge: the bastion every host step goes through. */
  edge: HostTarget;
  /** The edge's private address: FORWARDED_ALLOW_IPS on every app host. */
  edgePrivateAddress: pulumi.Input<string>;
  /** The hosts, in rollout order, each with a stable key for its resource names. */
  hosts: { key: string; host: PrivateHost }[];
  projectDir: string;
  deps: PythonDeps | null;
}

export class AppHosts extends pulumi.ComponentResource {
  /** Every host's app, in rollout order (the last one finishes the rollout). */
  readonly apps: AppService[] = [];
  /** Every host's private address, in the upstream's order. */
  readonly addresses: pulumi.Output<string[]>;

  constructor(name: string, args: AppHostsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:app:Hosts", name, {}, opts);
    let previous: AppService | undefined;
    for (const { key, host } of args.hosts) {
      const target = bastionTarget(args.edge, host);
      const bootstrap = new HostBootstrap(
        `${name}-${key}-bootstrap`,
        { config: args.config, target, venv: args.deps !== null, role: "app" },
        { parent: this },
      );
      const app: AppService = new AppService(
        `${name}-${key}`,
        {
          config: args.config,
          target,
          forwardedAllowIps: args.edgePrivateAddress,
          bindAddress: host.address,
          projectDir: args.projectDir,
          deps: args.deps,
        },
        // Host by host: this host's deploy starts once the previous host's is live.
        { parent: this, dependsOn: previous ? [bootstrap, previous] : [bootstrap] },
      );
      this.apps.push(app);
      previous = app;
    }
    this.addresses = pulumi.all(args.hosts.map((h) => pulumi.output(h.host.address)));
    this.registerOutputs({ addresses: this.addresses });
  }
}

/**
 * The edge's own app processes, stopped once app hosts serve the upstream. A stack that
 * grows from one host to several had uvicorn on the edge's 127.0.0.1; the edge's deploy
 * now installs the files alone (AppService filesOnly) and leaves the processes running,
 * because nginx still proxies to them until its new upstream is live. This step depends
 * on nginx, so it stops them (app-rollout.sh --prune-only with no port: every
 * fastapi-edge-app@ instance) only after the reload. On a fresh stack it finds nothing.
 * It has no delete command: going back to one host, the edge's deploy starts its
 * processes again before nginx names them.
 */
export class EdgeAppRetirement extends pulumi.ComponentResource {
  readonly step: command.remote.Command;

  constructor(name: string, args: { edge: HostTarget }, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:app:EdgeRetirement", name, {}, opts);
    const stdin = stepShell([], [commandLine(installedScript("app-rollout.sh"), "--prune-only")]);
    this.step = hostStep(`${name}-retire`, { target: args.edge, stdin }, { parent: this });
    this.registerOutputs({});
  }
}

/** A listed server's key in resource names: its address with dashes (10.0.1.11 -> 10-0-1-11). */
export function appHostKey(address: string): string {
  return address.replace(/\./g, "-");
}

/**
 * appHosts as app hosts: named after their address, so adding or removing one leaves
 * the others' resources alone; the edge's SSH user unless one is given; the host key
 * at the same position in appHostKeys, if any, pinned.
 */
export function listedAppHosts(c: EdgeConfig, edgeUser: pulumi.Input<string>): { key: string; host: PrivateHost }[] {
  return c.appHosts.map((h, i) => {
    const hostKey = c.appHostKeys[i];
    return {
      key: appHostKey(h.address),
      host: {
        address: h.address,
        user: h.sshUser ?? edgeUser,
        port: h.sshPort,
        machineId: `${h.address}:${h.sshPort}`,
        ...(hostKey !== undefined ? { hostKey } : {}),
      },
    };
  });
}
