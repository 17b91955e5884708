#!/usr/bin/env bash
# Source this: the environment for running the real Pulumi engine against a local file
# backend. Used by scripts/up.sh and scripts/down.sh (the tests set the same variables).
#   FASTAPI_EDGE_BACKEND      backend URL (default: file://<repo>/.pulumi-state)
#   PULUMI_CONFIG_PASSPHRASE  stack secrets passphrase (default: empty, fine for local stacks)
#   PULUMI_HOME               plugin cache (default: ~/.cache/fastapi-edge/pulumi-home)
#   FASTAPI_EDGE_OFFLINE=1    never try to download a plugin
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PULUMI_HOME="${PULUMI_HOME:-${FASTAPI_EDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastapi-edge}/pulumi-home}"
bin="$("$repo/scripts/get-pulumi.sh" | tail -n 1)"
export PATH="$repo/node_modules/.bin:$bin:$PATH"
mkdir -p "$repo/.pulumi-state"
export PULUMI_BACKEND_URL="${FASTAPI_EDGE_BACKEND:-file://$repo/.pulumi-state}"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-}"
export PULUMI_SKIP_UPDATE_CHECK=true
if [ "${FASTAPI_EDGE_OFFLINE:-0}" = 1 ]; then
  export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
fi
