#!/usr/bin/env bash
# nginx-reload.sh [--start] — reload nginx (never restart it) and return only
# once the reload is live. The one reload routine of the host: nginx-apply.sh
# runs it after installing a config, certbot's deploy hook
# (certbot-deploy-hook.sh) after a renewal. Test the config (nginx -t) first:
# this does not.
#
# A reload is only a signal: `nginx -s reload` and `systemctl reload nginx`
# return before the master has re-read the config, opened new listen sockets
# and started new workers, and if that fails at runtime (a port in use, which
# nginx -t does not check) nginx logs it and keeps serving the old config.
# So after signalling, this waits until the master has started new worker
# processes (the proof that the new config is live), or a different master
# runs (a reload command that restarts), and fails if neither happens within
# the timeout.
#
# nginx not running: with --start it is started (systemd: `systemctl start
# nginx`; without systemd: nginx itself); without --start there is nothing
# to reload (exit 3).
#
# Environment:
#   NGINX_BIN             nginx executable (default nginx)
#   NGINX_CONF_DIR        nginx config dir; its nginx.conf is reloaded (default /etc/nginx)
#   NGINX_RELOAD_CMD      reload command run with `bash -c` instead of the
#                         default (systemd: `systemctl reload nginx` if active,
#                         else start or nothing as above; no systemd:
#                         `nginx -s reload`, else start or nothing)
#   NGINX_RELOAD_TIMEOUT  seconds to wait for the reload to take effect (default 60)
#   NGINX_PID_FILE        master pid file (default: the `pid` directive in
#                         nginx.conf, else nginx's compiled-in --pid-path)
#
# Exit: 0 reloaded (or started); 1 the reload or start command failed;
#       2 signalled, but no new worker processes within the timeout (nginx
#       still serves the previous config); 3 nginx not running, nothing to
#       reload (without --start); 64 usage.
set -euo pipefail
shopt -s nullglob

NGINX_BIN=${NGINX_BIN:-nginx}
NGINX_CONF_DIR=${NGINX_CONF_DIR:-/etc/nginx}
LIVE_CONF=${NGINX_CONF_DIR%/}/nginx.conf
RELOAD_TIMEOUT=${NGINX_RELOAD_TIMEOUT:-60}

log() { echo "fastapi-edge: $*"; }
usage() {
  echo "usage: nginx-reload.sh [--start]" >&2
  exit 64
}

start=0
case $# in
  0) ;;
  1) [[ $1 == --start ]] || usage; start=1 ;;
  *) usage ;;
esac
[[ $RELOAD_TIMEOUT =~ ^[1-9][0-9]*$ ]] || {
  echo "fastapi-edge: error: NGINX_RELOAD_TIMEOUT must be a whole number of seconds >= 1" >&2
  exit 64
}

# The master's pid file: NGINX_PID_FILE, else the `pid` directive of the live
# nginx.conf (a main-context directive: Debian's and ours set it there), else
# nginx's compiled-in --pid-path. No config parse: this runs on every reload.
pid_file() {
  local f
  if [[ -n ${NGINX_PID_FILE:-} ]]; then
    printf '%s' "$NGINX_PID_FILE"
    return
  fi
  f=$(sed -n 's/^[[:space:]]*pid[[:space:]]\{1,\}\([^;[:space:]]\{1,\}\)[[:space:]]*;.*/\1/p' "$LIVE_CONF" 2>/dev/null | tail -n 1) || f=
  if [[ -z $f ]]; then
    f=$("$NGINX_BIN" -V 2>&1 | grep -o -- '--pid-path=[^[:space:]]*' | head -n 1) || f=
    f=${f#--pid-path=}
  fi
  printf '%s' "$f"
}

# Pid of the running master, or nothing.
master_pid() { # $1 = pid file
  local pid
  [[ $1 == /* && -r $1 ]] || return 0
  read -r pid <"$1" 2>/dev/null || return 0
  [[ $pid =~ ^[1-9][0-9]*$ ]] && kill -0 "$pid" 2>/dev/null && printf '%s' "$pid"
  return 0
}

# Child pids of $1, space separated (from /proc; no procps needed).
children_of() {
  local f s rest ppid pid out=
  for f in /proc/[0-9]*/stat; do
    { s=$(<"$f"); } 2>/dev/null || continue
    rest=${s##*) }
    read -r _ ppid _ <<<"$rest"
    if [[ $ppid == "$1" ]]; then
      pid=${f#/proc/}
      out+="${pid%/stat} "
    fi
  done
  printf '%s' "$out"
}

# Signal the reload, or start nginx (--start) or report that nothing runs.
# Returns 1 if a command fails, 3 if nginx is not running and stays so.
signal_reload() {
  if [[ -n ${NGINX_RELOAD_CMD:-} ]]; then
    bash -c "$NGINX_RELOAD_CMD" || return 1
    return 0
  fi
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-active --quiet nginx; then
      systemctl reload nginx || return 1
    elif ((start)); then
      log "nginx is not active; starting it"
      systemctl start nginx || return 1
    else
      log "nginx is not active; nothing to reload"
      return 3
    fi
    return 0
  fi
  local out
  if out=$("$NGINX_BIN" -c "$LIVE_CONF" -s reload 2>&1); then
    return 0
  fi
  if ((start)); then
    log "nginx -s reload failed (${out//$'\n'/ }); starting nginx"
    "$NGINX_BIN" -c "$LIVE_CONF" </dev/null >/dev/null || return 1
  else
    log "nginx does not seem to be running (${out//$'\n'/ }); nothing to reload"
    return 3
  fi
}

pidf=$(pid_file)
master=$(master_pid "$pidf")
old=
[[ -n $master ]] && old=$(children_of "$master")
rc=0
signal_reload || rc=$?
if ((rc == 1)); then
  echo "fastapi-edge: error: the nginx reload command failed" >&2
  exit 1
fi
((rc == 0)) || exit "$rc"
[[ -n $master ]] || exit 0 # nginx was not running: started synchronously

deadline=$((SECONDS + RELOAD_TIMEOUT))
while :; do
  now=$(master_pid "$pidf")
  [[ -n $now && $now != "$master" ]] && exit 0
  for c in $(children_of "$master"); do
    [[ " $old " == *" $c "* ]] || exit 0 # a worker that was not there before
  done
  if ((SECONDS >= deadline)); then
    echo "fastapi-edge: error: nginx started no new worker processes within ${RELOAD_TIMEOUT}s of the reload signal" >&2
    exit 2
  fi
  sleep 0.1
done
