#!/usr/bin/env bash
# Source this: container-lib.sh, shared by container-load.sh, container-pull.sh and
# container-prune.sh (sourced, not run): the podman command, the release
# record and its lock.
#
# The release record, $FASTAPI_EDGE_STATE/container-releases, has one line
# "RELEASE IMAGE_ID" per release loaded or pulled, the most recently made live
# last (a reload of a kept release moves it to the end). container-prune.sh
# keeps the images of its last N lines.

# shellcheck disable=SC2034 # used by the scripts that source this file
STATE_DIR=${FASTAPI_EDGE_STATE:-/var/lib/fastapi-edge}
RELEASES_FILE=$STATE_DIR/container-releases
IMAGE_REPO=${IMAGE_REPO:-localhost/fastapi-edge-app}
read -r -a podman <<<"${PODMAN:-podman}"

valid_release() { [[ $1 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; }

# "sha256:HEX" or "HEX" -> HEX (64 lowercase hex), else fail.
normalize_id() {
  local id=${1#sha256:}
  [[ $id =~ ^[0-9a-f]{64}$ ]] || return 1
  printf '%s\n' "$id"
}

# Serialize everything that changes tags or the record.
take_lock() {
  mkdir -p "$STATE_DIR"
  exec 8>"$STATE_DIR/.container.lock"
  flock 8
}

# record_release RELEASE HEX: move/append the line to the end.
record_release() {
  local tmp
  tmp=$(mktemp "$STATE_DIR/.container-releases.XXXXXX")
  if [[ -f $RELEASES_FILE ]]; then
    awk -v r="$1" '$1 != r' "$RELEASES_FILE" >"$tmp"
  fi
  printf '%s %s\n' "$1" "$2" >>"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$RELEASES_FILE"
}

# tag_release RELEASE HEX: IMAGE_REPO:RELEASE -> HEX (replacing an older image's tag).
tag_release() {
  "${podman[@]}" tag "$2" "$IMAGE_REPO:$1"
}
