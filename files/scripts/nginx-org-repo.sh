#!/usr/bin/env bash
# nginx-org-repo.sh LINE KEYFILE — nginx from nginx.org's stable apt repository,
# pinned to the stable line LINE (e.g. 1.30: versions 1.30.*), replacing the
# distribution's nginx. Run by bootstrap-install (nginxSource: nginx.org)
# before install-packages.sh.
#
# KEYFILE is nginx.org's signing keys as ASCII armor, shipped with fastapi-edge
# (files/apt/nginx-org-signing-keys.asc): nothing is downloaded but packages
# apt verifies with it. Dearmored here without gpg (not on minimal images).
#
# Writes, each only when its content differs:
#   /etc/apt/keyrings/fastapi-edge-nginx-org.gpg            the keys (binary keyring)
#   /etc/apt/sources.list.d/fastapi-edge-nginx-org.list     deb [signed-by=that keyring] URL/DISTRO CODENAME nginx
#   /etc/apt/preferences.d/fastapi-edge-nginx-org.pref      the distribution's nginx never (-1), nginx LINE.* from
#                                                           anywhere else first (900): a newer stable line in the
#                                                           repository stays at the default 500 and is not taken
# then runs `apt-get update` only when one of them changed or nginx has no
# LINE.* candidate, and installs nginx only when the installed one is not
# LINE.*. nginx.org's package conflicts with Debian's nginx-common, so apt
# removes it and the dynamic-module packages built for it; symlinks those
# leave dangling in /etc/nginx/modules-enabled are removed (fastapi-edge's
# nginx.conf no longer includes that directory with this source, but the one
# on disk until the next push may). A second run changes nothing.
#
# Env: NGINX_ORG_URL    repository base (default http://nginx.org/packages; tests
#                       point it at a local repository signed with their own key)
#      OS_RELEASE       os-release file (default /etc/os-release)
#      APT_LOCK_TIMEOUT seconds to wait for dpkg locks (default 600)
# Exit: 0 ok, 1 failure, 64 usage error.
set -euo pipefail

log() { echo "nginx-org-repo.sh: $*"; }
die() {
  local code=$1
  shift
  echo "nginx-org-repo.sh: error: $*" >&2
  exit "$code"
}

(( $# == 2 )) || die 64 "usage: nginx-org-repo.sh LINE KEYFILE (e.g. nginx-org-repo.sh 1.30 nginx-org-signing-keys.asc)"
line=$1
keyfile=$2
[[ $line =~ ^1\.[0-9]{1,3}$ ]] || die 64 "LINE must be an nginx stable line such as 1.30 (got '$line')"
[[ -r $keyfile ]] || die 64 "KEYFILE $keyfile is not readable"
base_url=${NGINX_ORG_URL:-http://nginx.org/packages}
base_url=${base_url%/}
[[ $base_url =~ ^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$ ]] || die 64 "NGINX_ORG_URL must be an http(s) URL (got '$base_url')"
lock_timeout=${APT_LOCK_TIMEOUT:-600}
[[ $lock_timeout =~ ^[0-9]+$ ]] || die 64 "APT_LOCK_TIMEOUT must be a number of seconds"
os_release=${OS_RELEASE:-/etc/os-release}

os_field() { # $1 = key; value of KEY= in os-release, unquoted
  sed -n "s/^$1=\"\\{0,1\\}\\([^\"]*\\)\"\\{0,1\\}\$/\\1/p" "$os_release" | head -n 1
}
distro=$(os_field ID)
codename=$(os_field VERSION_CODENAME)
case $distro in
  debian) origin=Debian ;;
  ubuntu) origin=Ubuntu ;;
  *) die 1 "nginx.org's apt repository serves Debian and Ubuntu; this host is '${distro:-unknown}' ($os_release)" ;;
esac
[[ $codename =~ ^[a-z]+$ ]] || die 1 "no VERSION_CODENAME in $os_release"
[[ $(id -u) -eq 0 ]] || die 1 "must run as root"

keyring=/etc/apt/keyrings/fastapi-edge-nginx-org.gpg
sources=/etc/apt/sources.list.d/fastapi-edge-nginx-org.list
prefs=/etc/apt/preferences.d/fastapi-edge-nginx-org.pref

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

