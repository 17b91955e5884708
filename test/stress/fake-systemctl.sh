#!/usr/bin/env bash
# A stand-in for systemctl in the rolling-redeploy stress test (no systemd
# here): each fastapi-edge-app@PORT.service is one REAL uvicorn process
# started through files/scripts/run-app.sh, as the unit's ExecStart does.
# `stop`/`restart` send SIGTERM and wait up to 10 s (then SIGKILL), like the
# unit's KillMode=mixed with a stop timeout.
#
# State in $FAKE_STATE: PORT.pid, PORT.log, enabled/UNIT, calls.log.
# Environment for the app (as in /etc/fastapi-edge/app.env): APP_MODULE,
# APP_DIR, FORWARDED_ALLOW_IPS, PYTHON, APP_VERSION; FAKE_RUN_APP is the path
# of run-app.sh.
set -euo pipefail
S=${FAKE_STATE:?FAKE_STATE not set}
mkdir -p "$S/enabled"
log() { printf '%s %s\n' "$(date +%T.%N | cut -c1-12)" "$*" >>"$S/calls.log"; }
port_of() {
  [[ $1 =~ ^fastapi-edge-app@([0-9]+)\.service$ ]] || {
    echo "fake systemctl: bad unit '$1'" >&2
    exit 5
  }
  echo "${BASH_REMATCH[1]}"
}
alive() {
  local pid st
  [[ -f $S/$1.pid ]] || return 1
  pid=$(<"$S/$1.pid")
  kill -0 "$pid" 2>/dev/null || return 1
  st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ $st != Z && $st != X ]]
}
stop_port() {
  local p=$1 pid i
  if alive "$p"; then
    pid=$(<"$S/$p.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      alive "$p" || break
      sleep 0.1
    done
    if alive "$p"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$S/$p.pid"
}
start_port() {
  local p=$1
  echo "=== start $(date +%T) version ${APP_VERSION:-} ===" >>"$S/$p.log"
  # setsid: the app outlives this short-lived command, as under systemd.
  setsid env APP_PORT="$p" "$FAKE_RUN_APP" "$p" >>"$S/$p.log" 2>&1 </dev/null &
  echo $! >"$S/$p.pid"
}
now=0
args=()
for x in "$@"; do
  case $x in
    --now) now=1 ;;
    --quiet | --no-pager | --all | --plain | --no-legend | --lines=* | --type=*) ;;
    *) args+=("$x") ;;
  esac
done
cmd=${args[0]:-}
units=("${args[@]:1}")
case $cmd in
  daemon-reload) log "daemon-reload" ;;
  enable)
    for u in "${units[@]}"; do
      port_of "$u" >/dev/null
      touch "$S/enabled/$u"
    done
    log "enable ${units[*]}"
    ;;
  disable)
    for u in "${units[@]}"; do
      p=$(port_of "$u")
      log "disable$([[ $now == 1 ]] && echo ' --now') $p"
      rm -f "$S/enabled/$u"
      if [[ $now == 1 ]]; then stop_port "$p"; fi
    done
    ;;
  restart)
    p=$(port_of "${units[0]}")
    log "restart $p"
    stop_port "$p"
    start_port "$p"
    ;;
  start)
    p=$(port_of "${units[0]}")
    log "start $p"
    alive "$p" || start_port "$p"
    ;;
  stop)
    p=$(port_of "${units[0]}")
    log "stop $p"
    stop_port "$p"
    ;;
  is-active) alive "$(port_of "${units[0]}")" ;;
  status)
    p=$(port_of "${units[0]}")
    if alive "$p"; then
      echo "* ${units[0]} - fake: active (running) pid $(<"$S/$p.pid")"
    else
      echo "* ${units[0]} - fake: inactive (dead)"
      exit 3
    fi
    ;;
  list-units)
    for f in "$S"/*.pid; do
      [[ -e $f ]] || continue
      p=$(basename "$f" .pid)
      if alive "$p"; then echo "fastapi-edge-app@$p.service loaded active running fake instance"; fi
    done
    ;;
  *)
    echo "fake systemctl: unsupported: $*" >&2
    exit 1
    ;;
esac
