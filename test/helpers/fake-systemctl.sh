#!/usr/bin/env bash
# A stand-in for systemctl where there is no systemd (the rollout tests):
# each fastapi-edge-app@PORT.service is one REAL uvicorn process started
# through files/scripts/run-app.sh, as the unit's ExecStart does.
# `stop`/`restart` send SIGTERM and wait up to 10 s (then SIGKILL), like the
# unit's KillMode=mixed with a stop timeout.
#
# State in $FAKE_STATE: PORT.pid, PORT.log, enabled/UNIT, calls.log (one line
# per call: "restart PORT | PORT=CODE:VERSION ...", "enable PORT ...", ...).
# Environment for the app (as in /etc/fastapi-edge/app.env): APP_MODULE,
# APP_DIR, FORWARDED_ALLOW_IPS, PYTHON, APP_VERSION. FAKE_RUN_APP is the path
# of run-app.sh. Optional: FAKE_WATCH_PORTS (ports whose /healthz is recorded
# at each restart, to prove one-at-a-time order), FAKE_BROKEN_PORTS (ports
# whose app fails to import), FAKE_START_DELAY (seconds before a start),
# WANTS_DIR (where `disable` also removes the unit's link).
set -euo pipefail
S=${FAKE_STATE:?FAKE_STATE not set}
mkdir -p "$S/enabled"
log() { printf '%s\n' "$*" >>"$S/calls.log"; }
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
  local p=$1 module=${APP_MODULE:-main:app}
  [[ " ${FAKE_BROKEN_PORTS:-} " == *" $p "* ]] && module=no_such_module:app
  echo "=== start $(date +%T) version ${APP_VERSION:-} ===" >>"$S/$p.log"
  # setsid: the app outlives this short-lived command, as under systemd.
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid bash -c 'sleep "$1"; shift; exec "$@"' _ "${FAKE_START_DELAY:-0}" \
    env APP_MODULE="$module" APP_PORT="$p" "$FAKE_RUN_APP" "$p" >>"$S/$p.log" 2>&1 </dev/null &
  echo $! >"$S/$p.pid"
}
snapshot() {
  local out=() q body code
  for q in ${FAKE_WATCH_PORTS:-}; do
    body=$(curl -s --max-time 2 -w ' %{http_code}' "http://127.0.0.1:$q/healthz" || true)
    code=${body##* }
    if [[ $body =~ \"version\":\"([^\"]*)\" ]]; then out+=("$q=$code:${BASH_REMATCH[1]}"); else out+=("$q=$code"); fi
  done
  echo "${out[*]}"
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
    ports=()
    for u in "${units[@]}"; do
      ports+=("$(port_of "$u")")
      touch "$S/enabled/$u"
    done
    log "enable ${ports[*]}"
    ;;
  disable)
    for u in "${units[@]}"; do
      p=$(port_of "$u")
      log "disable$([[ $now == 1 ]] && echo ' --now') $p"
      rm -f "$S/enabled/$u" "${WANTS_DIR:-/nonexistent}/$u"
      if [[ $now == 1 ]]; then stop_port "$p"; fi
    done
    ;;
  restart)
    p=$(port_of "${units[0]}")
    log "restart $p | $(snapshot)"
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
