// Shared plumbing for commands run on the host over SSH.
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { heredocCommand } from "../lib/shell";

export type Connection = command.types.input.remote.ConnectionArgs;

/** What every host component offers: Ec2Host and ExistingHost alike. */
export interface Host {
  /** Where and how host steps run. */
  readonly target: HostTarget;
  /** The address clients reach (Elastic IP, or the existing host's address). */
  readonly publicAddress: pulumi.Output<string>;
  /** A command line that opens a shell on the host. */
  readonly sshCommand: pulumi.Output<string>;
}

export interface HostTarget {
  /** SSH connection to the host. */
  connection: Connection;
  /** SSH user: commands run through `sudo -n` unless it is root. */
  user: pulumi.Input<string>;
  /** Changes when the machine itself is replaced, so host steps run again. */
  machineId: pulumi.Input<string>;
}

/** The remote command line that runs shell text from stdin as root. */
export function rootShell(user: pulumi.Input<string>): pulumi.Output<string> {
  return pulumi.output(user).apply((u) => (u === "root" ? "bash -s" : "sudo -n bash -s"));
}

export interface HostStepArgs {
  target: HostTarget;
  /** Shell text run as root on create and on any input change (the command's stdin). */
  stdin: pulumi.Input<string>;
  /**
   * Shell text run on `pulumi destroy`, and after a replacement (best effort: it must not
   * fail on a half-built host). The engine stores it with the resource when it is created.
   */
  onDelete?: pulumi.Input<string>;
  /** Extra values whose change re-runs the step. */
  triggers?: pulumi.Input<unknown>[];
}

/**
 * A host step: shell text run as root on the host. The text is the command's
 * stdin, so `pulumi preview --diff` shows exactly which of its lines change,
 * and an unchanged step runs nothing on the next `pulumi up`.
 */
export function hostStep(name: string, args: HostStepArgs, opts: pulumi.CustomResourceOptions): command.remote.Command {
  const shell = rootShell(args.target.user);
  return new command.remote.Command(
    name,
    {
      connection: args.target.connection,
      create: shell,
      update: shell,
      stdin: args.stdin,
      ...(args.onDelete !== undefined ? { delete: pulumi.all([shell, args.onDelete]).apply(([s, body]) => heredocCommand(s, body)) } : {}),
      triggers: [args.target.machineId, ...(args.triggers ?? [])],
      addPreviousOutputInEnv: false,
    },
    opts,
  );
}

/** An app host behind the edge: its private address and how to log in there. */
export interface PrivateHost {
  /** Private IPv4 address, dialled from the edge. */
  address: pulumi.Input<string>;
  user: pulumi.Input<string>;
  port: number;
  /** Changes when the machine is replaced (an instance id, or ADDRESS:PORT for a listed server). */
  machineId: pulumi.Input<string>;
  /** Its SSH host key (appHostKeys), pinned on the second hop; unset: not checked. */
  hostKey?: string;
}

/**
 * Where host steps run on an app host that has no public address: SSH to its private
 * address through the edge as a bastion (the command provider's `proxy` connection),
 * with the edge's key for both hops. The edge's host key pin (hostKey) applies to the
 * bastion hop, the app host's (appHostKeys) to the second.
 */
export function bastionTarget(edge: HostTarget, host: PrivateHost): HostTarget {
  const e = edge.connection;
  const proxy: command.types.input.remote.ProxyConnectionArgs = {
    host: e.host,
    ...(e.port !== undefined ? { port: e.port } : {}),
    ...(e.user !== undefined ? { user: e.user } : {}),
    ...(e.privateKey !== undefined ? { privateKey: e.privateKey } : {}),
    ...(e.hostKey !== undefined ? { hostKey: e.hostKey } : {}),
  };
  const connection: Connection = {
    host: host.address,
    port: host.port,
    user: host.user,
    ...(e.privateKey !== undefined ? { privateKey: e.privateKey } : {}),
    ...(host.hostKey !== undefined ? { hostKey: host.hostKey } : {}),
    proxy,
  };
  return { connection, user: host.user, machineId: host.machineId };
}
