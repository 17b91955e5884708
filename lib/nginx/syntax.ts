// Small pieces of nginx syntax shared by the generators.
import { shipped } from "../shipped";
import { Listen } from "./types";

export { parseVersion, versionAtLeast } from "../version";

/** Seconds in an nginx duration (validated form: digits + ms|s|m|h). */
export function durationSeconds(d: string): number {
  const m = /^([0-9]+)(ms|s|m|h)$/.exec(d);
  if (!m) throw new Error(`not an nginx duration: ${d}`);
  const n = Number(m[1]);
  return m[2] === "ms" ? n / 1000 : m[2] === "s" ? n : m[2] === "m" ? n * 60 : n * 3600;
}

/** Indent a block of lines (empty lines stay empty). */
export function indent(text: string, by = "    "): string {
  return text
    .split("\n")
    .map((l) => (l.trim() === "" ? "" : by + l))
    .join("\n");
}

/** `listen` directives for one port: the address, or all IPv4 and IPv6 addresses. */
export function listenLines(l: Listen, port: number, opts: string): string[] {
  const suffix = opts ? ` ${opts}` : "";
  if (l.address) return [`listen ${l.address}:${port}${suffix};`];
  return [`listen ${port}${suffix};`, `listen [::]:${port}${suffix};`];
}

/** The limit_req zone of a rate-limited path. */
export function zoneName(p: string): string {
  const slug = p.replace(/[^A-Za-z0-9]+/g, "_").replace(/^_+|_+$/g, "");
  return `rl_${slug || "root"}`;
}

/** The lines of a snippet in files/nginx/, to splice into a rendered file. */
export function snippetLines(name: string): string[] {
  return shipped(`nginx/${name}`).replace(/\n$/, "").split("\n");
}

/** Indent lines by one level (empty lines stay empty). */
export function indentLines(lines: string[]): string[] {
  return indent(lines.join("\n")).split("\n");
}

/** A server block: its parts in order, a blank line between two parts. */
export function serverBlock(parts: string[][]): string[] {
  return ["server {", ...indentLines(parts.flatMap((p, i) => (i ? ["", ...p] : p))), "}"];
}
