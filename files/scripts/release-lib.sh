#!/usr/bin/env bash
# Source this: release-lib.sh, the release directories under $BASE/releases that
# container-deploy.sh installs for nginx's static files (appStaticDir), as
# app-deploy.sh does for the uvicorn runtime. (Sourced, not run.)
#   install_release ID UPLOAD   copy UPLOAD to releases/ID once (ID.tmp, then a rename),
#                               root-owned, readable by all; a no-op when installed
#   switch_release ID           point $BASE/app at releases/ID with one rename
#   prune_releases ID KEEP      keep the KEEP newest releases and ID
BASE=${FASTAPI_EDGE_BASE:-/opt/fastapi-edge}
BASE=${BASE%/}

install_release() {
  local dest=$BASE/releases/$1 upload=$2
  if [[ -d $dest ]]; then
    echo "release $1 already installed"
    return 0
  fi
  [[ -d $upload ]] || { echo "release $1 is not installed and its upload $upload is gone: upload it again (pulumi up --target-replace with the URN of the upload resource)" >&2; return 1; }
  install -d -m 0755 "$BASE/releases"
  rm -rf -- "$dest.tmp"
  cp -a -- "$upload" "$dest.tmp"
  chown -R root:root -- "$dest.tmp"
  chmod -R a+rX,go-w -- "$dest.tmp"
  mv -T -- "$dest.tmp" "$dest"
  echo "release $1 installed"
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
    echo "removed old release ${dir##*/}"
  done
}
