// Any server reachable over SSH (another cloud, on-premises, a local VM).
import * as pulumi from "@pulumi/pulumi";
import { EdgeConfig } from "../lib/config";
import { Connection, Host, HostTarget } from "./remote";

export interface ExistingHostArgs {
  config: EdgeConfig;
  privateKey: pulumi.Input<string>;
}

export class ExistingHost extends pulumi.ComponentResource implements Host {
  readonly target: HostTarget;
  readonly publicAddress: pulumi.Output<string>;
  readonly sshCommand: pulumi.Output<string>;

  constructor(name: string, args: ExistingHostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:host:Existing", name, {}, opts);
    const c = args.config;
    const user = c.hostUser ?? "root";
    const connection: Connection = {
      host: c.hostAddress!,
      port: c.hostPort,
      user,
      privateKey: pulumi.secret(args.privateKey),
      ...(c.hostKey ? { hostKey: c.hostKey } : {}),
    };
    this.target = { connection, user, machineId: `${c.hostAddress}:${c.hostPort}` };
    this.publicAddress = pulumi.output(c.hostAddress!);
    this.sshCommand = pulumi.output(`ssh -p ${c.hostPort} ${user}@${c.hostAddress}`);
    this.registerOutputs({ publicAddress: this.publicAddress, sshCommand: this.sshCommand });
  }
}
