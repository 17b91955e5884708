// The FastAPI app on the host: uploaded as a release directory, run by
// systemd as one uvicorn per port (fastapi-edge-app@PORT), rolled one process
// at a time, each back only when its health route answers.
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import * as path from "node:path";
import { appPorts, EdgeConfig } from "../lib/config";
import { appDeployFiles, installedScript, rolloutSettleSeconds } from "../lib/hostfiles";
import { uploadDir } from "../lib/hostpaths";
import { commandLine, stepShell } from "../lib/shell";
import { HostTarget, hostStep } from "./remote";

export interface AppServiceArgs {
  config: EdgeConfig;
  target: HostTarget;
  /** Addresses uvicorn trusts X-Forwarded-* from. */
  forwardedAllowIps: pulumi.Input<string>;
  /** Directory the app source is read from (resolved against the project). */
  projectDir: string;
}

/** Hash of a directory tree's paths and contents: the release id. */
export function treeHash(dir: string): string {
  const h = createHash("sha256");
  const walk = (d: string): void => {
    for (const e of readdirSync(d).sort()) {
      if (e === "__pycache__" || e.startsWith(".")) continue;
      const p = path.join(d, e);
      const rel = path.relative(dir, p);
      if (statSync(p).isDirectory()) walk(p);
      else h.update(rel).update("\0").update(readFileSync(p)).update("\0");
    }
  };
  walk(dir);
  return h.digest("hex").slice(0, 16);
}

export class AppService extends pulumi.ComponentResource {
  readonly deploy: command.remote.Command;
  readonly release: string;

  constructor(name: string, args: AppServiceArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:app:Service", name, {}, opts);
    const c = args.config;
    const source = path.resolve(args.projectDir, c.appSource);
    if (!statSync(source, { throwIfNoEntry: false })?.isDirectory()) {
      throw new Error(`fastapi-edge:appSource must be a directory (got ${JSON.stringify(c.appSource)}, resolved to ${source})`);
    }
    this.release = treeHash(source);
    const upload = uploadDir(this.release);

    // The release travels over SFTP; it is re-sent only when its content changes.
    // The trailing slash copies the directory's contents into remotePath (without it the
    // provider copies the directory itself, as remotePath/NAME/).
    const copy = new command.remote.CopyToRemote(
      `${name}-upload`,
      {
        connection: args.target.connection,
        source: new pulumi.asset.FileArchive(`${source}/`),
        remotePath: upload,
        triggers: [args.target.machineId, this.release],
      },
      { parent: this },
    );

    // app-deploy.sh installs the release once, makes it live and rolls the processes onto it.
    const deploy = commandLine(
      installedScript("app-deploy.sh"),
      ...["--release", this.release, "--upload", upload],
      ...["--health-path", c.appHealthPath, "--expect-version", c.appVersion, "--settle-seconds", String(rolloutSettleSeconds(c))],
      // Only when changed: the default keeps the command text, so existing stacks see no diff.
      ...(c.appStartTimeout !== 60 ? ["--health-timeout", String(c.appStartTimeout)] : []),
      ...appPorts(c).map(String),
    );
    const stdin = pulumi.output(args.forwardedAllowIps).apply((fwd) => stepShell(appDeployFiles(c, fwd), [deploy]));
    // Names its own release: when a new release replaces this one, the engine runs this after
    // the new release is live, and it must then leave everything alone (app-remove.sh). The
    // release is 16 hex digits, so it goes unquoted, as in the text existing stacks stored.
    const onDelete = `${installedScript("app-remove.sh")} ${this.release}`;
    this.deploy = hostStep(
      `${name}-deploy`,
      { target: args.target, stdin, onDelete, triggers: [this.release] },
      { parent: this, dependsOn: [copy] },
    );
    this.registerOutputs({ release: this.release });
  }
}
