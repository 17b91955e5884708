#!/usr/bin/env bash
# A cached Debian minbase chroot of a given suite with given packages, for tests
# that need a newer tool than the host's Debian 12 has (nginx 1.26 from trixie,
# nginx 1.30 from sid, OpenSSL 3.5, certbot 4, a newer pebble, curl, ...).
#
#   get-chroot.sh NAME SUITE PACKAGE...
#
# NAME names the cache entry (letters, digits, dot, dash), SUITE is a Debian
# suite (bookworm, trixie, forky, sid). Prints the chroot's path as the last
# line of stdout; progress goes to stderr.
#
# The first call builds the chroot with debootstrap (a few minutes); later calls
# only check it (well under a second): the marker this script writes and every
# PACKAGE installed. An entry missing a package is rebuilt. The build runs in a
# temp directory next to the cache entry and is renamed into place when
# complete, so an interrupted build never leaves a half chroot that looks done.
# No service starts inside the chroot (policy-rc.d).
#
# Use the result with:   chroot ROOT nginx -t -c /tmp/SOME-TREE/etc/nginx/nginx.conf
# (every path in the tested config must exist inside ROOT). Programs run from it
# share the host's network, so a server started in it listens on the host's
# loopback.
#
#   FASTAPI_EDGE_CACHE          cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/fastapi-edge)
#   FASTAPI_EDGE_DEBIAN_MIRROR  Debian mirror (default: the host's apt mirror, else deb.debian.org)
#
# Needs root (debootstrap, chroot, mount), debootstrap and access to a Debian mirror.
set -euo pipefail

[[ $# -ge 3 ]] || { printf 'usage: get-chroot.sh NAME SUITE PACKAGE...\n' >&2; exit 2; }
readonly name="$1" suite="$2"
shift 2
readonly packages=("$@")
[[ "${name}" =~ ^[A-Za-z0-9][A-Za-z0-9.-]*$ ]] || { printf 'get-chroot: NAME must be letters, digits, dots and dashes, got %q\n' "${name}" >&2; exit 2; }
[[ "${suite}" =~ ^[a-z]+$ ]] || { printf 'get-chroot: SUITE must be a Debian suite name such as trixie or sid, got %q\n' "${suite}" >&2; exit 2; }
for p in "${packages[@]}"; do
  [[ "${p}" =~ ^[a-z0-9][a-z0-9.+-]+$ ]] || { printf 'get-chroot: not a Debian package name: %q\n' "${p}" >&2; exit 2; }
done
readonly marker=".fastapi-edge-complete"
cache_root="${FASTAPI_EDGE_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/fastapi-edge}"
root="${cache_root}/${name}"
readonly chroot_env=(/usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive)

log() { printf 'get-chroot: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# A usable chroot: completion marker written by this script, every package installed.
is_ready() {
  [[ -f "$1/${marker}" ]] || return 1
  local status
  # shellcheck disable=SC2016 # dpkg-query's format string, not shell
  status="$(chroot "$1" "${chroot_env[@]}" dpkg-query -W -f='${db:Status-Status}\n' "${packages[@]}" 2>/dev/null)" || return 1
  [[ "$(grep -c '^installed$' <<<"${status}")" -eq "${#packages[@]}" ]]
}

# Unmount everything mounted at or below $1 (deepest first).
unmount_below() {
  local dir mnt
  dir="$(realpath -m "$1")"
  # findmnt prints targets with octal escapes for odd characters; cache paths
  # containing such characters are not supported (they would not match here).
  findmnt -rn -o TARGET | awk -v d="${dir}" '$0 == d || index($0, d "/") == 1' | sort -r |
    while IFS= read -r mnt; do
      umount "${mnt}" 2>/dev/null || umount -l "${mnt}"
    done
}

# Remove a (partial) chroot: unmount first, never cross into other filesystems.
remove_tree() {
  [[ -e "$1" ]] || return 0
  unmount_below "$1"
  rm -rf --one-file-system "$1"
}

# The Debian mirror the host's apt uses (deb822 .sources or one-line .list).
host_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list; do
    [[ -r "${f}" ]] || continue
    if [[ "${f}" == *.sources ]]; then
      # Stanzas whose suites include a plain release name (no -security) and whose URI ends in /debian.
      uri="$(awk '
        function flush() { if (!found && uris != "" && plain) { n = split(uris, u, " "); for (i = 1; i <= n; i++) if (u[i] ~ /\/debian\/?$/) { print u[i]; found = 1; exit } } uris = ""; plain = 0 }
        /^[[:space:]]*$/ { flush(); next }
        tolower($1) == "uris:" { $1 = ""; uris = $0 }
        tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+(-updates)?$/) plain = 1 }
        END { flush() }' "${f}")"
    else
      uri="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { if ($i ~ /\/debian\/?$/ && $(i + 1) ~ /^[a-z]+(-updates)?$/) { print $i; exit } break } }' "${f}")"
    fi
    if [[ -n "${uri}" ]]; then
      printf '%s\n' "${uri%/}"
      return 0
    fi
  done
  printf '%s\n' "http://deb.debian.org/debian"
}

if [[ -d "${root}" ]] && is_ready "${root}"; then
  printf '%s\n' "${root}"
  exit 0
fi

