// Stack outputs that do not apply to a stack's mode (loadBalancerDnsName in nginx mode,
// sshPrivateKey when a key was given) are undefined. The engine warns about every undefined
// top-level output on every run ("Undefined value (X) will not show as a stack output"), so
// they are removed from the program's CommonJS exports instead.

/** Deletes KEYS whose value is undefined from a module's exports object. */
export function omitUndefinedOutputs(moduleExports: Record<string, unknown>, keys: readonly string[]): void {
  for (const key of keys) if (moduleExports[key] === undefined) delete moduleExports[key];
}
