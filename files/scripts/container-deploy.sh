#!/usr/bin/env bash
# container-deploy.sh --release ID --upload DIR (--archive FILE --image-id ID --sha256 HEX | --pull REF [--image-id ID])
#                     [--health-path PATH] [--expect-version V] [--settle-seconds N]
#                     [--health-timeout SECONDS] PORT...
#
# The app-deploy step of appRuntime container: make the image of release ID live
# and roll the app containers (fastapi-edge-container@PORT) onto it.
#   0. Install the release directory DIR (appSource, uploaded) once as
#      $BASE/releases/ID: nginx serves appStaticDir from it, in this runtime too.
#   1. The podman network the containers run on (container-network.sh, once).
#   2. The image: container-load.sh checks the shipped archive (its sha256, then
#      its image id) before podman sees it; or container-pull.sh pulls REF (pinned
#      by digest), reading the registry password from this script's stdin when
#      REGISTRY_USERNAME is set. Either tags localhost/fastapi-edge-app:ID.
#      A release already loaded is only re-checked. Any failure exits 1 here,
#      before anything live changes.
#   3. The containers' environment: /etc/fastapi-edge/container.env.candidate
#      (written by the step) plus IMAGE=localhost/fastapi-edge-app:ID becomes
#      /etc/fastapi-edge/container.env with one rename, only now: a container that
#      crashes and restarts before this point still finds the image it ran.
#   4. Roll: app-rollout.sh with UNIT_TEMPLATE=fastapi-edge-container, one port at
#      a time, each back only when healthy; an uvicorn unit of the host runtime on
#      the same port is stopped right before (REPLACES_TEMPLATE), so a change of
#      runtime rolls like a release.
#   5. Point $BASE/app at the release (the static files follow the containers),
#      record ID as the live release ($FASTAPI_EDGE_STATE/container-live), remove
#      the uploaded archive, and keep the images of the 4 newest releases
#      (container-prune.sh): a rollback to one of them loads nothing new.
# Idempotent: a re-run loads nothing and only rolls the containers again.
#
# Environment: FASTAPI_EDGE_STATE (default /var/lib/fastapi-edge), ETC_DIR (default
# /etc/fastapi-edge), REGISTRY_USERNAME, and what the scripts it runs read.
# Exit: 0 live and healthy; 1 failure; 64 usage.
set -euo pipefail

here=$(dirname -- "${BASH_SOURCE[0]}")
STATE_DIR=${FASTAPI_EDGE_STATE:-/var/lib/fastapi-edge}
ETC_DIR=${ETC_DIR:-/etc/fastapi-edge}
IMAGE_REPO=${IMAGE_REPO:-localhost/fastapi-edge-app}
KEEP=4
# shellcheck source=files/scripts/release-lib.sh
. "$here/release-lib.sh"

die() {
  echo "container-deploy.sh: error: $*" >&2
  exit 1
}
usage() {
  echo "usage: container-deploy.sh --release ID --upload DIR (--archive FILE --image-id ID --sha256 HEX | --pull REF [--image-id ID]) [--health-path PATH] [--expect-version V] [--settle-seconds N] [--health-timeout SECONDS] PORT..." >&2
  exit 64
}
need_arg() { (($1 >= 2)) || usage; }

release='' upload='' archive='' image_id='' sha='' ref='' health_path=/healthz expect_version='' settle=0 health_timeout=60
while (($# > 0)); do
  case $1 in
    --release) need_arg $#; release=$2; shift 2 ;;
    --upload) need_arg $#; upload=$2; shift 2 ;;
    --archive) need_arg $#; archive=$2; shift 2 ;;
    --image-id) need_arg $#; image_id=$2; shift 2 ;;
    --sha256) need_arg $#; sha=$2; shift 2 ;;
    --pull) need_arg $#; ref=$2; shift 2 ;;
    --health-path) need_arg $#; health_path=$2; shift 2 ;;
    --expect-version) need_arg $#; expect_version=$2; shift 2 ;;
    --settle-seconds) need_arg $#; settle=$2; shift 2 ;;
    --health-timeout) need_arg $#; health_timeout=$2; shift 2 ;;
    --) shift; break ;;
    -*) usage ;;
    *) break ;;
  esac