[[ "${EUID}" -eq 0 ]] || die "building the ${suite} chroot needs root (debootstrap, chroot, mount)"
command -v debootstrap >/dev/null 2>&1 || PATH="${PATH}:/usr/sbin:/sbin"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"

mkdir -p "${cache_root}"
# One builder at a time; a second caller waits and then finds the chroot ready.
exec 9>"${cache_root}/.${name}.lock"
if ! flock -n 9; then
  log "another build of ${root} is running; waiting for it"
  flock 9
fi
if [[ -d "${root}" ]] && is_ready "${root}"; then
  printf '%s\n' "${root}"
  exit 0
fi

# Holding the lock: leftovers of interrupted builds (killed hard, so no trap
# ran) and an unusable cache entry are safe to remove now.
shopt -s nullglob
for old in "${cache_root}/.${name}.build."* "${cache_root}/.${name}.stale."*; do
  log "removing leftover ${old}"
  remove_tree "${old}"
done
shopt -u nullglob
if [[ -e "${root}" ]]; then
  stale="$(mktemp -d "${cache_root}/.${name}.stale.XXXXXX")"
  log "${root} is not a usable chroot; rebuilding"
  mv -T "${root}" "${stale}/old"
  remove_tree "${stale}"
fi

mirror="${FASTAPI_EDGE_DEBIAN_MIRROR:-$(host_mirror)}"
script="/usr/share/debootstrap/scripts/${suite}"
# Older debootstraps lack the trixie script; it is a symlink to sid's anyway.
[[ -e "${script}" ]] || script="/usr/share/debootstrap/scripts/sid"

# Long commands run in the background, in their own process group, and are
# waited for: bash handles a signal at once (it defers traps while a foreground
# child runs) and cleanup stops the whole group (debootstrap, wget, dpkg, ...).
child=""
run() {
  setsid "$@" &
  child=$!
  if wait "${child}"; then
    child=""
  else
    local rc=$?
    child=""
    return "${rc}"
  fi
}

work="$(mktemp -d "${cache_root}/.${name}.build.XXXXXX")"
cleanup() {
  local rc=$?
  if [[ -n "${child}" ]] && kill -0 "${child}" 2>/dev/null; then
    log "interrupted; stopping ${child} and removing the partial chroot"
    kill -TERM -- "-${child}" 2>/dev/null || kill -TERM "${child}" 2>/dev/null || true
    wait "${child}" 2>/dev/null || true
  fi
  if [[ -n "${work}" && -e "${work}" ]]; then
    if [[ ${rc} -ne 0 && -f "${work}/debootstrap/debootstrap.log" ]]; then
      log "build failed (exit ${rc}); last lines of debootstrap.log:"
      tail -n 25 "${work}/debootstrap/debootstrap.log" >&2 || true
    fi
    remove_tree "${work}"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# mktemp makes the directory 0700; as the chroot's / it must be traversable.
chmod 0755 "${work}"

start=${SECONDS}
log "building Debian ${suite} minbase in ${work} from ${mirror} (takes a few minutes)"
run debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
  "${suite}" "${work}" "${mirror}" "${script}" >&2

# No service may start inside the chroot (nginx's postinst would try).
printf '#!/bin/sh\n# fastapi-edge: never start services in this chroot.\nexit 101\n' >"${work}/usr/sbin/policy-rc.d"
chmod 0755 "${work}/usr/sbin/policy-rc.d"
# Replace rather than write through: the chroot's resolv.conf may be a symlink.
rm -f "${work}/etc/resolv.conf"
cp -L /etc/resolv.conf "${work}/etc/resolv.conf"

# The host's apt settings that decide whether the archive is usable at all: its proxy, and
# Check-Valid-Until/Check-Date (a mirror snapshot's Release files expire; sid's after 7 days).
for key in Acquire::http::Proxy Acquire::https::Proxy Acquire::Check-Valid-Until Acquire::Check-Date; do
  val="$(apt-config dump "${key}" 2>/dev/null | awk -v k="${key}" '$1 == k { v = $2; gsub(/^"|";$/, "", v); print v; exit }')"
  [[ -n "${val}" ]] && printf '%s "%s";\n' "${key}" "${val}"
done >"${work}/etc/apt/apt.conf.d/99fastapi-edge-host"

log "installing ${packages[*]} in the chroot"
mount -t proc proc "${work}/proc"
run chroot "${work}" "${chroot_env[@]}" apt-get update >&2
run chroot "${work}" "${chroot_env[@]}" apt-get install -y --no-install-recommends "${packages[@]}" >&2
chroot "${work}" "${chroot_env[@]}" apt-get clean >&2
umount "${work}/proc"
rm -rf "${work}/var/lib/apt/lists/"*

# shellcheck disable=SC2016 # dpkg-query's format string, not shell
versions="$(chroot "${work}" "${chroot_env[@]}" dpkg-query -W -f='${Package}=${Version} ' "${packages[@]}")"
log "installed: ${versions}"
printf 'suite=%s\nmirror=%s\npackages=%s\nbuilt=%s\nbuild_seconds=%s\n' \
  "${suite}" "${mirror}" "${versions% }" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$((SECONDS - start))" \
  >"${work}/${marker}"

# Atomic on one filesystem: the cache entry appears complete or not at all.
mv -T "${work}" "${root}"
work=""
log "chroot ready in $((SECONDS - start))s: ${root}"
printf '%s\n' "${root}"
