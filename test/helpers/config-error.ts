// What parseConfig throws for RAW (a ConfigError when it refuses it), or undefined when
// it accepts RAW: for tests that assert on the refusal's text.
import { parseConfig } from "../../lib/config";

export function configErrorOf(raw: Record<string, string>): unknown {
  try {
    parseConfig(raw);
  } catch (e) {
    return e;
  }
  return undefined;
}
