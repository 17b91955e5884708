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
import { HOST_PATHS, uploadDir } from "../lib/hostpaths";
import { stepShell, shq } from "../lib/shell";
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
      { connection: args.target.connection, source: new pulumi.asset.FileArchive(`${source}/`), remotePath: upload, triggers: [args.target.machineId, this.release] },
      { parent: this },
    );

    const ports = appPorts(c).map(String);
    const releaseDir = `${HOST_PATHS.releasesDir}/${this.release}`;
    const stdin = pulumi.output(args.forwardedAllowIps).apply((fwd) =>
      stepShell(
        appDeployFiles(c, fwd),
        [
          `# release ${this.release}: install it once, then point ${HOST_PATHS.appDir} at it atomically`,
          `if [ ! -d ${shq(releaseDir)} ]; then`,
          `  install -d -m 0755 ${shq(HOST_PATHS.releasesDir)}`,
          `  cp -a ${shq(upload)} ${shq(`${releaseDir}.tmp`)}`,
          `  chown -R root:root ${shq(`${releaseDir}.tmp`)}`,
          `  chmod -R a+rX,go-w ${shq(`${releaseDir}.tmp`)}`,
          `  mv ${shq(`${releaseDir}.tmp`)} ${shq(releaseDir)}`,
          "fi",
          `rm -rf ${shq(upload)}`,
          `ln -sfn ${shq(releaseDir)} ${shq(`${HOST_PATHS.appDir}.new`)}`,
          `mv -T ${shq(`${HOST_PATHS.appDir}.new`)} ${shq(HOST_PATHS.appDir)}`,
          "systemctl daemon-reload",
          `HEALTH_PATH=${shq(c.appHealthPath)} EXPECT_VERSION=${shq(c.appVersion)} SETTLE_SECONDS=${rolloutSettleSeconds(c)} ${installedScript("app-rollout.sh")} ${ports.join(" ")}`,
          "# keep the three newest releases",
          `ls -1dt ${HOST_PATHS.releasesDir}/*/ | tail -n +4 | xargs -r rm -rf`,
        ],
      ),
    );
    // Names its own release: when a new release replaces this one, the engine runs this after
    // the new release is live, and it must then leave everything alone (app-remove.sh).
    const onDelete = `${installedScript("app-remove.sh")} ${this.release}`;
    this.deploy = hostStep(`${name}-deploy`, { target: args.target, stdin, onDelete, triggers: [this.release] }, { parent: this, dependsOn: [copy] });
    this.registerOutputs({ release: this.release });
  }
}
