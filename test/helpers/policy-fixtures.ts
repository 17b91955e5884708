// Shared fixtures for the policy pack's tests: realistic key material (assembled so no
// scanner mistakes these files for a leak) and the engine's unknown sentinel.
import * as path from "node:path";
import * as rules from "../../policy/rules";

export const ROOT = path.resolve(__dirname, "../..");
export const POLICY_DIR = path.join(ROOT, "policy");

const PEM_HEAD = ["-----BEGIN", "RSA PRIVATE KEY-----"].join(" ");
const PEM_TAIL = ["-----END", "RSA PRIVATE KEY-----"].join(" ");
export const RSA_PEM = `${PEM_HEAD}\nMIIEowIBAAKCAQEAtestonlytestonlytestonlytestonly\n${PEM_TAIL}\n`;
export const OPENSSH_PEM = `${["-----BEGIN", "OPENSSH PRIVATE KEY-----"].join(" ")}\nb3BlbnNzaC1rZXktdjEAAAAA\n${["-----END", "OPENSSH PRIVATE KEY-----"].join(" ")}\n`;
export const SSH_PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestOnlyTestOnlyTestOnly ops@example";
export const UNKNOWN_STRING = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
export const T = rules.TYPES;
