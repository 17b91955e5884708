#!/usr/bin/env bash
# app-rollout.sh [--no-prune | --prune-only] PORT...
#
# Rolling restart of the fastapi-edge app instances (systemd template
# fastapi-edge-app@.service, one instance per port), one at a time:
#   1. systemctl daemon-reload; systemctl enable every fastapi-edge-app@PORT
#   2. for each PORT in order: systemctl restart fastapi-edge-app@PORT, then poll
#      http://$HEALTH_HOST:PORT$HEALTH_PATH (or, with HEALTH_UDS_DIR, the instance's
#      socket HEALTH_UDS_DIR/app-PORT.sock) until HTTP 200 (and, if EXPECT_VERSION
#      is set, until the JSON "version" equals it) within HEALTH_TIMEOUT seconds.
#      On timeout: print the unit's status and journal tail, exit 1 and leave
#      the remaining ports untouched.
#   3. prune: disable --now every other fastapi-edge-app@* instance (shrinking
#      the process count). --no-prune skips this; --prune-only does only this.
#      --prune-only with no PORT stops and disables every instance: the edge's
#      own processes once app hosts serve the upstream (docs/multi-host.md).
#
# Environment:
#   SYSTEMCTL        supervisor command (default systemctl; tests use a fake)
#   JOURNALCTL       journal command for failure output (default journalctl)
#   UNIT_TEMPLATE    template name (default fastapi-edge-app)
#   HEALTH_PATH      health URL path (default /healthz)
#   HEALTH_HOST      IPv4 address the instances listen on (default 127.0.0.1; an
#                    app host behind the edge binds its private address only)
#   HEALTH_UDS_DIR   when set, the instances serve unix sockets there (appUpstream
#                    unix, /run/fastapi-edge): the health check is
#                    curl --unix-socket HEALTH_UDS_DIR/app-PORT.sock http://localhost$HEALTH_PATH
#                    and HEALTH_HOST is not used
#   HEALTH_TIMEOUT   seconds to wait per instance (default 60)
#   HEALTH_INTERVAL  seconds between polls (default 0.5)
#   EXPECT_VERSION   when set, the "version" field the health JSON must report
#   JOURNAL_LINES    journal lines shown on failure (default 50)
#   SETTLE_SECONDS   after an instance is healthy, wait this long before
#                    restarting the next one (default 0). Set it above nginx's
#                    upstream fail_timeout: nginx stops sending to an instance
#                    that refused connections while it restarted, for
#                    fail_timeout, and restarting the next one inside that
#                    window leaves nginx no live upstream (502/503).
#   WANTS_DIR        where enabled instances are linked
#                    (default /etc/systemd/system/multi-user.target.wants)
#   REPLACES_TEMPLATE the other runtime's template (fastapi-edge-container for
#                    the uvicorn units, fastapi-edge-app for the containers): its
#                    instance on PORT is stopped and disabled right before PORT's
#                    restart, so a change of runtime rolls one port at a time like
#                    any release, and prune stops its instances on other ports.
#                    When PORT's new instance then fails (it does not start, or is
#                    not healthy in time), it is stopped and disabled and the
#                    retired instance is enabled and started again, so the port
#                    keeps serving the old runtime; the rollout still exits 1.
#
# Exit: 0 all instances healthy; 1 an instance failed (or systemctl failed); 64 usage.
set -euo pipefail
shopt -s nullglob

SYSTEMCTL=${SYSTEMCTL:-systemctl}
JOURNALCTL=${JOURNALCTL:-journalctl}
UNIT_TEMPLATE=${UNIT_TEMPLATE:-fastapi-edge-app}
HEALTH_PATH=${HEALTH_PATH:-/healthz}
HEALTH_HOST=${HEALTH_HOST:-127.0.0.1}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-60}
HEALTH_INTERVAL=${HEALTH_INTERVAL:-0.5}
JOURNAL_LINES=${JOURNAL_LINES:-50}
SETTLE_SECONDS=${SETTLE_SECONDS:-0}
WANTS_DIR=${WANTS_DIR:-/etc/systemd/system/multi-user.target.wants}
REPLACES_TEMPLATE=${REPLACES_TEMPLATE:-}
HEALTH_UDS_DIR=${HEALTH_UDS_DIR:-}

log() { echo "app-rollout: $*"; }
die() {
  echo "app-rollout: error: $*" >&2
  exit 1
}
usage() {
  echo "usage: app-rollout.sh [--no-prune] PORT... | app-rollout.sh --prune-only [PORT...]" >&2
  exit 64
}

prune=1
restart=1
case ${1:-} in
  --no-prune)
    prune=0
    shift
    ;;
  --prune-only)
    restart=0
    shift
    ;;
  -*) usage ;;
