#!/usr/bin/env bash
# app-deploy.sh --release ID --upload DIR [--health-path PATH]
#               [--expect-version V] [--settle-seconds N] [--health-timeout SECONDS]
#               [--venv requirements.txt|pyproject.toml [--python PATH]
#                [--wheelhouse DIR | --index-url URL] [--system-site-packages]
#                [--min-uvicorn VERSION]] PORT...
# app-deploy.sh --files-only --release ID --upload DIR
#
# The app-deploy step: make release ID live and roll the app processes onto it.
#   1. Install the release once: when $BASE/releases/ID is missing, copy DIR
#      (the release as uploaded) to ID.tmp, owned by root, readable by all,
#      writable by root only, and rename it to ID. A leftover ID.tmp from an
#      interrupted run is replaced. When ID is installed, nothing is copied.
#   2. With --venv: build the release's own virtualenv, $BASE/releases/ID/.venv,
#      with PYTHON -m venv, and pip-install the requirements file named (for a
#      pyproject.toml, its [project].dependencies) into it: from the wheelhouse
#      DIR only (--no-index --find-links), or from URL, or from PyPI. pip runs
#      --isolated (no pip settings from the environment or the user's files).
#      The virtualenv is complete when its marker file is written, last; an
#      incomplete one is rebuilt. With --min-uvicorn, the uvicorn it resolved must
#      be at least VERSION. A failure prints pip's own message and exits 1 before
#      anything live changes: a release installed by this run is removed again,
#      the uploads are kept for a retry, and the live release keeps serving.
#   3. Remove DIR (and the wheelhouse). They are uploaded only when the release
#      changes, so a re-run of the step (a changed setting) needs nothing from them.
#   4. Point $BASE/app at releases/ID with a single rename (atomic).
#   5. Roll the processes one at a time: app-rollout.sh PORT... (next to this
#      script) with HEALTH_PATH, EXPECT_VERSION, SETTLE_SECONDS and HEALTH_TIMEOUT from the
#      options. A failed rollout exits 1 here, before any pruning.
#   6. Keep the three newest releases (by modification time) and the live one;
#      a release's virtualenv goes with it. Going back to a kept release (a
#      rollback) installs and builds nothing: it only switches and rolls.
#      Then remove the uploads other releases left beside DIR and the wheelhouse
#      (a refused release keeps them for a retry; once another is live, no
#      resource refers to them).
# --files-only (the edge in front of app hosts, docs/multi-host.md): steps 1, 3,
# 4 and 6 alone. The release is installed and switched for the files nginx
# serves from it (staticPath); no virtualenv is built and no process is
# touched: the app runs on the app hosts. The edge's own processes, if any,
# are stopped by a later step, once nginx's upstream no longer names them.
# Steps 1, 4 and 6 are release-lib.sh's, shared with container-deploy.sh.
# Idempotent: a re-run installs nothing and only rolls the processes again.
#
# Environment: FASTAPI_EDGE_BASE (default /opt/fastapi-edge; tests), and
# whatever app-rollout.sh reads (SYSTEMCTL, HEALTH_TIMEOUT, ...).
# Exit: 0 live and healthy; 1 failure; 64 usage.
set -euo pipefail
shopt -s nullglob

KEEP=3
# shellcheck source=files/scripts/release-lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/release-lib.sh"

die() {
  echo "app-deploy.sh: error: $*" >&2
  exit 1
}
usage() {
  echo "usage: app-deploy.sh --release ID --upload DIR [--health-path PATH] [--expect-version V] [--settle-seconds N] [--health-timeout SECONDS] [--venv requirements.txt|pyproject.toml [--python PATH] [--wheelhouse DIR | --index-url URL] [--system-site-packages] [--min-uvicorn VERSION]] PORT..." >&2
  echo "       app-deploy.sh --files-only --release ID --upload DIR" >&2
  exit 64
}
need_arg() { (($1 >= 2)) || usage; }

