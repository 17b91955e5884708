// Files shipped with the program (files/): host scripts, the systemd unit,
// nginx snippets, the maintenance page. Read as they are; nothing here
// substitutes values into them.
import { readFileSync } from "node:fs";
import * as path from "node:path";

export const FILES_DIR = path.resolve(__dirname, "..", "files");

/** The text of files/REL. */
export function shipped(rel: string): string {
  return readFileSync(path.join(FILES_DIR, rel), "utf8");
}

/**
 * `text` (the content of `file`) with the first `from` replaced by `to`. Throws when `from`
 * is not there: an edit of a shipped file whose anchor moved must fail, not do nothing.
 */
export function replaceExact(file: string, text: string, from: string, to: string): string {
  if (!text.includes(from)) throw new Error(`${file} has no ${JSON.stringify(from.trim())}`);
  return text.replace(from, to);
}
