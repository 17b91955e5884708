// Shared plumbing for commands run on the host over SSH.
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";

export type Connection = command.types.input.remote.ConnectionArgs;

export interface HostTarget {
  /** SSH connection to the host. */
  connection: Connection;
  /** SSH user: commands run through `sudo -n` unless it is root. */
  user: pulumi.Input<string>;
  /** Changes when the machine itself is replaced, so host steps run again. */
  machineId: pulumi.Input<string>;
}

/** The remote command line that runs a script from stdin as root. */
export function rootShell(user: pulumi.Input<string>): pulumi.Output<string> {
  return pulumi.output(user).apply((u) => (u === "root" ? "bash -s" : "sudo -n bash -s"));
}

export interface ScriptArgs {
  target: HostTarget;
  /** Script run on create and on any input change. */
  script: pulumi.Input<string>;
  /** Script run on `pulumi destroy` (best effort: it must not fail on a half-built host). */
  deleteScript?: pulumi.Input<string>;
  /** Extra values whose change re-runs the script. */
  triggers?: pulumi.Input<unknown>[];
}

/**
 * A root script on the host. The script is the command's stdin, so `pulumi
 * preview --diff` shows exactly which of its lines change, and an unchanged
 * script runs nothing on the next `pulumi up`.
 */
export function hostScript(name: string, args: ScriptArgs, opts: pulumi.CustomResourceOptions): command.remote.Command {
  const shell = rootShell(args.target.user);
  return new command.remote.Command(
    name,
    {
      connection: args.target.connection,
      create: shell,
      update: shell,
      stdin: args.script,
      ...(args.deleteScript !== undefined ? { delete: pulumi.interpolate`${shell} <<'FASTAPI_EDGE_DELETE'\n${args.deleteScript}\nFASTAPI_EDGE_DELETE` } : {}),
      triggers: [args.target.machineId, ...(args.triggers ?? [])],
      addPreviousOutputInEnv: false,
    },
    opts,
  );
}