release='' upload='' health_path=/healthz expect_version='' settle=0 health_timeout=${HEALTH_TIMEOUT:-60}
venv_file='' python=/usr/bin/python3 wheelhouse='' index_url='' system_site=0 min_uvicorn='' files_only=0
while (($# > 0)); do
  case $1 in
    --release) need_arg $#; release=$2; shift 2 ;;
    --upload) need_arg $#; upload=$2; shift 2 ;;
    --health-path) need_arg $#; health_path=$2; shift 2 ;;
    --expect-version) need_arg $#; expect_version=$2; shift 2 ;;
    --settle-seconds) need_arg $#; settle=$2; shift 2 ;;
    --health-timeout) need_arg $#; health_timeout=$2; shift 2 ;;
    --venv) need_arg $#; venv_file=$2; shift 2 ;;
    --python) need_arg $#; python=$2; shift 2 ;;
    --wheelhouse) need_arg $#; wheelhouse=$2; shift 2 ;;
    --index-url) need_arg $#; index_url=$2; shift 2 ;;
    --system-site-packages) system_site=1; shift ;;
    --min-uvicorn) need_arg $#; min_uvicorn=$2; shift 2 ;;
    --files-only) files_only=1; shift ;;
    --) shift; break ;;
    -*) usage ;;
    *) break ;;
  esac
