// TLS key-exchange groups (`ssl_ecdh_curve`), by the OpenSSL the target's
// nginx links against.
//
// OpenSSL 3.5 added the hybrid post-quantum group X25519MLKEM768 (X25519 and
// ML-KEM-768 together: the session is safe while either holds). Mozilla's
// server-side TLS guideline 6.0 puts it first in "intermediate", before the
// classical groups of guideline 5.7, whose order it keeps; OpenSSL 3.0 does
// not know the name and nginx -t fails on it, so older targets keep 5.7's list.
import { versionAtLeast } from "../version";

/** Guideline 6.0 intermediate, for OpenSSL 3.5 and newer. */
export const PQ_GROUPS = ["X25519MLKEM768", "X25519", "prime256v1", "secp384r1"] as const;
/** Guideline 5.7 intermediate (no hybrid group), for older OpenSSL. */
export const CLASSIC_GROUPS = ["X25519", "prime256v1", "secp384r1"] as const;

/** The groups nginx offers, in preference order, for a target OpenSSL version (major.minor). */
export function tlsGroups(opensslVersion: string): readonly string[] {
  return versionAtLeast(opensslVersion, "3.5") ? PQ_GROUPS : CLASSIC_GROUPS;
}

/** The http-level `ssl_ecdh_curve` line with the comment that says why it sits there. */
export function tlsGroupLines(opensslVersion: string): string[] {
  const pq = versionAtLeast(opensslVersion, "3.5");
  return [
    pq
      ? "# Key exchange: hybrid post-quantum X25519MLKEM768 first (OpenSSL 3.5+), then the"
      : "# Key exchange: the classical groups (the target's OpenSSL is older than 3.5, which",
    pq
      ? "# classical groups for clients without it (Mozilla intermediate, guideline 6.0)."
      : "# first has X25519MLKEM768; Mozilla intermediate, guideline 5.7).",
    "# Set at http level: nginx negotiates with the groups of the address's default",
    "# server (the unknown-name one); a list set only in the site's server is ignored.",
    `ssl_ecdh_curve ${tlsGroups(opensslVersion).join(":")};`,
  ];
}
