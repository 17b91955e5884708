#!/usr/bin/env bash
# container-prune.sh [KEEP]
#
# Removes app images of old releases, keeping the KEEP (default 4: the live
# release and the three before it) most recently loaded or pulled releases in
# $FASTAPI_EDGE_STATE/container-releases, so a rollback to any of them only
# re-tags and restarts (nothing to ship). For each older release: untag
# IMAGE_REPO:RELEASE, and remove its image when no kept release uses the same
# image and no container uses it (podman refuses to remove an image in use; that
# is reported and skipped). Run it after a successful rollout.
# Idempotent: a second run finds nothing to remove.
#
# Environment: PODMAN, FASTAPI_EDGE_STATE, IMAGE_REPO. Exit: 0 ok, 1 failure, 64 usage.
set -euo pipefail

# shellcheck source=files/scripts/container-lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/container-lib.sh"

log() { echo "container-prune.sh: $*" >&2; }
usage() {
  echo "usage: container-prune.sh [KEEP]" >&2
  exit 64
}

(( $# <= 1 )) || usage
keep=${1:-4}
[[ $keep =~ ^[0-9]+$ ]] || usage
(( keep >= 1 )) || usage
[[ -f $RELEASES_FILE ]] || { log "no release record ($RELEASES_FILE); nothing to prune"; exit 0; }

take_lock

mapfile -t lines <"$RELEASES_FILE"
total=${#lines[@]}
(( total > keep )) || { log "$total release(s) recorded, keeping up to $keep; nothing to prune"; exit 0; }

declare -A kept_ids=()
for line in "${lines[@]:total-keep}"; do
  read -r _ id <<<"$line"
  kept_ids[$id]=1
done

still=()
for line in "${lines[@]:0:total-keep}"; do
  read -r rel id <<<"$line"
  if ! "${podman[@]}" image exists "$IMAGE_REPO:$rel"; then
    log "release $rel: tag already gone"
  elif [[ $("${podman[@]}" image inspect --format '{{.Id}}' "$IMAGE_REPO:$rel") == "$id" ]]; then
    "${podman[@]}" untag "$id" "$IMAGE_REPO:$rel" >/dev/null 2>&1 || true
    log "release $rel: untagged $IMAGE_REPO:$rel"
  fi
  if [[ -z ${kept_ids[$id]:-} ]] && "${podman[@]}" image exists "$id"; then
    if out=$("${podman[@]}" rmi "$id" 2>&1); then
      log "release $rel: removed image sha256:$id"
    else
      log "release $rel: image sha256:$id kept: ${out//$'\n'/ }"
      still+=("$line")
      continue
    fi
  fi
done

# Releases whose image could not go stay recorded (tried again next time), oldest first.
tmp=$(mktemp "$STATE_DIR/.container-releases.XXXXXX")
printf '%s\n' "${still[@]}" "${lines[@]:total-keep}" >"$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$RELEASES_FILE"
