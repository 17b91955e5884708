#!/usr/bin/env bash
# container-remove.sh RELEASE: the delete step of the container deploy for RELEASE.
#
# As app-remove.sh for the uvicorn runtime: Pulumi deletes the old deploy after
# the new one is live, so this removes the app only when RELEASE is still the
# live container release (`pulumi destroy`, or a change back to the host
# runtime after that rollout stopped the containers); otherwise nothing.
# Removes the containers' units, their environment, the app images, the release
# record and the podman network. Tolerates a half-built or blank host.
# Exit: 0 ok, 64 usage error.
set -euo pipefail

STATE_DIR=${FASTAPI_EDGE_STATE:-/var/lib/fastapi-edge}
IMAGE_REPO=${IMAGE_REPO:-localhost/fastapi-edge-app}
if (($# != 1)) || ! [[ $1 =~ ^[0-9a-f]{16}$ ]]; then
  echo "usage: container-remove.sh RELEASE (16 hex digits)" >&2
  exit 64
fi
release=$1
live=$(cat "$STATE_DIR/container-live" 2>/dev/null || true)
if [[ -n $live && $live != "$release" ]]; then
  echo "container-remove.sh: release $release is not live (live: $live): replaced, nothing removed"
  exit 0
fi

echo "container-remove.sh: removing the app containers (live release: ${live:-none})"
if command -v systemctl >/dev/null; then
  systemctl list-units --all --plain --no-legend 'fastapi-edge-container@*' | awk '{print $1}' |
    while read -r unit; do systemctl disable --now "$unit" || true; done
fi
rm -f /etc/systemd/system/fastapi-edge-container@.service /etc/fastapi-edge/container.env /etc/fastapi-edge/container.env.candidate
if command -v podman >/dev/null; then
  podman image ls --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep "^$IMAGE_REPO:" |
    while read -r tag; do podman rmi --force "$tag" >/dev/null 2>&1 || true; done
  podman network rm --force fastapi-edge >/dev/null 2>&1 || true
fi
rm -f "$STATE_DIR/container-live" "$STATE_DIR/container-releases"
# The static files' release directories, unless the uvicorn runtime has taken over the
# link (a change of runtime: its release is live and stays).
base=${FASTAPI_EDGE_BASE:-/opt/fastapi-edge}
app=$(readlink "$base/app" 2>/dev/null || true)
if [[ -z $app || $app == "$base/releases/$release" ]]; then
  rm -rf "$base/app" "$base/releases"
fi
if command -v systemctl >/dev/null; then systemctl daemon-reload || true; fi
