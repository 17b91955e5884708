#!/usr/bin/env bash
# certbot-deploy-hook.sh — install as /etc/letsencrypt/renewal-hooks/deploy/
# (certbot runs it after every successful issuance/renewal).
# Tests the nginx config, then reloads nginx (never restarts it) with
# nginx-reload.sh, the reload routine nginx-apply.sh uses too, which returns
# once the new certificate is in use. If the test fails the hook logs nginx's
# output and exits 1 without reloading, so nginx keeps serving the previous
# certificate.
#
# Environment:
#   NGINX_BIN         nginx executable (default nginx)
#   NGINX_CONF_DIR    nginx config dir (default /etc/nginx)
#   NGINX_RELOAD_CMD, NGINX_RELOAD_TIMEOUT, NGINX_PID_FILE
#                     passed on to nginx-reload.sh (see there)
#   RENEWED_LINEAGE, RENEWED_DOMAINS  set by certbot; logged only
# nginx-reload.sh is found next to this script, else in /opt/fastapi-edge/bin
# (where bootstrap-install puts it; certbot runs this copy from its hooks dir).
# Exit: 0 reloaded (or nginx not running: nothing to reload); 1 test or reload failed.
set -euo pipefail

NGINX_BIN=${NGINX_BIN:-nginx}
NGINX_CONF_DIR=${NGINX_CONF_DIR:-/etc/nginx}
conf=${NGINX_CONF_DIR%/}/nginx.conf
tag=fastapi-edge-certbot-hook
reload=$(dirname -- "${BASH_SOURCE[0]}")/nginx-reload.sh
[[ -x $reload ]] || reload=/opt/fastapi-edge/bin/nginx-reload.sh

log() {
  echo "$tag: $*" >&2
  to_syslog "$*"
}

to_syslog() {
  if command -v logger >/dev/null 2>&1; then
    logger -t "$tag" -- "$1" 2>/dev/null || true
  fi
}

log "certificate deployed for ${RENEWED_DOMAINS:-unknown domains} (${RENEWED_LINEAGE:-unknown lineage}); testing nginx config"

if ! out=$("$NGINX_BIN" -t -c "$conf" 2>&1); then
  log "nginx -t failed; NOT reloading nginx (old certificate stays in use)"
  printf '%s\n' "$out" >&2
  to_syslog "$out"
  exit 1
fi

rc=0
out=$(NGINX_BIN=$NGINX_BIN NGINX_CONF_DIR=$NGINX_CONF_DIR "$reload" 2>&1) || rc=$?
[[ -z $out ]] || log "$out"
case $rc in
  0) log "nginx reloaded" ;;
  3) ;; # not running: nothing to reload
  *)
    log "nginx reload failed ($reload exit $rc); the old certificate may still be in use"
    exit 1
    ;;
esac
