#!/usr/bin/env bash
# make-apt-repo.sh DEBS_DIR OUT_DIR DISTRO CODENAME — a signed apt repository
# laid out like nginx.org's (OUT/packages/DISTRO/dists/CODENAME/nginx/binary-amd64,
# Release with Origin and Label "nginx" as nginx.org's) holding the .debs of
# DEBS_DIR, signed (InRelease and Release.gpg) with a new throwaway Ed25519 key
# whose public half is written ASCII-armored to OUT/key.asc. For tests only:
# it stands in for nginx.org, which cannot be reached here.
set -euo pipefail

(( $# == 4 )) || { echo "usage: make-apt-repo.sh DEBS_DIR OUT_DIR DISTRO CODENAME" >&2; exit 64; }
debs=$1 out=$2 distro=$3 codename=$4
top=$out/packages/$distro
dist=dists/$codename
bin=$dist/nginx/binary-amd64
mkdir -p "$top/pool/nginx" "$top/$bin"
cp -- "$debs"/*.deb "$top/pool/nginx/"
(cd "$top" && dpkg-scanpackages --multiversion pool/nginx /dev/null 2>/dev/null >"$bin/Packages")
gzip -9nk "$top/$bin/Packages"

{
  echo "Origin: nginx"
  echo "Label: nginx"
  echo "Codename: $codename"
  echo "Date: $(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S UTC')"
  echo "Architectures: amd64"
  echo "Components: nginx"
  echo "Description: local stand-in for nginx.org's $distro $codename repository (fastapi-edge tests)"
  echo "SHA256:"
  for f in nginx/binary-amd64/Packages nginx/binary-amd64/Packages.gz; do
    printf ' %s %s %s\n' "$(sha256sum <"$top/$dist/$f" | cut -d' ' -f1)" "$(stat -c %s "$top/$dist/$f")" "$f"
  done
} >"$top/$dist/Release"

GNUPGHOME=$(mktemp -d)
export GNUPGHOME
trap 'gpgconf --kill all >/dev/null 2>&1 || true; rm -rf -- "$GNUPGHOME"' EXIT
gpg -q --batch --pinentry-mode loopback --passphrase '' --quick-gen-key "fastapi-edge test repository <repo@fastapi-edge.test>" ed25519 sign 1d 2>/dev/null
gpg -q --batch --yes --armor --export >"$out/key.asc"
gpg -q --batch --yes --digest-algo SHA512 --clearsign -o "$top/$dist/InRelease" "$top/$dist/Release"
gpg -q --batch --yes --digest-algo SHA512 --armor --detach-sign -o "$top/$dist/Release.gpg" "$top/$dist/Release"
