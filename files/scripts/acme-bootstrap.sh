#!/usr/bin/env bash
# acme-bootstrap.sh --cert FILE --webroot DIR STAGE
#
# The nginx-acme-bootstrap step. Before the first certificate exists nginx -t
# refuses the full site (its ssl_certificate is missing), yet the HTTP-01
# challenge needs nginx serving DIR on port 80. So while FILE, the site's
# certificate, does not exist: create DIR and push the HTTP-only config in
# STAGE with nginx-apply.sh (next to this script). Once FILE exists the full
# site is live, or about to be, and this step must never replace it: it does
# nothing.
# Exit: 0 when FILE exists; otherwise nginx-apply.sh's; 64 usage.
set -euo pipefail

usage() {
  echo "usage: acme-bootstrap.sh --cert FILE --webroot DIR STAGE" >&2
  exit 64
}

cert='' webroot=''
while (($# > 1)); do
  case $1 in
    --cert) cert=$2; shift 2 ;;
    --webroot) webroot=$2; shift 2 ;;
    *) break ;;
  esac
done
(($# == 1)) || usage
stage=$1
[[ $cert == /* && $webroot == /* ]] || usage

if [[ -s $cert ]]; then
  echo "certificate present: HTTP-only bootstrap not needed"
  exit 0
fi
install -d -m 0755 "$webroot"
exec "$(dirname -- "${BASH_SOURCE[0]}")/nginx-apply.sh" "$stage"
