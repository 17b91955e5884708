#!/usr/bin/env bash
# Proves the local VPS harness end to end (see docs/local-vps.md) and prints the timings:
#   image (built if missing/stale) -> fresh guest -> systemd up -> apt-get install nginx certbot
#   python3-fastapi python3-uvicorn -> Pebble on the host -> certbot --webroot in the guest gets a
#   certificate over HTTP-01 -> chain verified against Pebble's root -> stop -> a new fresh guest
#   is blank again -> everything stopped.
# stdout: SMOKE_* KEY=VALUE lines; progress on stderr. Exit status 0 only if every check passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vps=$here/vps.sh
pebble=$here/pebble.sh
readonly DOMAIN=api.example.test

log() { printf 'smoke: %s\n' "$*" >&2; }
die() { printf 'smoke: FAILED: %s\n' "$*" >&2; exit 1; }
since() { awk -v a="$1" -v b="${EPOCHREALTIME/,/.}" 'BEGIN { printf "%.1f", b - a }'; }
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }

# Reads KEY=VALUE lines into shell variables, without eval.
load_env() {
  local k v
  while IFS='=' read -r k v; do
    [[ $k =~ ^[A-Z_][A-Z0-9_]*$ ]] && printf -v "$k" '%s' "$v"
  done <<<"$1"
}

cleanup() {
  "$pebble" stop || true
  "$vps" stop || true
}
trap cleanup EXIT

in_guest() { "$vps" ssh -- "$@"; }

load_start=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)
log "image"
load_env "$("$vps" image)"

log "starting a fresh guest"
load_env "$("$vps" start)"
boot1=$VPS_BOOT_SECONDS
state=$(in_guest systemctl is-system-running --wait || true)
[[ $state == running || $state == degraded ]] || die "systemctl is-system-running said '$state'"
log "guest systemd state: $state"
blank=$(in_guest "dpkg-query -W -f '\${db:Status-Status} \${Package}\n' nginx certbot python3-fastapi 2>/dev/null | grep '^installed' || true")
[[ -z $blank ]] || die "the fresh guest is not blank: $blank"

log "apt-get install in the guest"
t0=$(now)
in_guest 'export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q nginx certbot python3-fastapi python3-uvicorn' >&2
apt_seconds=$(since "$t0")
in_guest systemctl is-active --quiet nginx || die "nginx is not active after install"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$VPS_HTTP_PORT/")
[[ $code == 200 ]] || die "nginx through 127.0.0.1:$VPS_HTTP_PORT answered $code"

log "Pebble on the host"
load_env "$("$pebble" start)"
in_guest 'cat > /root/acme-ca.pem' <"$ACME_CA_BUNDLE"
in_guest "python3 -c 'import json, ssl, urllib.request; ctx = ssl.create_default_context(cafile=\"/root/acme-ca.pem\"); json.load(urllib.request.urlopen(\"$ACME_DIRECTORY_URL_FOR_GUEST\", context=ctx))[\"newOrder\"]'" \
  || die "the guest cannot reach $ACME_DIRECTORY_URL_FOR_GUEST"

log "certbot in the guest"
t0=$(now)
in_guest "REQUESTS_CA_BUNDLE=/root/acme-ca.pem certbot certonly --webroot -w /var/www/html -d $DOMAIN \
  --server $ACME_DIRECTORY_URL_FOR_GUEST --agree-tos -m ops@example.test --non-interactive --no-eff-email" >&2
certbot_seconds=$(since "$t0")
curl -sf --cacert "$ACME_CA_BUNDLE" "$PEBBLE_ROOT_URL" | in_guest 'cat > /root/pebble-root.pem'
in_guest "openssl verify -CAfile /root/pebble-root.pem -untrusted /etc/letsencrypt/live/$DOMAIN/chain.pem /etc/letsencrypt/live/$DOMAIN/cert.pem" >&2 \
  || die "the issued chain does not verify against Pebble's root"

log "stopping, then a fresh guest must be blank"
"$pebble" stop
"$vps" stop
load_env "$("$vps" start)"
boot2=$VPS_BOOT_SECONDS
left=$(in_guest "dpkg-query -W -f '\${db:Status-Status} \${Package}\n' nginx certbot python3-fastapi python3-uvicorn 2>/dev/null | grep '^installed'; ls -d /etc/letsencrypt /root/acme-ca.pem 2>/dev/null" || true)
[[ -z $left ]] || die "the new guest is not fresh: $left"
"$vps" stop

printf '%s\n' \
  "SMOKE_IMAGE_BUILT=$VPS_IMAGE_BUILT" \
  "SMOKE_IMAGE_BUILD_SECONDS=$VPS_IMAGE_BUILD_SECONDS" \
  "SMOKE_BOOT_TO_SSH_SECONDS=$boot1" \
  "SMOKE_GUEST_STATE=$state" \
  "SMOKE_APT_INSTALL_SECONDS=$apt_seconds" \
  "SMOKE_CERTBOT_SECONDS=$certbot_seconds" \
  "SMOKE_FRESH_BOOT_TO_SSH_SECONDS=$boot2" \
  "SMOKE_HOST_LOADAVG_START=$load_start" \
  "SMOKE_HOST_LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)" \
  "SMOKE_RESULT=ok"