done
if ((files_only)); then
  (($# == 0)) || { echo "app-deploy.sh: error: --files-only takes no PORT: it starts no process" >&2; usage; }
  [[ -z $venv_file && -z $wheelhouse ]] || { echo "app-deploy.sh: error: --files-only builds no virtualenv (no --venv, no --wheelhouse)" >&2; usage; }
else
  (($# >= 1)) || usage
fi
[[ $release =~ ^[0-9a-f]{16}$ ]] || { echo "app-deploy.sh: error: --release must be 16 hex digits (got '$release')" >&2; usage; }
[[ $upload == /* ]] || { echo "app-deploy.sh: error: --upload must be an absolute path" >&2; usage; }
[[ $settle =~ ^[0-9]+$ ]] || { echo "app-deploy.sh: error: --settle-seconds must be a whole number" >&2; usage; }
[[ $health_timeout =~ ^[1-9][0-9]*$ ]] || { echo "app-deploy.sh: error: --health-timeout must be a whole number of seconds" >&2; usage; }
case $venv_file in
  '' | requirements.txt | pyproject.toml) ;;
  *) echo "app-deploy.sh: error: --venv must be requirements.txt or pyproject.toml" >&2; usage ;;
esac
[[ $python == /* ]] || { echo "app-deploy.sh: error: --python must be an absolute path" >&2; usage; }
[[ -z $wheelhouse || $wheelhouse == /* ]] || { echo "app-deploy.sh: error: --wheelhouse must be an absolute path" >&2; usage; }
[[ -z $index_url || $index_url =~ ^https://[A-Za-z0-9./:%_~-]+$ ]] || { echo "app-deploy.sh: error: --index-url must be an https:// URL" >&2; usage; }
[[ -z $wheelhouse || -z $index_url ]] || { echo "app-deploy.sh: error: --wheelhouse and --index-url exclude each other" >&2; usage; }
[[ -z $min_uvicorn || $min_uvicorn =~ ^[0-9]+(\.[0-9]+)*$ ]] || { echo "app-deploy.sh: error: --min-uvicorn must be a version such as 0.33" >&2; usage; }

releases=$BASE/releases
dest=$releases/$release
rollout=$(dirname -- "${BASH_SOURCE[0]}")/app-rollout.sh
[[ -x $rollout ]] || die "$rollout is missing: app-deploy.sh and app-rollout.sh are installed together"

# 1. install once
install_release "$release" "$upload" || exit 1
installed_now=$RELEASE_INSTALLED_NOW

# 2. the release's virtualenv
venv=$dest/.venv
venv_marker=$venv/.fastapi-edge-complete
# Undo what this run added and stop; the live release and the uploads stay as they were.
venv_failed() {
  rm -rf -- "$venv"
  if ((installed_now)); then rm -rf -- "$dest"; fi
  die "$* (release $release not made live; the live release keeps serving)"
}
build_venv() {
  local reqs=$dest/$venv_file pip_args
  [[ -f $reqs ]] || venv_failed "the release has no $venv_file"
  command -v -- "$python" >/dev/null || venv_failed "python interpreter $python not found (appPython)"
  rm -rf -- "$venv"
  local venv_args=()
  ((system_site)) && venv_args+=(--system-site-packages)
  echo "app-deploy.sh: building the virtualenv of release $release from $venv_file"
  "$python" -m venv "${venv_args[@]}" -- "$venv" || venv_failed "$python -m venv failed (on Debian and Ubuntu it needs the python3-venv package)"
  if [[ $venv_file == pyproject.toml ]]; then
    "$venv/bin/python" - "$reqs" >"$venv/requirements-from-pyproject.txt" <<'PY' || venv_failed "cannot read [project].dependencies from pyproject.toml"
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
    reqs=$venv/requirements-from-pyproject.txt
  fi
  pip_args=(--isolated --disable-pip-version-check --no-input --require-virtualenv)
  if [[ -n $wheelhouse ]]; then
    [[ -d $wheelhouse ]] || venv_failed "the wheelhouse upload $wheelhouse is gone: upload it again (pulumi up --target-replace with the URN of the app-wheels resource)"
    pip_args+=(--no-index --find-links "$wheelhouse")
  elif [[ -n $index_url ]]; then
    pip_args+=(--index-url "$index_url")
  fi
  # pip's own message (the requirement it could not satisfy) goes to stderr as it is.
  (cd -- "$dest" && "$venv/bin/python" -m pip install "${pip_args[@]}" -r "$reqs") ||
    venv_failed "pip could not install $venv_file (pip's message above)"
  if [[ -n $min_uvicorn ]]; then
    local have
    have=$("$venv/bin/python" -c 'import uvicorn; print(uvicorn.__version__)' 2>/dev/null) ||
      venv_failed "the virtualenv has no uvicorn; $venv_file must require uvicorn>=$min_uvicorn"
    [[ $(printf '%s\n' "$min_uvicorn" "$have" | sort -V | head -n 1) == "$min_uvicorn" ]] ||
      venv_failed "the virtualenv's uvicorn is $have; ALB mode needs uvicorn>=$min_uvicorn (a CIDR in --forwarded-allow-ips): require uvicorn>=$min_uvicorn in $venv_file"
  fi
  chown -R root:root -- "$venv"
  chmod -R a+rX,go-w -- "$venv"
  touch -- "$venv_marker"
  echo "app-deploy.sh: virtualenv of release $release built"
}
if [[ -n $venv_file ]]; then
  if [[ -f $venv_marker ]]; then
    echo "app-deploy.sh: virtualenv of release $release already built"
  else
    build_venv
  fi
fi

# 3. the uploads have served their purpose
rm -rf -- "$upload"
if [[ -n $wheelhouse ]]; then rm -rf -- "$wheelhouse"; fi

# 4. switch
switch_release "$release"

# 5. roll (not with --files-only: no process runs here)
if ((files_only)); then
  echo "app-deploy.sh: release $release live for its files only (the app runs on the app hosts)"
else
  # Coming from appRuntime container: each port's container is stopped right before its uvicorn starts.
  replaces=''
  [[ -f ${UNIT_DIR:-/etc/systemd/system}/fastapi-edge-container@.service ]] && replaces=fastapi-edge-container
  REPLACES_TEMPLATE=$replaces HEALTH_PATH=$health_path EXPECT_VERSION=$expect_version SETTLE_SECONDS=$settle HEALTH_TIMEOUT=$health_timeout "$rollout" "$@"
fi

# 6. prune: newest first; the live release is never removed. Then the uploads
#    refused releases left behind (kept for a retry that is now moot).
prune_releases "$release" "$KEEP"
sweep_uploads "$release" "$upload" ${wheelhouse:+"$wheelhouse"}
