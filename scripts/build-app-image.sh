#!/usr/bin/env bash
# build-app-image.sh [--out FILE] [--app-dir DIR] [--suite SUITE] RELEASE
#
# Builds the fastapi-edge app as an OCI container image, offline apart from the
# Debian mirror, on the machine where `pulumi up` runs (Debian 12 with its own
# podman 4.3; no container is run, so no runtime, cgroups or network setup is
# needed here), and saves it as a docker-archive tar to ship over SSH:
#   1. Base: debootstrap --variant=minbase SUITE (default trixie, the target host's
#      Debian) + python3-fastapi python3-uvicorn (no recommends), apt lists,
#      caches and docs removed, packed as a tar and `podman import`ed as
#      localhost/fastapi-edge-base:KEY. KEY hashes the recipe (suite, packages,
#      mirror, recipe version), so the tar and the image are built once and
#      reused; a changed recipe builds a new base.
#   2. App: `podman build` of files/app-image/Containerfile (COPY only, no RUN)
#      on that base with the app files of DIR (default files/app), tagged
#      localhost/fastapi-edge-app:RELEASE. The label io.fastapi-edge.release and
#      APP_VERSION in the image are RELEASE.
#   3. `podman save --format docker-archive` to FILE (default
#      $CACHE/app-image/fastapi-edge-app-RELEASE.tar), written to FILE.tmp and
#      renamed when complete.
#
# stdout: KEY=VALUE lines only (IMAGE_REF, IMAGE_ID, IMAGE_ARCHIVE, IMAGE_SHA256,
# BASE_BUILT, BUILD_SECONDS); IMAGE_ID (sha256:<64 hex>, the digest of the image
# config, which `podman load` keeps) is what files/scripts/container-load.sh
# checks on the host. Progress goes to stderr.
#
# Environment:
#   FASTAPI_EDGE_CACHE          cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/fastapi-edge)
#   FASTAPI_EDGE_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   PODMAN                      podman command (default podman)
# Needs root (debootstrap, chroot), debootstrap, podman. Exit: 0 built, 1 failure, 64 usage.
set -euo pipefail

readonly RECIPE_VERSION=1
readonly BASE_PACKAGES=(python3-fastapi python3-uvicorn)
repo_root="$(cd "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
readonly repo_root

