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
