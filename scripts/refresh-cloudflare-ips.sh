#!/usr/bin/env bash
# refresh-cloudflare-ips.sh — refresh files/cdn/cloudflare-ips-v4.txt and -v6.txt
# from the lists Cloudflare publishes, after checking every line.
#
# Usage:
#   bash scripts/refresh-cloudflare-ips.sh           download, validate, rewrite what changed
#   bash scripts/refresh-cloudflare-ips.sh --check   download and validate only; exit 3 when
#                                                    the shipped files differ (for CI)
#
# Each list must be a plain list of CIDR blocks of its family (IPv4 for ips-v4,
# IPv6 for ips-v6), host bits zero, each a public (globally routed) block no
# wider than /8 (IPv4) or /12 (IPv6), no duplicates, between 3 and 100 blocks,
# at most 64 KiB. Anything else (an HTML error page, an empty body, a /0, a
# private range) is refused and NO file is written: both lists are validated
# before either is replaced, and each file is replaced atomically. A list whose
# blocks did not change is left as it is (its Retrieved date too).
#
# After a change: `pulumi preview --diff` shows the set_real_ip_from lines (and,
# with restrictHttpToCdn, the security group rules) that change; `pulumi up`
# pushes them.
#
# Environment (defaults in brackets):
#   CLOUDFLARE_IPS_V4_URL  [https://www.cloudflare.com/ips-v4]
#   CLOUDFLARE_IPS_V6_URL  [https://www.cloudflare.com/ips-v6]
#   CLOUDFLARE_IPS_DIR     [files/cdn beside this script's directory]
# The URLs may be https://, http:// or file:// (curl fetches them).
#
# Needs curl and python3 (its ipaddress module does the validation).
# Exit: 0 done, 1 refused or download failed (files unchanged), 3 --check found
# a difference, 64 usage.
set -euo pipefail

V4_URL=${CLOUDFLARE_IPS_V4_URL:-https://www.cloudflare.com/ips-v4}
V6_URL=${CLOUDFLARE_IPS_V6_URL:-https://www.cloudflare.com/ips-v6}
DIR=${CLOUDFLARE_IPS_DIR:-$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)/files/cdn}
MAX_BYTES=65536

die() {
  echo "refresh-cloudflare-ips: error: $*" >&2
  exit 1
}

check_only=0
case ${1:-} in
  "") ;;
  --check) check_only=1 ;;
  *)
    echo "usage: refresh-cloudflare-ips.sh [--check]" >&2
    exit 64
    ;;
esac
(($# <= 1)) || {
  echo "usage: refresh-cloudflare-ips.sh [--check]" >&2
  exit 64
}

command -v curl >/dev/null 2>&1 || die "curl is required"
command -v python3 >/dev/null 2>&1 || die "python3 is required"
[[ -d $DIR ]] || die "$DIR is not a directory"

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

# fetch URL OUT: the body, or a failure naming the URL.
fetch() {
  local url=$1 out=$2
  if ! curl --fail --silent --show-error --location --proto '=https,http,file' --max-time 30 \
    --max-filesize "$MAX_BYTES" --output "$out" -- "$url"; then
    die "could not download $url (no file changed)"
  fi
  (($(wc -c <"$out") <= MAX_BYTES)) || die "$url: more than $MAX_BYTES bytes (no file changed)"
}

# validate FAMILY SOURCE FILE: print the blocks, one a line, or fail naming the line.
validate() {
  python3 - "$1" "$2" "$3" <<'PY'
import ipaddress
import sys

family, source, path = sys.argv[1], sys.argv[2], sys.argv[3]
version, widest = (4, 8) if family == "v4" else (6, 12)


def refuse(why):
    sys.stderr.write(f"refresh-cloudflare-ips: error: {source}: {why} (no file changed)\n")
    sys.exit(1)


try:
    text = open(path, encoding="ascii").read()
except UnicodeDecodeError:
    refuse("not plain ASCII text")
blocks = []
for n, raw in enumerate(text.splitlines(), 1):
    line = raw.strip()
    if not line:
        continue
    try:
        net = ipaddress.ip_network(line, strict=True)
    except ValueError as e:
        refuse(f"line {n} is not a CIDR block with its host bits zero: {line[:80]!r} ({e})")
    if "/" not in line:
        refuse(f"line {n} has no prefix length: {line!r}")
    if net.version != version:
        refuse(f"line {n} is IPv{net.version}, expected IPv{version}: {line}")
    if net.prefixlen < widest:
        refuse(f"line {n} is wider than /{widest}: {line}")
    if not net.is_global:
        refuse(f"line {n} is not a public range: {line}")
    if str(net) != line:
        refuse(f"line {n} is not in canonical form (expected {net}): {line}")
    if line in blocks:
        refuse(f"line {n} repeats {line}")
    blocks.append(line)
if not 3 <= len(blocks) <= 100:
    refuse(f"{len(blocks)} blocks: expected between 3 and 100")
print("\n".join(blocks))
PY
}

# The blocks of a shipped file (comments and blank lines dropped).
blocks_of() {
  if [[ -f $1 ]]; then grep -v -e '^#' -e '^[[:space:]]*$' -- "$1" || true; fi
}

today=$(date -u +%Y-%m-%d)
declare -A url=([v4]=$V4_URL [v6]=$V6_URL)
for f in v4 v6; do
  fetch "${url[$f]}" "$work/raw-$f"
  validate "$f" "${url[$f]}" "$work/raw-$f" >"$work/new-$f"
done

changed=0
for f in v4 v6; do
  target=$DIR/cloudflare-ips-$f.txt
  if [[ $(blocks_of "$target") == "$(cat -- "$work/new-$f")" ]]; then
    echo "cloudflare-ips-$f.txt: unchanged ($(wc -l <"$work/new-$f") blocks)"
    continue
  fi
  changed=1
  echo "cloudflare-ips-$f.txt: changed"
  diff <(blocks_of "$target" | sort) <(sort -- "$work/new-$f") | sed -n 's/^< /  - /p; s/^> /  + /p' || true
  ((check_only)) && continue
  family=IPv${f#v}
  {
    echo "# Cloudflare's published $family ranges, one CIDR a line."
    echo "# Source: ${url[$f]}"
    echo "# Retrieved: $today (scripts/refresh-cloudflare-ips.sh: every line validated)"
    echo "# Refresh: bash scripts/refresh-cloudflare-ips.sh (downloads, validates, rewrites this file)"
    cat -- "$work/new-$f"
  } >"$work/out-$f"
done

if ((check_only)); then
  ((changed)) && exit 3
  exit 0
fi
# Both lists passed: only now replace the files, each atomically.
for f in v4 v6; do
  [[ -f $work/out-$f ]] || continue
  tmp=$(mktemp "$DIR/.cloudflare-ips-$f.XXXXXX")
  cat -- "$work/out-$f" >"$tmp"
  chmod 0644 "$tmp"
  mv -f -- "$tmp" "$DIR/cloudflare-ips-$f.txt"
done
((changed)) && echo "next: pulumi preview --diff shows the nginx lines (and security group rules) that change; pulumi up pushes them"
exit 0
