// Version strings as comparable numbers (nginx, OpenSSL: major.minor[.patch]).
// No imports: config validation and the renderer both use it.

/** A version as comparable [major, minor, patch]. */
export function parseVersion(v: string): [number, number, number] {
  const [a = 0, b = 0, c = 0] = v.split(".").map(Number);
  return [a, b, c];
}

export function versionAtLeast(v: string, min: string): boolean {
  const x = parseVersion(v);
  const y = parseVersion(min);
  for (let i = 0; i < 3; i++) if (x[i]! !== y[i]!) return x[i]! > y[i]!;
  return true;
}
