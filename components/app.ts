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
import { HOST_PATHS, uploadDir, wheelhouseDir } from "../lib/hostpaths";
import { PythonDeps, UVICORN_CIDR_SINCE } from "../lib/pyapp";
import { commandLine, stepShell } from "../lib/shell";
import { HostTarget, hostStep } from "./remote";

export interface AppServiceArgs {
  config: EdgeConfig;
  target: HostTarget;
  /** Addresses uvicorn trusts X-Forwarded-* from. */
  forwardedAllowIps: pulumi.Input<string>;
  /** Directory the app source is read from (resolved against the project). */
  projectDir: string;
  /** The app's dependencies file (a virtualenv per release), or null: the distribution's packages (readAppRuntime). */
  deps: PythonDeps | null;
  /**
   * An app host behind the edge (appHosts): uvicorn binds this private address instead of
   * 127.0.0.1, and the rollout's health checks dial it (HEALTH_HOST). Unset: as before.
   */
  bindAddress?: pulumi.Input<string>;
  /**
   * The edge in front of app hosts: the release is installed and made live for the files
   * nginx serves from it, and no process runs here (app-deploy.sh --files-only). The edge's
   * processes from before are stopped by EdgeAppRetirement, after nginx.
   */
  filesOnly?: boolean;
}

/**
 * The release id: the app tree's hash; with a virtualenv, also everything its content
 * depends on (the wheelhouse's files, the index, the interpreter, whether it sees the
 * distribution's packages), so any of them builds a new release and going back to an
 * earlier combination finds its kept release. Without one it is the tree's hash alone,
 * as before virtualenvs existed, so existing stacks see no change.
 */
export function releaseId(c: EdgeConfig, source: string, deps: PythonDeps | null, wheelhouse: string | undefined): string {
  const tree = treeHash(source);
  if (!deps) return tree;
  const parts = [
    tree,
    "venv",
    deps.file,
    wheelhouse ? treeHash(wheelhouse) : "",
    c.appPackageIndex ?? "",
    c.appPython,
    String(c.appVenvSystemPackages),
  ];
  return createHash("sha256").update(parts.join("\0")).digest("hex").slice(0, 16);
}

/** Hash of a directory tree's paths and contents. */
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
    // readAppRuntime (index.ts) has checked appSource before any resource was created.
    const source = path.resolve(args.projectDir, c.appSource);
    const wheelhouse = args.deps && c.appWheelhouse ? path.resolve(args.projectDir, c.appWheelhouse) : undefined;
    this.release = releaseId(c, source, args.deps, wheelhouse);
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
    const uploads: pulumi.Resource[] = [copy];
    // The wheelhouse travels beside the release, only with it, and only when configured
    // (no new resource for stacks without one), and only where a virtualenv is built.
    if (wheelhouse && !args.filesOnly) {
      uploads.push(
        new command.remote.CopyToRemote(
          `${name}-wheels`,
          {
            connection: args.target.connection,
            source: new pulumi.asset.FileArchive(`${wheelhouse}/`),
            remotePath: wheelhouseDir(this.release),
            triggers: [args.target.machineId, this.release],
          },
          { parent: this },
        ),
      );
    }

    // app-deploy.sh installs the release once, makes it live and rolls the processes onto it.
    const deploy = commandLine(
      installedScript("app-deploy.sh"),
      ...["--release", this.release, "--upload", upload],
      ...["--health-path", c.appHealthPath, "--expect-version", c.appVersion, "--settle-seconds", String(rolloutSettleSeconds(c))],
      // Only when changed: the default keeps the command text, so existing stacks see no diff.
      ...(c.appStartTimeout !== 60 ? ["--health-timeout", String(c.appStartTimeout)] : []),
      ...venvArgs(c, args.deps, wheelhouse ? wheelhouseDir(this.release) : undefined),
      ...appPorts(c).map(String),
    );
    const filesOnly = commandLine(installedScript("app-deploy.sh"), "--files-only", "--release", this.release, "--upload", upload);
    const stdin = args.filesOnly
      ? pulumi.output(stepShell([], [filesOnly]))
      : args.bindAddress === undefined
        ? pulumi
            .output(args.forwardedAllowIps)
            .apply((fwd) => stepShell(appDeployFiles(c, fwd, args.deps !== null), [deployLine(c, deploy)]))
        : pulumi.all([args.forwardedAllowIps, args.bindAddress]).apply(([fwd, bind]) => {
            // renderAppEnv refuses anything but an IPv4 address, so the prefix is a plain assignment.
            const files = appDeployFiles(c, fwd, args.deps !== null, bind);
            return stepShell(files, [`HEALTH_HOST=${bind} ${deploy}`]);
          });
    // Names its own release: when a new release replaces this one, the engine runs this after
    // the new release is live, and it must then leave everything alone (app-remove.sh). The
    // release is 16 hex digits, so it goes unquoted, as in the text existing stacks stored.
    const onDelete = `${installedScript("app-remove.sh")} ${this.release}`;
    this.deploy = hostStep(
      `${name}-deploy`,
      { target: args.target, stdin, onDelete, triggers: [this.release] },
      { parent: this, dependsOn: uploads },
    );
    this.registerOutputs({ release: this.release });
  }
}

/**
 * The app-deploy command as the step runs it: with appUpstream unix the rollout's health
 * checks go to each instance's socket (HEALTH_UDS_DIR, read by app-rollout.sh). The default
 * keeps the command text, so existing stacks see no diff.
 */
export function deployLine(c: EdgeConfig, deploy: string): string {
  return c.appUpstream === "unix" ? `HEALTH_UDS_DIR=${HOST_PATHS.appSocketDir} ${deploy}` : deploy;
}

/** app-deploy.sh's virtualenv options: none without a dependencies file. */
export function venvArgs(c: EdgeConfig, deps: PythonDeps | null, wheelhouse: string | undefined): string[] {
  if (!deps) return [];
  return [
    ...["--venv", deps.file, "--python", c.appPython],
    ...(wheelhouse ? ["--wheelhouse", wheelhouse] : c.appPackageIndex ? ["--index-url", c.appPackageIndex] : []),
    ...(c.appVenvSystemPackages ? ["--system-site-packages"] : []),
    // Behind the ALB uvicorn trusts the VPC's block: only uvicorn 0.33+ matches a CIDR.
    ...(c.frontend === "alb" ? ["--min-uvicorn", UVICORN_CIDR_SINCE] : []),
  ];
}