log() { printf 'build-app-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { printf 'usage: build-app-image.sh [--out FILE] [--app-dir DIR] [--suite SUITE] RELEASE\n' >&2; exit 64; }

out=""
app_dir="${repo_root}/files/app"
suite=trixie
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) [[ $# -ge 2 ]] || usage; out=$2; shift 2 ;;
    --app-dir) [[ $# -ge 2 ]] || usage; app_dir=$2; shift 2 ;;
    --suite) [[ $# -ge 2 ]] || usage; suite=$2; shift 2 ;;
    --) shift; break ;;
    -*) usage ;;
    *) break ;;
  esac
done
[[ $# -eq 1 ]] || usage
readonly release=$1
# The release is an image tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
[[ ${release} =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || { log "RELEASE must be a valid image tag, got '${release}'"; exit 64; }
[[ ${suite} =~ ^[a-z]+$ ]] || { log "SUITE must be a Debian suite name, got '${suite}'"; exit 64; }
[[ -f ${app_dir}/main.py ]] || die "no main.py in app directory ${app_dir}"

read -r -a podman <<<"${PODMAN:-podman}"
command -v "${podman[0]}" >/dev/null 2>&1 || die "podman is not installed (apt-get install podman)"
[[ ${EUID} -eq 0 ]] || die "needs root (debootstrap, chroot; podman's root storage)"
command -v debootstrap >/dev/null 2>&1 || PATH="${PATH}:/usr/sbin:/sbin"

cache_root="${FASTAPI_EDGE_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/fastapi-edge}"
cache="${cache_root}/app-image"
mkdir -p "${cache}"
mirror="${FASTAPI_EDGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mirror="${mirror%/}"
[[ -n ${out} ]] || out="${cache}/fastapi-edge-app-${release}.tar"
mkdir -p "$(dirname -- "${out}")"

key="$(printf 'recipe=%s\nsuite=%s\npackages=%s\nmirror=%s\n' "${RECIPE_VERSION}" "${suite}" "${BASE_PACKAGES[*]}" "${mirror}" | sha256sum)"
key="${key:0:16}"
readonly base_ref="localhost/fastapi-edge-base:${suite}-${key}"
readonly base_tar="${cache}/base-${suite}-${key}.tar"
readonly app_ref="localhost/fastapi-edge-app:${release}"
start=${SECONDS}

work=""
cleanup() {
  if [[ -n ${work} && -e ${work} ]]; then
    # A mount left by an interrupted debootstrap/chroot must not be crossed.
    findmnt -rn -o TARGET | awk -v d="${work}" 'index($0, d "/") == 1' | sort -r |
      while IFS= read -r m; do umount "${m}" 2>/dev/null || umount -l "${m}"; done
    rm -rf --one-file-system "${work}"
  fi
}
trap cleanup EXIT

# One builder per cache at a time (the base tar and the tags are shared).
exec 9>"${cache}/.build.lock"
flock 9

# ---- 1. base root file system -> base image --------------------------------
base_built=0
if "${podman[@]}" image exists "${base_ref}"; then
  log "base image ${base_ref} present"
else
  if [[ ! -s ${base_tar} ]]; then
    base_built=1
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
    work="$(mktemp -d "${cache}/.base.XXXXXX")"
    root="${work}/root"
    mkdir "${root}"
    chmod 0755 "${root}"
    script="/usr/share/debootstrap/scripts/${suite}"
    # Debian 12's debootstrap may lack newer suites' scripts; they are sid's.
    [[ -e ${script} ]] || script="/usr/share/debootstrap/scripts/sid"
    log "debootstrap ${suite} minbase from ${mirror} (a few minutes)"
    debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
      "${suite}" "${root}" "${mirror}" "${script}" >&2
    printf '#!/bin/sh\nexit 101\n' >"${root}/usr/sbin/policy-rc.d"
    chmod 0755 "${root}/usr/sbin/policy-rc.d"
    rm -f "${root}/etc/resolv.conf"
    cp -L /etc/resolv.conf "${root}/etc/resolv.conf"
    env_clean=(/usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive)
    mount -t proc proc "${root}/proc"
    log "installing ${BASE_PACKAGES[*]}"
    chroot "${root}" "${env_clean[@]}" apt-get update >&2
    chroot "${root}" "${env_clean[@]}" apt-get install -y --no-install-recommends "${BASE_PACKAGES[@]}" >&2
    chroot "${root}" "${env_clean[@]}" apt-get clean >&2
    # shellcheck disable=SC2016 # dpkg-query's format string, not shell
    chroot "${root}" "${env_clean[@]}" dpkg-query -W -f='${Package}=${Version}\n' python3 python3-fastapi python3-uvicorn >&2
    umount "${root}/proc"
    # An image carries no apt lists, caches, logs, docs or the build's resolver.
    # root is ${work}/root, never empty; :? keeps shellcheck (and a future edit) honest.
    rm -rf "${root:?}/var/lib/apt/lists/"* "${root}/var/cache/apt/"* "${root}/var/cache/debconf/"*-old \
      "${root}/var/log/"* "${root}/usr/share/doc/"* "${root}/usr/share/man/"* "${root}/usr/share/info/"* \
      "${root}/usr/share/locale/"* "${root}/usr/sbin/policy-rc.d" "${root}/etc/resolv.conf" "${root:?}/dev/"* \
      "${root}/proc/"* "${root}/sys/"* "${root}/tmp/"* "${root}/run/"*
    find "${root}" -name __pycache__ -prune -exec rm -rf {} +
    log "packing ${base_tar}"
    tar --numeric-owner --xattrs --acls -C "${root}" -cf "${base_tar}.tmp" .
    mv -f "${base_tar}.tmp" "${base_tar}"
    cleanup
    work=""
  fi
  log "importing ${base_tar} as ${base_ref}"
  "${podman[@]}" import --message "fastapi-edge base: debootstrap ${suite} minbase + ${BASE_PACKAGES[*]}" \
    "${base_tar}" "${base_ref}" >&2
fi

# ---- 2. app layer -----------------------------------------------------------
work="$(mktemp -d "${cache}/.ctx.XXXXXX")"
mkdir "${work}/app"
# The app files only: no bytecode, no editor or VCS leftovers.
tar -C "${app_dir}" --exclude=__pycache__ --exclude='*.pyc' --exclude='*/.*' -cf - . | tar -C "${work}/app" -xf -
chmod -R u=rwX,go=rX "${work}/app"
log "building ${app_ref} on ${base_ref}"
"${podman[@]}" build --pull=never --network=none --layers=false --timestamp 0 \
  --build-arg "BASE=${base_ref}" --build-arg "RELEASE=${release}" \
  -f "${repo_root}/files/app-image/Containerfile" -t "${app_ref}" "${work}" >&2
image_id="$("${podman[@]}" image inspect --format '{{.Id}}' "${app_ref}")"
[[ ${image_id} =~ ^[0-9a-f]{64}$ ]] || die "unexpected image id '${image_id}' for ${app_ref}"

# ---- 3. archive --------------------------------------------------------------
rm -f "${out}.tmp"
"${podman[@]}" save --format docker-archive -o "${out}.tmp" "${app_ref}" >&2
mv -f "${out}.tmp" "${out}"
sha="$(sha256sum "${out}")"
sha="${sha%% *}"
log "saved ${out} ($(du -h "${out}" | cut -f1)) in $((SECONDS - start))s"

printf 'IMAGE_REF=%s\nIMAGE_ID=sha256:%s\nIMAGE_ARCHIVE=%s\nIMAGE_SHA256=%s\nBASE_BUILT=%s\nBUILD_SECONDS=%s\n' \
  "${app_ref}" "${image_id}" "${out}" "${sha}" "${base_built}" "$((SECONDS - start))"
