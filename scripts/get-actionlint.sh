#!/usr/bin/env bash
# Build actionlint (the GitHub Actions workflow linter) from the Go module proxy
# into the project's tool cache and print the binary's path as the last line of
# stdout. A cached binary of the pinned version is reused, so only the first
# call on a machine builds anything (about a minute on 2 cores).
#
#   FASTAPI_EDGE_CACHE   cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/fastapi-edge)
#   ACTIONLINT_VERSION   module version to build (default: v1.7.12)
#
# Needs Go >= 1.24 (the module's go directive) and access to a Go module proxy.
set -euo pipefail

readonly module="github.com/rhysd/actionlint/cmd/actionlint"
version="${ACTIONLINT_VERSION:-v1.7.12}"
cache_root="${FASTAPI_EDGE_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/fastapi-edge}"
bin_dir="${cache_root}/tools/bin"
target="${bin_dir}/actionlint-${version}"
link="${bin_dir}/actionlint"

log() { printf 'get-actionlint: %s\n' "$*" >&2; }

if [[ -x "${target}" ]] && "${target}" -version >/dev/null 2>&1; then
  ln -sfn "actionlint-${version}" "${link}"
  printf '%s\n' "${target}"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  for candidate in /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [[ -x "${candidate}" ]]; then
      PATH="$(dirname "${candidate}"):${PATH}"
      export PATH
      break
    fi
  done
fi
if ! command -v go >/dev/null 2>&1; then
  log "go is not installed; install Go >= 1.24 (https://go.dev/dl or apt-get install golang-go from backports)"
  exit 1
fi

mkdir -p "${bin_dir}"
work="$(mktemp -d "${bin_dir}/.build.XXXXXX")"
cleanup() { rm -rf "${work}"; }
trap cleanup EXIT

log "building ${module}@${version} with $(go version)"
# GOBIN is a private directory so a half-written binary is never visible at
# ${target}; the final mv is atomic on one filesystem. GOFLAGS=-modcacherw
# keeps the module cache deletable by the user who created it.
GOBIN="${work}" GOFLAGS="${GOFLAGS:+${GOFLAGS} }-modcacherw" CGO_ENABLED=0 \
  go install -trimpath -ldflags="-s -w" "${module}@${version}" >&2
mv -f "${work}/actionlint" "${target}"
ln -sfn "actionlint-${version}" "${link}"
"${target}" -version >&2
printf '%s\n' "${target}"
