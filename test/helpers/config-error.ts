// What parseConfig throws for RAW (or whatever else it threw, or undefined when it
// accepted RAW), for tests that assert on the refusal's text.
import { parseConfig } from "../../lib/config";

export function configErrorOf(raw: Record<string, string>): unknown {
  try {
    parseConfig(raw);
  } catch (e) {
    return e;
  }
  return undefined;
}
