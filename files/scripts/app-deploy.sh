#!/usr/bin/env bash
# app-deploy.sh --release ID --upload DIR [--health-path PATH]
#               [--expect-version V] [--settle-seconds N] PORT...
#
# The app-deploy step: make release ID live and roll the app processes onto it.
#   1. Install the release once: when $BASE/releases/ID is missing, copy DIR
#      (the release as uploaded) to ID.tmp, owned by root, readable by all,
#      writable by root only, and rename it to ID. A leftover ID.tmp from an
#      interrupted run is replaced. When ID is installed, nothing is copied.
#   2. Remove DIR. It is uploaded only when the release changes, so a re-run
#      of the step (a changed setting) finds it gone and needs nothing from it.
#   3. Point $BASE/app at releases/ID with a single rename (atomic).
#   4. Roll the processes one at a time: app-rollout.sh PORT... (next to this
#      script) with HEALTH_PATH, EXPECT_VERSION, SETTLE_SECONDS and HEALTH_TIMEOUT from the
#      options. A failed rollout exits 1 here, before any pruning.
#   5. Keep the three newest releases (by modification time) and the live one.
# Idempotent: a re-run installs nothing and only rolls the processes again.
#
# Environment: FASTAPI_EDGE_BASE (default /opt/fastapi-edge; tests), and
# whatever app-rollout.sh reads (SYSTEMCTL, HEALTH_TIMEOUT, ...).
# Exit: 0 live and healthy; 1 failure; 64 usage.
set -euo pipefail
shopt -s nullglob

BASE=${FASTAPI_EDGE_BASE:-/opt/fastapi-edge}
BASE=${BASE%/}
KEEP=3

die() {
  echo "app-deploy.sh: error: $*" >&2
  exit 1
}
usage() {
  echo "usage: app-deploy.sh --release ID --upload DIR [--health-path PATH] [--expect-version V] [--settle-seconds N] [--health-timeout SECONDS] PORT..." >&2
  exit 64
}
need_arg() { (($1 >= 2)) || usage; }

release='' upload='' health_path=/healthz expect_version='' settle=0 health_timeout=${HEALTH_TIMEOUT:-60}
while (($# > 0)); do
  case $1 in
    --release) need_arg $#; release=$2; shift 2 ;;
    --upload) need_arg $#; upload=$2; shift 2 ;;
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
[[ $release =~ ^[0-9a-f]{16}$ ]] || { echo "app-deploy.sh: error: --release must be 16 hex digits (got '$release')" >&2; usage; }
[[ $upload == /* ]] || { echo "app-deploy.sh: error: --upload must be an absolute path" >&2; usage; }
[[ $settle =~ ^[0-9]+$ ]] || { echo "app-deploy.sh: error: --settle-seconds must be a whole number" >&2; usage; }
[[ $health_timeout =~ ^[1-9][0-9]*$ ]] || { echo "app-deploy.sh: error: --health-timeout must be a whole number of seconds" >&2; usage; }

releases=$BASE/releases
dest=$releases/$release
rollout=$(dirname -- "${BASH_SOURCE[0]}")/app-rollout.sh
[[ -x $rollout ]] || die "$rollout is missing: app-deploy.sh and app-rollout.sh are installed together"

# 1. install once
if [[ -d $dest ]]; then
  echo "app-deploy.sh: release $release already installed"
else
  [[ -d $upload ]] || die "release $release is not installed and its upload $upload is gone: upload it again (pulumi up --target-replace with the URN of the app-upload resource)"
  install -d -m 0755 "$releases"
  rm -rf -- "$dest.tmp"
  cp -a -- "$upload" "$dest.tmp"
  chown -R root:root -- "$dest.tmp"
  chmod -R a+rX,go-w -- "$dest.tmp"
  mv -T -- "$dest.tmp" "$dest"
  echo "app-deploy.sh: release $release installed"
fi

# 2. the upload has served its purpose
rm -rf -- "$upload"

# 3. switch
ln -sfn -- "$dest" "$BASE/app.new"
mv -T -- "$BASE/app.new" "$BASE/app"

# 4. roll
HEALTH_PATH=$health_path EXPECT_VERSION=$expect_version SETTLE_SECONDS=$settle HEALTH_TIMEOUT=$health_timeout "$rollout" "$@"

# 5. prune: newest first; the live release is never removed
mapfile -t installed < <(find "$releases" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2-)
for dir in "${installed[@]:KEEP}"; do
  [[ $dir == "$dest" ]] && continue
  rm -rf -- "$dir"
  echo "app-deploy.sh: removed old release ${dir##*/}"
done
