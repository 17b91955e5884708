// The app as an OCI image under podman (appRuntime container): one container per port,
// fastapi-edge-container@PORT, published on 127.0.0.1 only, rolled one at a time like
// the uvicorn units. The image is built where `pulumi up` runs (scripts/build-app-image.sh,
// offline apart from the Debian mirror) and shipped over SSH as an archive, or pulled from
// a registry pinned by digest. appSource is also installed as a release directory, from
// which nginx serves appStaticDir in both runtimes.
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { appPorts, EdgeConfig } from "../lib/config";
import { containerDeployFiles, installedScript, rolloutSettleSeconds } from "../lib/hostfiles";
import { imageArchiveDir, uploadDir } from "../lib/hostpaths";
import { commandLine, stepShell } from "../lib/shell";
import { treeHash } from "./app";
import { HostTarget, hostStep } from "./remote";

export interface ContainerAppArgs {
  config: EdgeConfig;
  target: HostTarget;
  /** Directory the app source is read from (resolved against the project). */
  projectDir: string;
  /** appRegistryPassword (secret), when appRegistryUsername is set. */
  registryPassword?: pulumi.Output<string> | undefined;
}

export interface BuiltImage {
  id: string;
  archive: string;
  sha256: string;
}

/**
 * scripts/build-app-image.sh, run while the program runs (preview included, as
 * docker.Image does): the image id is then known to `pulumi preview --diff`, and the
 * build is reproducible and cached, so an unchanged app rebuilds nothing and ships
 * nothing. Needs root, podman and debootstrap where pulumi runs.
 */
export function buildAppImage(projectDir: string, source: string, release: string): BuiltImage {
  const script = path.join(projectDir, "scripts", "build-app-image.sh");
  let out: string;
  try {
    out = execFileSync("bash", [script, "--app-dir", source, release], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(
      `fastapi-edge:appRuntime container: building the app image failed (scripts/build-app-image.sh):\n${err.stderr ?? err.message}`,
    );
  }
  const kv = Object.fromEntries(
    out
      .split("\n")
      .map((l) => /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1]!, m[2]!]),
  );
  const id = kv["IMAGE_ID"];
  const archive = kv["IMAGE_ARCHIVE"];
  const sha256 = kv["IMAGE_SHA256"];
  if (!id || !archive || !sha256) throw new Error(`build-app-image.sh printed no IMAGE_ID/IMAGE_ARCHIVE/IMAGE_SHA256:\n${out}`);
  return { id, archive, sha256 };
}

/** The release: the app tree (static files, and the image's content when built here) and the image it runs. */
export function containerRelease(c: EdgeConfig, source: string): string {
  const parts = [treeHash(source), "container", c.appImage ?? "build"];
  return createHash("sha256").update(parts.join("\0")).digest("hex").slice(0, 16);
}

/** The registry password on the deploy script's stdin, as a here-document (never on a command line). */
function withPassword(line: string, password: string): string {
  if (/[\r\n]/.test(password)) throw new Error("fastapi-edge:appRegistryPassword must be one line");
  const tag = `FASTAPI_EDGE_REGISTRY_${createHash("sha256").update(password).digest("hex").slice(0, 12).toUpperCase()}`;
  return `${line} <<'${tag}'\n${password}\n${tag}`;
}

export class ContainerAppService extends pulumi.ComponentResource {
  readonly deploy: command.remote.Command;
  readonly release: string;
  readonly imageId: string | undefined;

  constructor(name: string, args: ContainerAppArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:app:Container", name, {}, opts);
    const c = args.config;
    const source = path.resolve(args.projectDir, c.appSource);
    this.release = containerRelease(c, source);
    const upload = uploadDir(this.release);
    const conn = args.target.connection;

    const uploads: pulumi.Resource[] = [
      new command.remote.CopyToRemote(
        `${name}-upload`,
        {
          connection: conn,
          source: new pulumi.asset.FileArchive(`${source}/`),
          remotePath: upload,
          triggers: [args.target.machineId, this.release],
        },
        { parent: this },
      ),
    ];
    let imageArgs: string[];
    if (c.appImage) {
      imageArgs = ["--pull", c.appImage];
    } else {
      const image = buildAppImage(args.projectDir, source, this.release);
      this.imageId = image.id;
      const remoteArchive = `${imageArchiveDir(this.release)}/image.tar`;
      uploads.push(
        new command.remote.CopyToRemote(
          `${name}-image-upload`,
          {
            connection: conn,
            source: new pulumi.asset.FileAsset(image.archive),
            remotePath: remoteArchive,
            triggers: [args.target.machineId, image.id],
          },
          { parent: this },
        ),
      );
      imageArgs = ["--archive", remoteArchive, "--image-id", image.id, "--sha256", image.sha256];
    }

    const line = commandLine(
      installedScript("container-deploy.sh"),
      ...["--release", this.release, "--upload", upload, ...imageArgs],
      ...["--health-path", c.appHealthPath, "--expect-version", c.appVersion, "--settle-seconds", String(rolloutSettleSeconds(c))],
      ...["--health-timeout", String(c.appStartTimeout)],
      ...appPorts(c).map(String),
    );
    const files = containerDeployFiles(c);
    const stdin =
      c.appRegistryUsername && args.registryPassword
        ? pulumi.secret(
            args.registryPassword.apply((pw) =>
              stepShell(files, [`export REGISTRY_USERNAME=${c.appRegistryUsername}`, withPassword(line, pw)]),
            ),
          )
        : pulumi.output(stepShell(files, [line]));
    this.deploy = hostStep(
      `${name}-deploy`,
      { target: args.target, stdin, onDelete: `${installedScript("container-remove.sh")} ${this.release}`, triggers: [this.release] },
      { parent: this, dependsOn: uploads },
    );
    this.registerOutputs({ release: this.release });
  }
}
