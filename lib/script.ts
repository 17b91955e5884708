// Shell scripts the components send to a host over SSH, built as text. Pure:
// no Pulumi import. File contents travel as quoted heredocs, so the script is
// readable in `pulumi preview --diff` line by line, and nothing in a file is
// ever expanded by the shell.
import { HostFile } from "./hostfiles";

const SAFE_PATH = /^[A-Za-z0-9._\/@+-]+$/;
const SAFE_ARG = /^[A-Za-z0-9._\/@+:=,-]*$/;

/** Single-quote a value for the shell after checking it is a plain path or word. */
export function shq(v: string, what = "argument"): string {
  if (!SAFE_ARG.test(v)) throw new Error(`refusing to pass ${what} ${JSON.stringify(v)} to a shell command`);
  return `'${v}'`;
}

/** Lines that write `files` (paths relative to `base`, or absolute when base is "") atomically. */
export function writeFilesScript(files: HostFile[], base = ""): string[] {
  const out: string[] = [];
  for (const f of files) {
    const rel = f.path;
    if (!SAFE_PATH.test(rel) || rel.split("/").includes("..")) throw new Error(`unsafe path ${JSON.stringify(rel)}`);
    const dest = base ? `${base}/${rel.replace(/^\//, "")}` : rel;
    // A fixed delimiter keeps `preview --diff` to the lines that really changed.
    const delim = "FASTAPI_EDGE_EOF";
    if (f.content.split("\n").includes(delim)) throw new Error(`file ${rel} contains the heredoc delimiter`);
    const body = f.content.endsWith("\n") ? f.content : f.content + "\n";
    const mode = (f.mode ?? 0o644).toString(8).padStart(4, "0");
    const q = base ? `"${dest}"` : `'${dest}'`;
    const tmp = base ? `"${dest}.tmp"` : `'${dest}.tmp'`;
    out.push(`install -d -m 0755 "$(dirname ${q})"`);
    out.push(`cat > ${tmp} <<'${delim}'`, body.replace(/\n$/, ""), delim);
    out.push(`chmod ${mode} ${tmp}`, `mv -f ${tmp} ${q}`);
  }
  return out;
}

export const PRELUDE = ["set -euo pipefail", "umask 022"];

/** A script that writes files to absolute paths, then runs `then`. */
export function installFilesScript(files: HostFile[], then: string[] = []): string {
  return [...PRELUDE, ...writeFilesScript(files), ...then, ""].join("\n");
}

/** A script that stages nginx files and applies them with nginx-apply.sh (nginx -t before reload). */
export function nginxApplyScript(stageFiles: HostFile[], applyScript: string, before: string[] = [], after: string[] = []): string {
  return [
    ...PRELUDE,
    ...before,
    'stage="$(mktemp -d /tmp/fastapi-edge-stage.XXXXXX)"',
    'trap \'rm -rf "$stage"\' EXIT',
    ...writeFilesScript(stageFiles, "$stage"),
    `${applyScript} "$stage"`,
    ...after,
    "",
  ].join("\n");
}
