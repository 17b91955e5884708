#!/usr/bin/env bash
# The main job: `pulumi up` of a stack (default dev) on a local file backend.
#   bash scripts/up.sh [STACK] [extra pulumi up flags...]
# Installs npm dependencies when missing, gets the Pulumi engine (on PATH, or
# built from Go modules and cached), selects or creates the stack, runs up.
set -euo pipefail
cd "$(dirname "$0")/.."
stack="${1:-dev}"
shift || true
[ -d node_modules ] || npm ci --no-audit --no-fund
# shellcheck source=scripts/pulumi-env.sh
. scripts/pulumi-env.sh
pulumi stack select --create "$stack" >/dev/null
pulumi up --stack "$stack" --yes "$@"
