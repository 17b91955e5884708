#!/usr/bin/env bash
# Source this: the `local` stack's machine, a Debian guest under QEMU with a persistent disk,
# and its ACME server, Pebble, both on 127.0.0.1 only. Used by scripts/up.sh and scripts/down.sh.
# Ports and run directories differ from the e2e test's, so both can run at once.
#   LOCAL_SSH_PORT (2322)  LOCAL_HTTP_PORT (8180)  LOCAL_HTTPS_PORT (8543)
#   LOCAL_DOMAIN (local.fastapi-edge.test)
# shellcheck disable=SC2034 # read by the scripts that source this file
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_DOMAIN="${LOCAL_DOMAIN:-local.fastapi-edge.test}"
local_cache="$(realpath -m "${FASTAPI_EDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastapi-edge}")"
export VPS_SSH_PORT="${LOCAL_SSH_PORT:-2322}"
export VPS_HTTP_PORT="${LOCAL_HTTP_PORT:-8180}"
export VPS_HTTPS_PORT="${LOCAL_HTTPS_PORT:-8543}"
export VPS_ACME_HTTP_PORT="${LOCAL_ACME_HTTP_PORT:-5102}"
export VPS_RUN_DIR="$local_cache/run/local-vps"
export PEBBLE_RUN_DIR="$local_cache/run/local-pebble"
export PEBBLE_PORT=14100 PEBBLE_MGMT_PORT=15100 PEBBLE_TLS_PORT=5101
export PEBBLE_DNS_PORT=8153 PEBBLE_CHALLTESTSRV_PORT=8155

# local_kv SCRIPT ARGS...: run a harness script, keep its KEY=VALUE lines as shell variables.
local_kv() {
  local out line
  out="$("$@")" || return 1
  while IFS= read -r line; do
    [[ $line =~ ^[A-Z_][A-Z0-9_]*=[^[:space:]]*$ ]] && printf -v "${line%%=*}" '%s' "${line#*=}"
  done <<<"$out"
}

# local_start: the guest (reused when running, else booted from its kept disk) and Pebble.
local_start() {
  echo "local: starting (or reusing) the Debian VM and Pebble; the first run builds the VM image (about 3 min)" >&2
  local_kv bash "$repo/test/e2e/vps.sh" up
  local_kv bash "$repo/test/e2e/pebble.sh" start
}

# local_configure STACK: the settings that depend on this machine (SSH key, host key, CA).
# The other settings are written once: later `pulumi config set` changes persist.
local_configure() {
  local stack="$1" host_key
  host_key="$(cut -d' ' -f1-2 "$VPS_HOST_KEY_FILE")"
  if ! pulumi config get --stack "$stack" domain >/dev/null 2>&1; then
    pulumi config set --stack "$stack" domain "$LOCAL_DOMAIN"
    pulumi config set --stack "$stack" email ops@example.test
    pulumi config set --stack "$stack" hostMode existing
    pulumi config set --stack "$stack" hostAddress 127.0.0.1
    pulumi config set --stack "$stack" hostUser root
    pulumi config set --stack "$stack" acme custom
    pulumi config set --stack "$stack" appProcesses 2
    # Software emulation: an app process can take a minute or more to start.
    pulumi config set --stack "$stack" appStartTimeout 300
  fi
  pulumi config set --stack "$stack" hostOs "$VPS_HOST_OS"
  pulumi config set --stack "$stack" hostPort "$VPS_SSH_PORT"
  pulumi config set --stack "$stack" hostKey "$host_key"
  pulumi config set --stack "$stack" acmeDirectoryUrl "$ACME_DIRECTORY_URL_FOR_GUEST"
  pulumi config set --stack "$stack" acmeCaBundle "$ACME_CA_BUNDLE"
  if [[ "$(pulumi config get --stack "$stack" hostPrivateKey 2>/dev/null)" != "$(cat "$VPS_KEY")" ]]; then
    pulumi config set --stack "$stack" --secret hostPrivateKey <"$VPS_KEY"
  fi
}

# local_stop: power the guest off (its disk is deleted) and stop Pebble.
local_stop() {
  bash "$repo/test/e2e/vps.sh" stop
  bash "$repo/test/e2e/pebble.sh" stop
}
