// The quoting boundary: the only place that turns values into shell text for
// a host step (a remote.Command's stdin or delete command). Pure: no Pulumi
// import. What a step does lives in files/scripts/; the text built here only
// writes files and calls those scripts with quoted arguments.
//
// File contents travel as quoted heredocs, so the step's stdin is readable in
// `pulumi preview --diff` line by line, and nothing in a file is ever
// expanded by the shell.
import type { HostFile } from "./hostfiles";

const SAFE_PATH = /^[A-Za-z0-9._\/@+-]+$/;
const SAFE_ARG = /^[A-Za-z0-9._\/@+:=,-]*$/;
const FLAG = /^--[a-z][a-z-]*$/;

/** The delimiter of every file heredoc: fixed, so `preview --diff` shows only the lines that really changed. */
export const FILE_DELIMITER = "FASTAPI_EDGE_EOF";

/**
 * Single-quote a value for the shell after checking it is a plain path or
 * word. Refuses anything else (spaces, quotes, `$`, backslashes, newlines,
 * non-ASCII): config validation already keeps such values out, and this is
 * the second line of defence.
 */
export function shq(v: string, what = "argument"): string {
  if (!SAFE_ARG.test(v)) throw new Error(`refusing to pass ${what} ${JSON.stringify(v)} to a shell command`);
  return `'${v}'`;
}

/**
 * One command line: the program path and `--flag` words as they are, every
 * other argument quoted by shq. The program must be a plain absolute path.
 */
export function commandLine(program: string, ...args: string[]): string {
  if (!program.startsWith("/") || !SAFE_PATH.test(program))
    throw new Error(`refusing to run ${JSON.stringify(program)}: not a plain absolute path`);
  return [program, ...args.map((a) => (FLAG.test(a) ? a : shq(a)))].join(" ");
}

/** Lines that write `files` (paths relative to `base`, or absolute when base is "") atomically. */
export function fileWriteLines(files: HostFile[], base = ""): string[] {
  const out: string[] = [];
  for (const f of files) {
    const rel = f.path;
    if (!SAFE_PATH.test(rel) || rel.split("/").includes("..")) throw new Error(`unsafe path ${JSON.stringify(rel)}`);
    const dest = base ? `${base}/${rel.replace(/^\//, "")}` : rel;
    if (f.content.split("\n").includes(FILE_DELIMITER)) throw new Error(`file ${rel} contains the heredoc delimiter`);
    const body = f.content.endsWith("\n") ? f.content : f.content + "\n";
    const mode = (f.mode ?? 0o644).toString(8).padStart(4, "0");
    const q = base ? `"${dest}"` : `'${dest}'`;
    const tmp = base ? `"${dest}.tmp"` : `'${dest}.tmp'`;
    out.push(`install -d -m 0755 "$(dirname ${q})"`);
    out.push(`cat > ${tmp} <<'${FILE_DELIMITER}'`, body.replace(/\n$/, ""), FILE_DELIMITER);
    out.push(`chmod ${mode} ${tmp}`, `mv -f ${tmp} ${q}`);
  }
  return out;
}

export const PRELUDE = ["set -euo pipefail", "umask 022"];

/** A step's stdin: write files to absolute paths, then run `commands`. */
export function stepShell(files: HostFile[], commands: string[] = []): string {
  return [...PRELUDE, ...fileWriteLines(files), ...commands, ""].join("\n");
}

/**
 * A step's stdin that stages nginx files in a temp dir and hands it to
 * `applyCommand` (nginx-apply.sh or a wrapper of it) as its last argument.
 * `before` runs first.
 */
export function stageShell(stageFiles: HostFile[], applyCommand: string, before: string[] = []): string {
  return [
    ...PRELUDE,
    ...before,
    'stage="$(mktemp -d /tmp/fastapi-edge-stage.XXXXXX)"',
    "trap 'rm -rf \"$stage\"' EXIT",
    ...fileWriteLines(stageFiles, "$stage"),
    `${applyCommand} "$stage"`,
    "",
  ].join("\n");
}

/** The delimiter of a delete command's heredoc. */
export const DELETE_DELIMITER = "FASTAPI_EDGE_DELETE";

/** `shell` fed `body` on a quoted heredoc: the form of a step's delete command (remote.Command's delete has no stdin). */
export function heredocCommand(shell: string, body: string): string {
  if (body.split("\n").includes(DELETE_DELIMITER)) throw new Error("delete commands contain the heredoc delimiter");
  return `${shell} <<'${DELETE_DELIMITER}'\n${body}\n${DELETE_DELIMITER}`;
}
