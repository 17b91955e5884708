#!/usr/bin/env bash
# app-remove.sh RELEASE: the delete step of the app deploy for RELEASE (a release id).
#
# Pulumi replaces a resource by creating the new one first and deleting the old one after it:
# when a new release replaces RELEASE, this runs once the new release is already live. So it
# removes the app only when RELEASE is still the live one (`pulumi destroy`); otherwise the
# new release, its processes and the kept releases (for rollback) stay as they are.
# Tolerates a half-built or blank host (destroy must not fail on one).
# Exit: 0 ok, 64 usage error.
set -euo pipefail

base=/opt/fastapi-edge
if (($# != 1)) || ! [[ $1 =~ ^[0-9a-f]{16}$ ]]; then
  echo "usage: app-remove.sh RELEASE (16 hex digits)" >&2
  exit 64
fi
release=$1
live=$(readlink "$base/app" 2>/dev/null || true)
if [[ -n $live && $live != "$base/releases/$release" && -d $live ]]; then
  echo "app-remove.sh: release $release is not live (live: ${live##*/}): replaced, nothing removed"
  exit 0
fi

echo "app-remove.sh: removing the app (live release: ${live:-none})"
if command -v systemctl >/dev/null; then
  systemctl list-units --all --plain --no-legend 'fastapi-edge-app@*' | awk '{print $1}' |
    while read -r unit; do systemctl disable --now "$unit" || true; done
fi
rm -f /etc/systemd/system/fastapi-edge-app@.service /etc/fastapi-edge/app.env
rm -rf "$base/app" "$base/releases"
if command -v systemctl >/dev/null; then systemctl daemon-reload || true; fi
