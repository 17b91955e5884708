#!/usr/bin/env bash
# certbot-deploy-hook.sh — install as /etc/letsencrypt/renewal-hooks/deploy/
# (certbot runs it after every successful issuance/renewal).
# Tests the nginx config, then reloads nginx (never restarts it). If the test
# fails the hook logs nginx's output and exits 1 without reloading, so nginx
# keeps serving the previous certificate.
#
# Environment:
#   NGINX_BIN         nginx executable (default nginx)
#   NGINX_CONF_DIR    nginx config dir (default /etc/nginx)
#   NGINX_RELOAD_CMD  reload command run with `bash -c` (default: `systemctl
#                     reload nginx` under systemd when nginx is active; without
#                     systemd `nginx -s reload`)
#   RENEWED_LINEAGE, RENEWED_DOMAINS  set by certbot; logged only
# Exit: 0 reloaded (or nginx not running: nothing to reload); 1 test or reload failed.
set -euo pipefail

NGINX_BIN=${NGINX_BIN:-nginx}
NGINX_CONF_DIR=${NGINX_CONF_DIR:-/etc/nginx}
conf=${NGINX_CONF_DIR%/}/nginx.conf
tag=fastapi-edge-certbot-hook

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

if [[ -n ${NGINX_RELOAD_CMD:-} ]]; then
  bash -c "$NGINX_RELOAD_CMD" || { log "reload command failed: $NGINX_RELOAD_CMD"; exit 1; }
elif [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
  if ! systemctl is-active --quiet nginx; then
    log "nginx is not active; nothing to reload"
    exit 0
  fi
  systemctl reload nginx || { log "systemctl reload nginx failed"; exit 1; }
else
  "$NGINX_BIN" -c "$conf" -s reload || { log "nginx -s reload failed"; exit 1; }
fi
log "nginx reloaded"
