#!/usr/bin/env bash
# container-load.sh [--sha256 HEX] ARCHIVE IMAGE_ID RELEASE
#
# Loads the app image shipped as ARCHIVE (a docker-archive tar: `podman save
# --format docker-archive` / `docker save`, as scripts/build-app-image.sh
# writes) into the host's podman storage, only if it is the image that was
# built, and tags it IMAGE_REPO:RELEASE (default localhost/fastapi-edge-app):
#   1. With --sha256: the archive file's sha256 must be HEX (transfer check).
#   2. Before loading anything: the archive must hold exactly one image whose
#      config blob hashes to IMAGE_ID (the image id is the config's sha256, and
#      the config lists every layer's digest, which `podman load` checks). A
#      mismatch exits 1 naming both ids, and the storage and tags are untouched
#      (a tampered archive cannot even move a tag).
#   3. `podman load` (skipped when IMAGE_ID is already in storage), then the
#      loaded image's id is checked again.
#   4. Tag IMAGE_REPO:RELEASE -> IMAGE_ID, record the release in
#      $FASTAPI_EDGE_STATE/container-releases (container-prune.sh keeps the
#      newest ones). The archive is left in place (the caller removes it).
# Idempotent: a re-run with the image loaded only re-checks the archive and tags.
#
# stdout: IMAGE=IMAGE_REPO:RELEASE and IMAGE_ID=sha256:HEX.
# Environment: PODMAN (default podman), FASTAPI_EDGE_STATE (default
# /var/lib/fastapi-edge), IMAGE_REPO. Exit: 0 loaded, 1 failure/mismatch, 64 usage.
set -euo pipefail

# shellcheck source=files/scripts/container-lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/container-lib.sh"

die() {
  echo "container-load.sh: error: $*" >&2
  exit 1
}
usage() {
  echo "usage: container-load.sh [--sha256 HEX] ARCHIVE IMAGE_ID RELEASE" >&2
  exit 64
}
log() { echo "container-load.sh: $*" >&2; }

want_sha=
if [[ ${1:-} == --sha256 ]]; then
  (( $# >= 2 )) || usage
  want_sha=$2
  shift 2
  [[ $want_sha =~ ^[0-9a-f]{64}$ ]] || { echo "container-load.sh: --sha256 needs 64 lowercase hex digits" >&2; usage; }
fi
(( $# == 3 )) || usage
archive=$1
id=$(normalize_id "$2") || { echo "container-load.sh: IMAGE_ID must be sha256:<64 hex>, got '$2'" >&2; usage; }
release=$3
valid_release "$release" || { echo "container-load.sh: RELEASE must be an image tag, got '$release'" >&2; usage; }
[[ -f $archive && -r $archive ]] || die "archive $archive is not a readable file"
command -v "${podman[0]}" >/dev/null 2>&1 || die "podman not found (install the podman package)"

# 1. transfer check
if [[ -n $want_sha ]]; then
  got=$(sha256sum -- "$archive")
  got=${got%% *}
  [[ $got == "$want_sha" ]] || die "archive $archive has sha256 $got, expected $want_sha (damaged or replaced in transfer); nothing loaded"
fi

# 2. which image the archive holds, before podman sees it
# Member names may carry a leading ./ (an archive repacked with tar -C DIR .).
# awk reads the whole listing (an early exit would kill tar with SIGPIPE under pipefail).
member() { tar -tf "$archive" | awk -v re="^(\\./)?$1\$" '!f && $0 ~ re { print; f = 1 } END { exit !f }'; }
mname=$(member 'manifest\.json') ||
  die "$archive is not a docker-archive (no manifest.json); save it with 'podman save --format docker-archive'"
manifest=$(tar -xOf "$archive" -- "$mname")
mapfile -t configs < <(grep -oE '"Config"[[:space:]]*:[[:space:]]*"[^"]+"' <<<"$manifest" | sed -E 's/.*"([^"]+)"$/\1/')
(( ${#configs[@]} == 1 )) || die "$archive holds ${#configs[@]} images, expected exactly one"
config=${configs[0]}
[[ $config =~ ^[A-Za-z0-9/._-]+$ && $config != *..* ]] || die "$archive names an unexpected config blob '$config'"
cname=$(member "${config//./\\.}") || die "$archive lacks its config blob $config"
got=$(tar -xOf "$archive" -- "$cname" | sha256sum)
got=${got%% *}
[[ $got == "$id" ]] ||
  die "image id mismatch: $archive holds image sha256:$got, expected sha256:$id (tampered, or not the archive that was built); nothing loaded, no tag changed"

take_lock

# 3. load (podman load checks each layer against the config's digests)
if "${podman[@]}" image exists "$id"; then
  log "image sha256:$id already in storage; not loading"
else
  log "loading $archive"
  start=$SECONDS
  out=$("${podman[@]}" load --input "$archive" 2>&1) || die "podman load failed: $out"
  log "loaded in $((SECONDS - start))s: ${out//$'\n'/ | }"
fi
loaded=$("${podman[@]}" image inspect --format '{{.Id}}' "$id" 2>/dev/null) ||
  die "image sha256:$id is not in storage after loading $archive"
[[ $loaded == "$id" ]] || die "podman reports id $loaded for sha256:$id"

# 4. tag and record
tag_release "$release" "$id" || die "podman tag $id $IMAGE_REPO:$release failed"
record_release "$release" "$id"
log "$IMAGE_REPO:$release -> sha256:$id"
printf 'IMAGE=%s:%s\nIMAGE_ID=sha256:%s\n' "$IMAGE_REPO" "$release" "$id"
