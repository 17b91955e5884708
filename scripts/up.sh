#!/usr/bin/env bash
# The main job: a real `pulumi up` of a stack on a local file backend.
#   bash scripts/up.sh                 the `local` stack: a Debian VM under QEMU on this machine,
#                                      Pebble as the ACME server; no cloud account needed
#   bash scripts/up.sh dev|staging|prod [pulumi up flags...]   an AWS stack (needs credentials)
# Installs the npm packages when missing and the Pulumi engine (scripts/get-pulumi.sh), selects
# or creates the stack, runs `pulumi up`. `bash scripts/down.sh` undoes the local stack.
set -euo pipefail
cd "$(dirname "$0")/.."
stack="${1:-local}"
shift || true
[ -d node_modules ] || npm ci --no-audit --no-fund
# shellcheck source=scripts/pulumi-env.sh
. scripts/pulumi-env.sh
pulumi stack select --create "$stack" >/dev/null

if [ "$stack" = local ]; then
  # shellcheck source=scripts/local-stack.sh
  . scripts/local-stack.sh
  local_start
  local_configure "$stack"
  # A blank guest disk (first run, or `test/e2e/vps.sh clean`) while the state remembers a
  # deployment: destroy that state first (delete scripts tolerate a blank host).
  if [ "${VPS_DISK_NEW:-0}" = 1 ] && [ "$(pulumi stack --stack "$stack" export | jq '.deployment.resources // [] | length')" -gt 0 ]; then
    echo "local: the VM's disk is new but the stack remembers a deployment: destroying that first" >&2
    pulumi destroy --stack "$stack" --yes --skip-preview
  fi
fi

pulumi up --stack "$stack" --yes "$@"

if [ "$stack" = local ]; then
  url="https://${LOCAL_DOMAIN}:${VPS_HTTPS_PORT}/"
  cat <<MSG

The site: ${url}
Fetch it over HTTPS, trusting Pebble's root (the name resolves to 127.0.0.1 for this command):
  curl --cacert ${PEBBLE_ROOTS} --resolve ${LOCAL_DOMAIN}:${VPS_HTTPS_PORT}:127.0.0.1 ${url}
In a browser: add "127.0.0.1 ${LOCAL_DOMAIN}" to /etc/hosts and trust ${PEBBLE_ROOTS}.
Run this command again: nothing changes. Undo everything: bash scripts/down.sh
MSG
fi
