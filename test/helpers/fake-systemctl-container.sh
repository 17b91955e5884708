#!/usr/bin/env bash
# A stand-in for systemctl for the container template where there is no
# systemd (test/live/container-rollout.test.ts): each
# fastapi-edge-container@PORT.service is one REAL podman container started by
# files/scripts/run-container.sh PORT, as the unit's ExecStart does (in the
# foreground: without NOTIFY_SOCKET run-container.sh does not detach).
#
# start runs the unit's ExecStartPost= lines once the container runs;
# stop/restart run the unit file's own ExecStop= and ExecStopPost= lines (%i
# replaced by the port; a leading "-" ignores the exit status, as systemd
# does), then wait for the ExecStart process to end, for TimeoutStopSec (then
# SIGKILL), as systemd does. So a change to the unit's stop sequence is what
# the test exercises. start/restart return once the container runs, as
# systemd's do for the unit (Type=notify, conmon reports the container started).
#
# State in $FAKE_STATE: PORT.pid (the ExecStart process), PORT.log (its
# output), enabled/UNIT, calls.log (one line per call: "restart PORT", ...).
# Environment for run-container.sh (as in /etc/fastapi-edge/container.env):
# IMAGE, APP_VERSION, CONTAINER_NETWORK, ... and CONTAINERS_CONF where podman
# needs it. FAKE_RUN_CONTAINER is the path of run-container.sh, FAKE_UNIT_FILE
# that of fastapi-edge-container@.service. Optional: WANTS_DIR (where
# `disable` also removes the unit's link); FAKE_ETC_DIR: the unit's
# EnvironmentFile= lines are read at each start, as systemd does, with
# /etc/fastapi-edge replaced by FAKE_ETC_DIR (plain KEY=VALUE lines, as the
# rendered files are; they override the caller's environment), so a start runs
# what container-deploy.sh switched in (test/live/container-deploy.test.ts).
set -euo pipefail
S=${FAKE_STATE:?FAKE_STATE not set}
UNIT_FILE=${FAKE_UNIT_FILE:?FAKE_UNIT_FILE not set}
RUN_CONTAINER=${FAKE_RUN_CONTAINER:?FAKE_RUN_CONTAINER not set}
mkdir -p "$S/enabled"
log() { printf '%s %s\n' "$(date +%T.%3N)" "$*" >>"$S/calls.log"; }
port_of() {
  [[ $1 =~ ^fastapi-edge-container@([0-9]+)\.service$ ]] || {
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
# unit_lines KEY: the values of KEY= in the unit file, in order.
unit_lines() { sed -n "s/^$1=//p" "$UNIT_FILE"; }
# unit_value KEY DEFAULT: the last KEY= value when it is a whole number of seconds.
unit_value() {
  local t
  t=$(unit_lines "$1" | tail -n 1)
  [[ $t =~ ^[0-9]+$ ]] && echo "$t" || echo "$2"
}
# exec_lines KEY PORT: run each KEY= command line of the unit, as systemd would.
exec_lines() {
  local key=$1 p=$2 line ignore rc
  while IFS= read -r line; do
    [[ -n $line ]] || continue
    ignore=0
    if [[ $line == -* ]]; then
      ignore=1
      line=${line#-}
    fi
    line=${line//%i/$p}
    # Unit command lines are plain words here (no quoting, no variables).
    read -r -a argv <<<"$line"
    # The unit's own scripts, from this checkout (installed as /opt/fastapi-edge/bin/NAME).
    if [[ ${argv[0]} == /opt/fastapi-edge/bin/* ]]; then argv[0]=$(dirname -- "$RUN_CONTAINER")/${argv[0]##*/}; fi
    if "${argv[@]}" >>"$S/$p.log" 2>&1; then rc=0; else rc=$?; fi
    echo "=== $key exit $rc: $line ===" >>"$S/$p.log"
    if ((rc != 0 && !ignore)); then return "$rc"; fi
  done < <(unit_lines "$key")
  return 0
}
stop_port() {
  local p=$1 pid i limit rc=0
  if alive "$p"; then
    pid=$(<"$S/$p.pid")
    echo "=== stop $(date +%T.%3N) ===" >>"$S/$p.log"
    exec_lines ExecStop "$p" || rc=$?
    limit=$(($(unit_value TimeoutStopSec 90) * 10))
    for ((i = 0; i < limit; i++)); do
      alive "$p" || break
      sleep 0.1
    done
    if alive "$p"; then
      echo "=== stop: ExecStart process $pid still alive after TimeoutStopSec: SIGKILL ===" >>"$S/$p.log"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    exec_lines ExecStopPost "$p" || true
    echo "=== stopped $(date +%T.%3N) ===" >>"$S/$p.log"
  fi
  rm -f "$S/$p.pid"
  return "$rc"
}
# unit_env: the KEY=VALUE lines of the unit's EnvironmentFile= files (FAKE_ETC_DIR set).
unit_env() {
  local f optional kv
  [[ -n ${FAKE_ETC_DIR:-} ]] || return 0
  while IFS= read -r f; do
    optional=0
    if [[ $f == -* ]]; then
      optional=1
      f=${f#-}
    fi
    f=${f/#\/etc\/fastapi-edge/$FAKE_ETC_DIR}
    if [[ ! -r $f ]]; then
      ((optional)) && continue
      echo "fake systemctl: EnvironmentFile $f is missing" >&2
      return 1
    fi
    while IFS= read -r kv || [[ -n $kv ]]; do
      if [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then printf '%s\n' "$kv"; fi
    done <"$f"
  done < <(unit_lines EnvironmentFile)
}
start_port() {
  local p=$1 text vars=()
  text=$(unit_env) || return 1
  [[ -z $text ]] || mapfile -t vars <<<"$text"
  echo "=== start $(date +%T.%3N) image ${IMAGE:-} version ${APP_VERSION:-} ${vars[*]} ===" >>"$S/$p.log"
  # setsid: the container outlives this short-lived command, as under systemd.
  setsid env -u NOTIFY_SOCKET "${vars[@]}" "$RUN_CONTAINER" "$p" >>"$S/$p.log" 2>&1 </dev/null &
  echo $! >"$S/$p.pid"
  # Type=notify with --sdnotify=conmon: systemd's start (and restart) returns once
  # the container runs, not before. Wait for that too (TimeoutStartSec), so a stop
  # right after a start finds the container.
  local i limit
  limit=$(($(unit_value TimeoutStartSec 90) * 10))
  for ((i = 0; i < limit; i++)); do
    if [[ $(podman container inspect --format '{{.State.Running}}' "fastapi-edge-app-$p" 2>/dev/null) == true ]]; then
      # Then the unit's ExecStartPost= lines, with the unit's environment, as systemd runs them.
      if ((${#vars[@]})); then
        (
          export "${vars[@]}"
          exec_lines ExecStartPost "$p"
        )
      else
        exec_lines ExecStartPost "$p"
      fi
      return
    fi
    alive "$p" || return 1
    sleep 0.1
  done
  return 1
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
    log "restart $p"
    stop_port "$p"
    start_port "$p" || {
      log "restart $p: failed to start"
      exit 1
    }
    log "restart $p returned"
    ;;
  start)
    p=$(port_of "${units[0]}")
    log "start $p"
    alive "$p" || start_port "$p" || {
      log "start $p: failed to start"
      exit 1
    }
    ;;
  stop)
    p=$(port_of "${units[0]}")
    log "stop $p"
    stop_port "$p"
    log "stop $p returned"
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
      if alive "$p"; then echo "fastapi-edge-container@$p.service loaded active running fake instance"; fi
    done
    ;;
  *)
    echo "fake systemctl: unsupported: $*" >&2
    exit 1
    ;;
esac
