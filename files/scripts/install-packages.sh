#!/usr/bin/env bash
# install-packages.sh [--no-install-recommends] PKG... — idempotent, non-interactive apt install.
#
# * --no-install-recommends: only what PKG depends on (podman's recommends pull
#   buildah, criu, cpp and gpg and regenerate the initramfs: minutes on a small
#   VPS, for nothing a rootful podman serving 127.0.0.1 uses).
# * Does nothing (no apt-get update, no lock wait) when every package is
#   already installed (dpkg-query).
# * Waits for cloud-init to finish (`cloud-init status --wait`) when present,
#   and for apt/dpkg locks held by unattended-upgrades (DPkg::Lock::Timeout).
# * Runs `apt-get update` only when needed: no package lists yet, a package has
#   no install candidate, or the install failed on stale lists (then retried once).
# Env: APT_LOCK_TIMEOUT (s, default 600), CLOUD_INIT_TIMEOUT (s, default 900).
# Exit: 0 ok, 1 failure, 64 usage error.
set -euo pipefail

log() { echo "install-packages.sh: $*"; }
die() {
  local code=$1
  shift
  echo "install-packages.sh: error: $*" >&2
  exit "$code"
}

recommends=()
if [[ ${1-} == --no-install-recommends ]]; then
  recommends=(--no-install-recommends)
  shift
fi
(( $# >= 1 )) || die 64 "usage: install-packages.sh [--no-install-recommends] PKG..."
for pkg in "$@"; do
  [[ $pkg =~ ^[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?(=[A-Za-z0-9.+:~-]+)?$ ]] ||
    die 64 "invalid package name '$pkg'"
done

is_installed() {
  local status
  status=$(dpkg-query -W -f='${db:Status-Status}' "${1%%=*}" 2>/dev/null) || return 1
  [[ $status == installed ]]
}

missing=()
for pkg in "$@"; do
  is_installed "$pkg" || missing+=("$pkg")
done
if (( ${#missing[@]} == 0 )); then
  log "all packages already installed: $*"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die 1 "must run as root to install: ${missing[*]}"

lock_timeout=${APT_LOCK_TIMEOUT:-600}
[[ $lock_timeout =~ ^[0-9]+$ ]] || die 64 "APT_LOCK_TIMEOUT must be a number of seconds"

if command -v cloud-init >/dev/null 2>&1; then
  log "waiting for cloud-init to finish"
  # Exit 1/2 mean cloud-init had (recoverable) errors; not our problem here.
  timeout "${CLOUD_INIT_TIMEOUT:-900}" cloud-init status --wait >/dev/null 2>&1 ||
    log "cloud-init status --wait returned non-zero; continuing"
fi

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_MODE=a
apt_opts=(
  -o "DPkg::Lock::Timeout=$lock_timeout"
  -o Dpkg::Options::=--force-confdef
  -o Dpkg::Options::=--force-confold
)

apt_update() {
  log "apt-get update"
  apt-get "${apt_opts[@]}" -q update || die 1 "apt-get update failed"
}

have_lists() {
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

has_candidate() {
  local candidate
  candidate=$(apt-cache policy "${1%%=*}" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
  [[ -n $candidate && $candidate != "(none)" ]]
}

updated=0
needs_update=0
if ! have_lists; then
  needs_update=1
else
  for pkg in "${missing[@]}"; do
    has_candidate "$pkg" || { needs_update=1; break; }
  done
fi
if (( needs_update )); then
  apt_update
  updated=1
fi

install() {
  apt-get "${apt_opts[@]}" -q -y install ${recommends[@]+"${recommends[@]}"} "${missing[@]}"
}

log "installing: ${missing[*]}"
if ! install; then
  (( updated )) && die 1 "apt-get install failed for: ${missing[*]}"
  log "install failed; refreshing package lists and retrying once"
  apt_update
  install || die 1 "apt-get install failed for: ${missing[*]}"
fi

for pkg in "${missing[@]}"; do
  is_installed "$pkg" || die 1 "package $pkg is not installed after apt-get install"
done
log "installed: ${missing[*]}"
