#!/usr/bin/env bash
# ensure-user.sh [NAME] — create the system user the app runs as (default
# fastapi-edge) with a same-named group, no home and no login shell.
# Idempotent: exits 0 without changes when the user already exists.
# Exit: 0 ok, 1 failure, 64 usage error.
set -euo pipefail

die() {
  local code=$1
  shift
  echo "ensure-user.sh: error: $*" >&2
  exit "$code"
}

(( $# <= 1 )) || die 64 "usage: ensure-user.sh [NAME]"
name=${1:-fastapi-edge}
[[ $name =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die 64 "invalid user name '$name'"

if getent passwd "$name" >/dev/null; then
  echo "ensure-user.sh: user $name already exists"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die 1 "must run as root to create user $name"

nologin=/usr/sbin/nologin
[[ -x $nologin ]] || nologin=/sbin/nologin

args=(--system --no-create-home --home-dir /nonexistent --shell "$nologin")
if getent group "$name" >/dev/null; then
  args+=(--gid "$name")
else
  args+=(--user-group)
fi
useradd "${args[@]}" "$name" || die 1 "useradd failed for $name"
echo "ensure-user.sh: created system user $name"