# ASCII armor -> binary keyring: the base64 between the header block and the
# CRC line of every PUBLIC KEY BLOCK (RFC 4880 section 6.2).
awk '
  /^-----BEGIN PGP PUBLIC KEY BLOCK-----$/ { inblock = 1; body = 0; next }
  /^-----END PGP PUBLIC KEY BLOCK-----$/ { inblock = 0; next }
  inblock && !body { if ($0 ~ /^[ \t\r]*$/) body = 1; next }
  inblock && /^=/ { next }
  inblock { print }
' "$keyfile" | base64 -d >"$work/keyring" 2>/dev/null || die 1 "$keyfile is not ASCII-armored OpenPGP public keys"
[[ -s $work/keyring ]] || die 1 "$keyfile holds no PGP PUBLIC KEY BLOCK"

cat >"$work/sources" <<EOF
# Written by fastapi-edge (nginxSource: nginx.org): nginx.org's stable nginx for $distro $codename.
deb [signed-by=$keyring] $base_url/$distro $codename nginx
EOF

cat >"$work/prefs" <<EOF
# Written by fastapi-edge (nginxSource: nginx.org). The first stanza that matches
# a version sets its priority:
# 1. never the distribution's nginx (nor modules built for it);
Package: nginx nginx-common nginx-core nginx-full nginx-light nginx-extras libnginx-mod-*
Pin: release o=$origin
Pin-Priority: -1

# 2. nginx $line.* (from nginx.org, the only other source) before anything else;
#    a newer stable line keeps the default 500 and is not taken.
Package: nginx
Pin: version $line.*
Pin-Priority: 900
EOF

changed=0
put() { # $1 = new file, $2 = destination, $3 = mode
  if [[ -f $2 ]] && cmp -s -- "$1" "$2"; then
    return 0
  fi
  install -D -m "$3" -- "$1" "$2.fastapi-edge-new"
  mv -f -- "$2.fastapi-edge-new" "$2"
  log "wrote $2"
  changed=1
}
put "$work/keyring" "$keyring" 0644
put "$work/sources" "$sources" 0644
put "$work/prefs" "$prefs" 0644

installed_version() {
  local status
  status=$(dpkg-query -W -f='${db:Status-Status} ${Version}' nginx 2>/dev/null) || return 0
  [[ $status == installed\ * ]] && printf '%s' "${status#installed }"
  return 0
}
candidate() {
  apt-cache policy nginx 2>/dev/null | awk '/Candidate:/ {print $2; exit}'
}
on_line() { [[ $1 == "$line".* ]]; }

have=$(installed_version)
if (( changed == 0 )) && on_line "$have"; then
  log "nginx $have from the pinned $line line is installed; nothing to do"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_MODE=a
apt_opts=(
  -o "DPkg::Lock::Timeout=$lock_timeout"
  -o Dpkg::Options::=--force-confdef
  -o Dpkg::Options::=--force-confold
)
if (( changed )) || ! on_line "$(candidate)"; then
  log "apt-get update"
  # --error-on=any: a repository whose signature does not verify is only a
  # warning otherwise (apt keeps its previous lists and exits 0), and a new
  # key that did not sign the repository would go unnoticed.
  apt-get "${apt_opts[@]}" -q --error-on=any update || die 1 "apt-get update failed (see apt's messages above: a signature that does not verify with $keyfile, or an unreachable repository)"
fi
want=$(candidate)
on_line "$want" || die 1 "apt offers nginx '${want:-none}', not $line.*: is $base_url/$distro reachable, and signed by a key in $keyfile?"

if on_line "$have"; then
  log "nginx $have is installed and on the $line line"
  exit 0
fi
log "installing nginx $want from $base_url/$distro (installed: ${have:-none})"
apt-get "${apt_opts[@]}" -q -y install "nginx=$want" || die 1 "apt-get install nginx=$want failed"

have=$(installed_version)
on_line "$have" || die 1 "nginx $have is installed after apt-get install, not $line.*"
if [[ -d /etc/nginx/modules-enabled ]]; then
  find /etc/nginx/modules-enabled -maxdepth 1 -xtype l -print -delete | sed 's/^/nginx-org-repo.sh: removed dangling module link /'
fi
log "nginx $have installed from nginx.org's $line line"