done
(($# >= 1)) || usage
[[ $release =~ ^[0-9a-f]{16}$ ]] || { echo "container-deploy.sh: error: --release must be 16 hex digits (got '$release')" >&2; usage; }
if [[ -n $ref ]]; then
  [[ -z $archive && -z $sha ]] || { echo "container-deploy.sh: error: --pull excludes --archive and --sha256" >&2; usage; }
else
  [[ $archive == /* && -n $image_id && -n $sha ]] || { echo "container-deploy.sh: error: --archive (absolute), --image-id and --sha256 go together" >&2; usage; }
fi
[[ $upload == /* ]] || { echo "container-deploy.sh: error: --upload must be an absolute path" >&2; usage; }
[[ $settle =~ ^[0-9]+$ ]] || { echo "container-deploy.sh: error: --settle-seconds must be a whole number" >&2; usage; }
[[ $health_timeout =~ ^[1-9][0-9]*$ ]] || { echo "container-deploy.sh: error: --health-timeout must be a whole number of seconds" >&2; usage; }
candidate=$ETC_DIR/container.env.candidate
[[ -f $candidate ]] || die "$candidate is missing: the step writes it before running this script"

# 0. the release directory (static files)
install_release "$release" "$upload" || exit 1
rm -rf -- "$upload"

# 1. network
"$here/container-network.sh" >/dev/null

# 2. image
if [[ -n $ref ]]; then
  "$here/container-pull.sh" "$ref" "$release" ${image_id:+"$image_id"} >/dev/null
elif [[ ! -f $archive ]] && tagged=$(podman image inspect --format '{{.Id}}' "$IMAGE_REPO:$release" 2>/dev/null); then
  # A re-run after the archive was removed: the image is loaded and tagged already;
  # the tag must still be the image --image-id names (nothing else checks it then).
  [[ sha256:$tagged == "sha256:${image_id#sha256:}" ]] ||
    die "$IMAGE_REPO:$release is image sha256:$tagged, not sha256:${image_id#sha256:}, and the archive $archive is gone: upload it again (pulumi up --target-replace with the URN of the app-image-upload resource)"
  echo "container-deploy.sh: release $release already loaded"
else
  [[ -f $archive ]] || die "release $release is not loaded and its archive $archive is gone: upload it again (pulumi up --target-replace with the URN of the app-image-upload resource)"
  "$here/container-load.sh" --sha256 "$sha" "$archive" "$image_id" "$release" >/dev/null
  echo "container-deploy.sh: release $release loaded (${image_id})"
fi

# 3. the containers' environment, switched in one rename
tmp=$(mktemp "$ETC_DIR/.container.env.XXXXXX")
grep -v '^IMAGE=' "$candidate" >"$tmp" || true
printf 'IMAGE=%s:%s\n' "$IMAGE_REPO" "$release" >>"$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$ETC_DIR/container.env"
rm -f "$candidate"

# 4. roll
UNIT_TEMPLATE=fastapi-edge-container REPLACES_TEMPLATE=fastapi-edge-app \
  HEALTH_PATH=$health_path EXPECT_VERSION=$expect_version SETTLE_SECONDS=$settle HEALTH_TIMEOUT=$health_timeout \
  "$here/app-rollout.sh" "$@"

# 5. switch the static files, record, tidy, prune
switch_release "$release"
prune_releases "$release" 3
install -d -m 0755 "$STATE_DIR"
printf '%s\n' "$release" >"$STATE_DIR/container-live.tmp"
mv -f "$STATE_DIR/container-live.tmp" "$STATE_DIR/container-live"
if [[ -n $archive ]]; then
  rm -f -- "$archive"
  rmdir -- "${archive%/*}" 2>/dev/null || true
fi
sweep_uploads "$release" "$upload" ${archive:+"${archive%/*}"}
"$here/container-prune.sh" "$KEEP"