esac
(( $# >= 1 || !restart )) || usage

ports=()
for p in "$@"; do
  if ! [[ $p =~ ^[0-9]{1,5}$ ]] || (( 10#$p < 1 || 10#$p > 65535 )); then
    echo "app-rollout: error: invalid port '$p'" >&2
    usage
  fi
  p=$((10#$p))
  for q in "${ports[@]}"; do
    [[ $q == "$p" ]] && die "port $p listed twice"
  done
  ports+=("$p")
done

[[ $HEALTH_TIMEOUT =~ ^[0-9]+$ ]] || die "HEALTH_TIMEOUT must be a whole number of seconds"
[[ $UNIT_TEMPLATE =~ ^[A-Za-z0-9_.:-]+$ ]] || die "invalid UNIT_TEMPLATE '$UNIT_TEMPLATE'"
[[ -z $REPLACES_TEMPLATE || ($REPLACES_TEMPLATE =~ ^[A-Za-z0-9_.:-]+$ && $REPLACES_TEMPLATE != "$UNIT_TEMPLATE") ]] ||
  die "invalid REPLACES_TEMPLATE '$REPLACES_TEMPLATE'"
[[ $HEALTH_INTERVAL =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "HEALTH_INTERVAL must be a number of seconds"
[[ $HEALTH_PATH == /* ]] || die "HEALTH_PATH must start with /"
[[ $HEALTH_HOST =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "HEALTH_HOST must be an IPv4 address"
[[ $SETTLE_SECONDS =~ ^[0-9]+$ ]] || die "SETTLE_SECONDS must be a whole number of seconds"
[[ -z $HEALTH_UDS_DIR || $HEALTH_UDS_DIR == /* ]] || die "HEALTH_UDS_DIR must be an absolute path"
command -v curl >/dev/null 2>&1 || die "curl is required"
read -r -a systemctl_cmd <<<"$SYSTEMCTL"
command -v "${systemctl_cmd[0]}" >/dev/null 2>&1 || die "supervisor command '$SYSTEMCTL' not found"

unit() { printf '%s@%s.service' "$UNIT_TEMPLATE" "$1"; }
sctl() { "${systemctl_cmd[@]}" "$@"; }
# Stop and disable the other runtime's instance on a port, when it is there at all.
# Sets retired=1 when it did.
retired=0
retire_other() {
  retired=0
  [[ -n $REPLACES_TEMPLATE ]] || return 0
  local u="$REPLACES_TEMPLATE@$1.service" state
  state=$(sctl is-enabled "$u" 2>/dev/null || true)
  if [[ $state == enabled ]] || sctl is-active --quiet "$u" 2>/dev/null; then
    log "stopping and disabling $u (replaced by $(unit "$1"))"
    sctl disable --now --quiet "$u" || die "$SYSTEMCTL disable --now $u failed"
    retired=1
  fi
}
# The new runtime failed on a port whose old instance retire_other stopped: stop the
# new one (systemd would keep restarting it) and bring the old one back, so the port
# keeps serving what it served before. Best effort: the rollout fails either way.
reinstate_other() {
  ((retired)) || return 0
  local old="$REPLACES_TEMPLATE@$1.service"
  log "putting $old back on port $1 ($(unit "$1") failed)"
  sctl disable --now --quiet "$(unit "$1")" || log "warning: $SYSTEMCTL disable --now $(unit "$1") failed"
  if sctl enable --quiet "$old" && sctl start "$old" && EXPECT_VERSION='' wait_healthy "$1"; then
    log "$old is serving port $1 again"
  else
    log "warning: $old did not come back on port $1"
  fi
}

show_diagnostics() {
  local u=$1
  {
    echo "----- $SYSTEMCTL status $u -----"
    sctl status --no-pager --lines=0 "$u" 2>&1 || true
    read -r -a journal_cmd <<<"$JOURNALCTL"
    if command -v "${journal_cmd[0]}" >/dev/null 2>&1; then
      echo "----- $JOURNALCTL -u $u (last $JOURNAL_LINES lines) -----"
      "${journal_cmd[@]}" -u "$u" -n "$JOURNAL_LINES" --no-pager 2>&1 || true
    fi
    echo "-----"
  } >&2
}

# Poll until healthy; prints the last observation on failure.
wait_healthy() {
  local port=$1 url body code rc version deadline last
  local via=()
  if [[ -n $HEALTH_UDS_DIR ]]; then
    via=(--unix-socket "${HEALTH_UDS_DIR%/}/app-$port.sock")
    url="http://localhost$HEALTH_PATH"
  else
    url="http://$HEALTH_HOST:$port$HEALTH_PATH"
  fi
  # Microseconds from EPOCHREALTIME: $SECONDS counts whole seconds, so a deadline of
  # SECONDS + N could expire after N - 1 seconds and some.
  deadline=$((${EPOCHREALTIME/[.,]/} + HEALTH_TIMEOUT * 1000000))
  last="no response yet"
  while :; do
    if body=$(curl -s --max-time 2 -w '\n%{http_code}' "${via[@]}" "$url"); then rc=0; else rc=$?; fi
    code=${body##*$'\n'}
    body=${body%$'\n'*}
    [[ $code =~ ^[0-9]{3}$ ]] || code=000
    if [[ $code == 200 ]]; then
      if [[ -z ${EXPECT_VERSION:-} ]]; then
        return 0
      fi
      version=
      if [[ $body =~ \"version\"[[:space:]]*:[[:space:]]*\"([^\"]*)\" ]]; then
        version=${BASH_REMATCH[1]}
      fi
      [[ $version == "$EXPECT_VERSION" ]] && return 0
      last="HTTP 200 but version '${version:-<none>}' != expected '$EXPECT_VERSION'"
    elif [[ $code == 000 ]]; then
      last="no HTTP response (curl exit $rc)"
    else
      last="HTTP $code: ${body:0:200}"
    fi
    if ((${EPOCHREALTIME/[.,]/} >= deadline)); then
      echo "app-rollout: error: $(unit "$port") not healthy at ${via[1]:+${via[1]} }$url after ${HEALTH_TIMEOUT}s: $last" >&2
      return 1
    fi
    sleep "$HEALTH_INTERVAL"
  done
}

if (( restart )); then
  sctl daemon-reload || die "$SYSTEMCTL daemon-reload failed"
  units=()
  for p in "${ports[@]}"; do units+=("$(unit "$p")"); done
  sctl enable --quiet "${units[@]}" || die "$SYSTEMCTL enable ${units[*]} failed"

  i=0
  for p in "${ports[@]}"; do
    i=$((i + 1))
    u=$(unit "$p")
    retire_other "$p"
    log "[$i/${#ports[@]}] restarting $u"
    start=$SECONDS
    if ! sctl restart "$u"; then
      show_diagnostics "$u"
      reinstate_other "$p"
      die "$SYSTEMCTL restart $u failed; rollout stopped (remaining ports untouched)"
    fi
    if ! wait_healthy "$p"; then
      show_diagnostics "$u"
      reinstate_other "$p"
      die "rollout stopped at $u (remaining ports untouched)"
    fi
    log "[$i/${#ports[@]}] $u healthy after $((SECONDS - start))s${EXPECT_VERSION:+ (version $EXPECT_VERSION)}"
    if (( i < ${#ports[@]} && SETTLE_SECONDS > 0 )); then
      log "[$i/${#ports[@]}] waiting ${SETTLE_SECONDS}s before the next instance (SETTLE_SECONDS)"
      sleep "$SETTLE_SECONDS"
    fi
  done
fi

if (( prune )); then
  # Instances the supervisor knows about (loaded, any state) + enabled links.
  declare -A seen=()
  extra=()
  candidates=()
  # First column is the unit name (a failed unit may be prefixed by a bullet).
  while read -r first second _; do
    if [[ $first == *@*.service ]]; then candidates+=("$first"); else candidates+=("$second"); fi
  done < <(sctl list-units --all --plain --no-legend --type=service "$UNIT_TEMPLATE@*" 2>/dev/null || true)
  for link in "$WANTS_DIR/$UNIT_TEMPLATE"@*.service; do
    candidates+=("$(basename -- "$link")")
  done
  for name in "${candidates[@]}"; do
    [[ $name =~ ^${UNIT_TEMPLATE//./\\.}@([0-9]+)\.service$ ]] || continue
    p=${BASH_REMATCH[1]}
    [[ -n ${seen[$p]:-} ]] && continue
    seen[$p]=1
    keep=0
    for q in "${ports[@]}"; do [[ $q == "$p" ]] && keep=1; done
    (( keep )) || extra+=("$p")
  done
  for p in "${extra[@]}"; do
    u=$(unit "$p")
    log "stopping and disabling $u (port not in the instance list)"
    sctl disable --now --quiet "$u" || die "$SYSTEMCTL disable --now $u failed"
  done
  (( ${#extra[@]} > 0 )) || log "no extra instances to stop"
  if [[ -n $REPLACES_TEMPLATE ]]; then
    for link in "$WANTS_DIR/$REPLACES_TEMPLATE"@*.service; do
      [[ $(basename -- "$link") =~ @([0-9]+)\.service$ ]] && retire_other "${BASH_REMATCH[1]}"
    done
  fi
fi

log "done in ${SECONDS}s: ${ports[*]}"
