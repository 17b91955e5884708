#!/usr/bin/env bash
# Source this: release-lib.sh, the release directories under $BASE/releases that
# app-deploy.sh (the uvicorn runtime) and container-deploy.sh (the static files
# nginx serves in the container runtime) install. (Sourced, not run.) Messages
# start with the name of the script that sourced this.
#   install_release ID UPLOAD   copy UPLOAD to releases/ID once (ID.tmp, then a rename),
#                               root-owned, readable by all; a no-op when installed.
#                               Sets RELEASE_INSTALLED_NOW=1 when this call installed it.
#   switch_release ID           point $BASE/app at releases/ID with one rename
#   prune_releases ID KEEP      keep the KEEP newest releases and ID
#   sweep_uploads ID PATH...    after ID went live: remove the uploads other releases
#                               left beside each PATH (a refused release keeps its
#                               uploads for a retry; once another release is live,
#                               nothing refers to them)
BASE=${FASTAPI_EDGE_BASE:-/opt/fastapi-edge}
BASE=${BASE%/}

release_log() { echo "${0##*/}: $*"; }

# shellcheck disable=SC2034 # read by the script that sources this
RELEASE_INSTALLED_NOW=0
install_release() {
  local dest=$BASE/releases/$1 upload=$2
  RELEASE_INSTALLED_NOW=0
  if [[ -d $dest ]]; then
    release_log "release $1 already installed"
    return 0
  fi
  [[ -d $upload ]] || { echo "${0##*/}: error: release $1 is not installed and its upload $upload is gone: upload it again (pulumi up --target-replace with the URN of its upload resource)" >&2; return 1; }
  install -d -m 0755 "$BASE/releases"
  rm -rf -- "$dest.tmp"
  cp -a -- "$upload" "$dest.tmp"
  chown -R root:root -- "$dest.tmp"
  chmod -R a+rX,go-w -- "$dest.tmp"
  mv -T -- "$dest.tmp" "$dest"
  # shellcheck disable=SC2034 # read by the script that sources this
  RELEASE_INSTALLED_NOW=1
  release_log "release $1 installed"
}

switch_release() {
  ln -sfn -- "$BASE/releases/$1" "$BASE/app.new"
  mv -T -- "$BASE/app.new" "$BASE/app"
}

prune_releases() {
  local keep_id=$1 keep=$2 dir installed
  mapfile -t installed < <(find "$BASE/releases" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2-)
  for dir in "${installed[@]:keep}"; do
    [[ ${dir##*/} == "$keep_id" ]] && continue
    rm -rf -- "$dir"
    release_log "removed old release ${dir##*/}"
  done
}

# PATH ends in -ID (…/fastapi-edge-upload-ID, …/fastapi-edge-wheels-ID,
# …/fastapi-edge-image-ID): its siblings with the same prefix and another
# release's id are stale uploads.
sweep_uploads() {
  local keep_id=$1 path prefix stale
  shift
  for path in "$@"; do
    [[ $path == *-"$keep_id" ]] || continue
    prefix=${path%"$keep_id"}
    for stale in "$prefix"*; do
      [[ $stale == "$path" || ! ${stale#"$prefix"} =~ ^[0-9a-f]{16}$ ]] && continue
      rm -rf -- "$stale"
      release_log "removed the upload of release ${stale#"$prefix"} (not live)"
    done
  done
}
