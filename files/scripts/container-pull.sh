#!/usr/bin/env bash
# container-pull.sh REFERENCE RELEASE [IMAGE_ID]
#
# Pulls the app image from a registry and tags it IMAGE_REPO:RELEASE (default
# localhost/fastapi-edge-app), the same end state as container-load.sh:
#   1. With REGISTRY_USERNAME set: the password (or token) is read from stdin,
#      never from the command line or the environment, and given to
#      `podman login --password-stdin` with a throwaway --authfile (mode 0600
#      in a private temp directory, deleted on exit): no credentials stay on the
#      host and none appear in `ps` or the journal.
#   2. `podman pull` with that authfile. The image must be pinned: REFERENCE
#      by digest (NAME@sha256:..., which podman verifies against the manifest)
#      and/or IMAGE_ID (the image's config digest, checked after the pull).
#      Without either the pull is refused (exit 64): a tag can move.
#   3. Tag IMAGE_REPO:RELEASE -> the pulled id, record the release for
#      container-prune.sh.
# Idempotent: an image already present is not downloaded again (podman pull
# --policy missing for a digest reference).
#
# stdout: IMAGE=IMAGE_REPO:RELEASE and IMAGE_ID=sha256:HEX.
# Environment: REGISTRY_USERNAME, REGISTRY_TLS_VERIFY (default true; false
# only for a test registry on 127.0.0.1), PODMAN, FASTAPI_EDGE_STATE, IMAGE_REPO.
# Exit: 0 pulled, 1 failure/mismatch, 64 usage.
set -euo pipefail

# shellcheck source=files/scripts/container-lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/container-lib.sh"

die() {
  echo "container-pull.sh: error: $*" >&2
  exit 1
}
usage() {
  echo "usage: [REGISTRY_USERNAME=USER] container-pull.sh REFERENCE RELEASE [IMAGE_ID] (password on stdin)" >&2
  exit 64
}
log() { echo "container-pull.sh: $*" >&2; }

(( $# == 2 || $# == 3 )) || usage
ref=$1
release=$2
valid_release "$release" || { echo "container-pull.sh: RELEASE must be an image tag, got '$release'" >&2; usage; }
[[ $ref =~ ^[A-Za-z0-9][A-Za-z0-9._:/@-]*$ ]] || { echo "container-pull.sh: invalid REFERENCE '$ref'" >&2; usage; }
registry=${ref%%/*}
# A fully qualified reference: no short names resolved through registries.conf.
[[ $ref == */* && ( $registry == *.* || $registry == *:* || $registry == localhost ) ]] ||
  { echo "container-pull.sh: REFERENCE must name its registry (registry.example.com/app@sha256:...), got '$ref'" >&2; usage; }
want=
if (( $# == 3 )); then
  want=$(normalize_id "$3") || { echo "container-pull.sh: IMAGE_ID must be sha256:<64 hex>, got '$3'" >&2; usage; }
fi
if [[ $ref != *@sha256:* && -z $want ]]; then
  echo "container-pull.sh: unpinned reference '$ref': give NAME@sha256:DIGEST or IMAGE_ID" >&2
  usage
fi
case ${REGISTRY_TLS_VERIFY:-true} in
  true | false) tls=(--tls-verify="${REGISTRY_TLS_VERIFY:-true}") ;;
  *) die "REGISTRY_TLS_VERIFY must be true or false" ;;
esac
command -v "${podman[0]}" >/dev/null 2>&1 || die "podman not found (install the podman package)"

authdir=$(mktemp -d)
trap 'rm -rf -- "$authdir"' EXIT
chmod 0700 "$authdir"
auth=(--authfile "$authdir/auth.json")
# An empty authfile is valid JSON for podman: anonymous pulls need no login.
printf '{}\n' >"$authdir/auth.json"
chmod 0600 "$authdir/auth.json"

if [[ -n ${REGISTRY_USERNAME:-} ]]; then
  IFS= read -r password || [[ -n ${password:-} ]] || die "REGISTRY_USERNAME is set but no password came on stdin"
  [[ -n $password ]] || die "REGISTRY_USERNAME is set but the password on stdin is empty"
  out=$(printf '%s\n' "$password" |
    "${podman[@]}" login "${auth[@]}" "${tls[@]}" --username "$REGISTRY_USERNAME" --password-stdin "$registry" 2>&1) ||
    die "podman login to $registry as $REGISTRY_USERNAME failed: $out"
  unset password
  log "logged in to $registry as $REGISTRY_USERNAME (throwaway authfile)"
fi

take_lock

start=$SECONDS
out=$("${podman[@]}" pull "${auth[@]}" "${tls[@]}" --quiet "$ref" 2>&1) || die "podman pull $ref failed: $out"
got=$(tail -n 1 <<<"$out")
got=$(normalize_id "$got") || die "podman pull $ref printed no image id: $out"
log "pulled $ref in $((SECONDS - start))s: sha256:$got"
if [[ -n $want && $got != "$want" ]]; then
  # The pulled image carries no tag of ours; remove it unless something else uses it.
  "${podman[@]}" rmi "$got" >/dev/null 2>&1 || true
  die "image id mismatch: $ref is sha256:$got, expected sha256:$want; not tagged"
fi

tag_release "$release" "$got" || die "podman tag $got $IMAGE_REPO:$release failed"
record_release "$release" "$got"
log "$IMAGE_REPO:$release -> sha256:$got"
printf 'IMAGE=%s:%s\nIMAGE_ID=sha256:%s\n' "$IMAGE_REPO" "$release" "$got"
