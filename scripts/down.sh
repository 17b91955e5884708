#!/usr/bin/env bash
# Undo the main job: `pulumi destroy` of the local stack, then stop its VM (deleting its disk)
# and Pebble. For an AWS stack (bash scripts/down.sh staging) it runs `pulumi destroy` only.
set -euo pipefail
cd "$(dirname "$0")/.."
stack="${1:-local}"
# shellcheck source=scripts/pulumi-env.sh
. scripts/pulumi-env.sh
if [ "$stack" = local ]; then
  # shellcheck source=scripts/local-stack.sh
  . scripts/local-stack.sh
  # The delete scripts run on the guest: it must be up (and Pebble is harmless to start).
  if pulumi stack select "$stack" 2>/dev/null; then
    local_start
    pulumi destroy --stack "$stack" --yes
  fi
  local_stop
  echo "local: stack destroyed, VM and Pebble stopped" >&2
else
  pulumi destroy --stack "$stack" --yes
fi
