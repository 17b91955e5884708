#!/usr/bin/env bash
# A local ACME server (Pebble, Debian package) for end-to-end tests, on 127.0.0.1 only.
# The guest of test/e2e/vps.sh reaches it as 10.0.2.2 (QEMU user networking maps that address to
# the host's loopback). See docs/local-vps.md.
#
#   pebble.sh start   start pebble-challtestsrv (fake DNS: every A query -> 127.0.0.1) and pebble,
#                     wait until the ACME directory answers, print the env (if both already run,
#                     just print the env)
#   pebble.sh stop    stop both by their PID files (safe when not running)
#   pebble.sh env     print the KEY=VALUE lines (values never contain spaces)
#
# PEBBLE_ROOTS names a file holding the issuing root of every Pebble start in this run dir, so a
# certificate issued before a restart still verifies against it.
#
# HTTP-01 validation: Pebble connects to 127.0.0.1:$VPS_ACME_HTTP_PORT, which vps.sh forwards to
# the guest's port 80. Pebble's issuing root is new at every start: fetch it from PEBBLE_ROOT_URL.
set -euo pipefail

CACHE_ROOT=$(realpath -m "${FASTAPI_EDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastapi-edge}")
PEBBLE_RUN_DIR=$(realpath -m "${PEBBLE_RUN_DIR:-$CACHE_ROOT/run/pebble}")
PEBBLE_PORT=${PEBBLE_PORT:-14000}
PEBBLE_MGMT_PORT=${PEBBLE_MGMT_PORT:-15000}
PEBBLE_TLS_PORT=${PEBBLE_TLS_PORT:-5001}
VPS_ACME_HTTP_PORT=${VPS_ACME_HTTP_PORT:-5002}
PEBBLE_DNS_PORT=${PEBBLE_DNS_PORT:-8053}
PEBBLE_CHALLTESTSRV_PORT=${PEBBLE_CHALLTESTSRV_PORT:-8055}
PEBBLE_GUEST_HOST=${PEBBLE_GUEST_HOST:-10.0.2.2}
PEBBLE_START_TIMEOUT=${PEBBLE_START_TIMEOUT:-30}

CA_KEY=$PEBBLE_RUN_DIR/ca.key
CA_PEM=$PEBBLE_RUN_DIR/ca.pem
CERT=$PEBBLE_RUN_DIR/listener.pem
CERT_KEY=$PEBBLE_RUN_DIR/listener.key
SAN_STAMP=$PEBBLE_RUN_DIR/listener.san
CONFIG=$PEBBLE_RUN_DIR/pebble-config.json
readonly LISTENER_SAN="DNS:localhost, IP:127.0.0.1, IP:$PEBBLE_GUEST_HOST"

log() { printf 'pebble: %s\n' "$*" >&2; }
die() { printf 'pebble: error: %s\n' "$*" >&2; exit 1; }

check_settings() {
  local v
  for v in PEBBLE_PORT PEBBLE_MGMT_PORT PEBBLE_TLS_PORT VPS_ACME_HTTP_PORT PEBBLE_DNS_PORT \
    PEBBLE_CHALLTESTSRV_PORT PEBBLE_START_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
  done
  [[ $PEBBLE_GUEST_HOST =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "PEBBLE_GUEST_HOST must be an IPv4 address"
}

ensure_pebble() {
  command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1 \
    && command -v openssl >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 && return 0
  ((EUID == 0)) || die "install the Debian packages pebble, openssl and curl (or run as root)"
  log "installing pebble"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q pebble openssl curl >&2
}

# A throwaway CA and the listener certificate it signs; kept in the run dir and reused while
# valid for another day and made for the same SANs.
ensure_certs() {
  if [[ -s $CA_PEM && -s $CA_KEY && -s $CERT && -s $CERT_KEY && -s $SAN_STAMP ]] \
    && [[ $(cat "$SAN_STAMP") == "$LISTENER_SAN" ]] \
    && openssl x509 -in "$CERT" -noout -checkend 86400 >/dev/null \
    && openssl x509 -in "$CA_PEM" -noout -checkend 86400 >/dev/null; then
    return 0
  fi
  log "making a throwaway CA and a listener certificate ($LISTENER_SAN)"
  local cnf=$PEBBLE_RUN_DIR/openssl.cnf
  cat >"$cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = fastapi-edge e2e throwaway CA
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $LISTENER_SAN
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  (
    umask 077
    openssl req -x509 -config "$cnf" -extensions v3_ca -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -nodes -keyout "$CA_KEY" -out "$CA_PEM" -days 3650 2>/dev/null
    openssl req -new -config "$cnf" -subj /CN=localhost -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -nodes -keyout "$CERT_KEY" -out "$PEBBLE_RUN_DIR/listener.csr" 2>/dev/null
    openssl x509 -req -in "$PEBBLE_RUN_DIR/listener.csr" -CA "$CA_PEM" -CAkey "$CA_KEY" \
      -set_serial "0x$(openssl rand -hex 16)" -days 825 -extfile "$cnf" -extensions v3_leaf \
      -out "$CERT" 2>/dev/null
  )
  chmod 644 "$CA_PEM" "$CERT"
  rm -f "$PEBBLE_RUN_DIR/listener.csr"
  printf '%s\n' "$LISTENER_SAN" >"$SAN_STAMP"
}

write_config() {
  cat >"$CONFIG" <<EOF
{
  "pebble": {
    "listenAddress": "127.0.0.1:$PEBBLE_PORT",
    "managementListenAddress": "127.0.0.1:$PEBBLE_MGMT_PORT",
    "certificate": "$CERT",
    "privateKey": "$CERT_KEY",
    "httpPort": $VPS_ACME_HTTP_PORT,
    "tlsPort": $PEBBLE_TLS_PORT,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
EOF
}

# PID of the named process if it runs (checked against its command line, against PID reuse).
proc_pid() {
  local name=$1 bin=$2 pid
  [[ -s $PEBBLE_RUN_DIR/$name.pid ]] || return 1
  read -r pid <"$PEBBLE_RUN_DIR/$name.pid" || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ $(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1) == *"$bin" ]] || return 1
  printf '%s\n' "$pid"
}

# Starts a command in its own session; the command itself writes its PID file (exec keeps the PID).
# The lock (fd 9) is not passed on: a daemon holding it would block every later start/stop.
spawn() {
  local name=$1 i
  shift
  rm -f "$PEBBLE_RUN_DIR/$name.pid"
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'echo "$$" >"$0"; exec "$@"' "$PEBBLE_RUN_DIR/$name.pid" "$@" \
    </dev/null >"$PEBBLE_RUN_DIR/$name.log" 2>&1 9>&- &
  for ((i = 0; i < 50; i++)); do
    [[ -s $PEBBLE_RUN_DIR/$name.pid ]] && return 0
    sleep 0.1
  done
  die "$name did not start (log: $PEBBLE_RUN_DIR/$name.log)"
}

wait_for() {
  local name=$1 bin=$2
  shift 2
  local deadline=$((SECONDS + PEBBLE_START_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! proc_pid "$name" "$bin" >/dev/null; then
      tail -n 20 "$PEBBLE_RUN_DIR/$name.log" >&2 || true
      die "$name exited (log: $PEBBLE_RUN_DIR/$name.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$PEBBLE_RUN_DIR/$name.log" >&2 || true
      die "$name not ready after ${PEBBLE_START_TIMEOUT}s (log: $PEBBLE_RUN_DIR/$name.log)"
    fi
    sleep 0.2
  done
}

kill_proc() {
  local name=$1 bin=$2 pid i
  if pid=$(proc_pid "$name" "$bin"); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    log "stopped $name (pid $pid)"
  fi
  rm -f "$PEBBLE_RUN_DIR/$name.pid"
}

print_env() {
  printf '%s\n' \
    "ACME_DIRECTORY_URL_FOR_GUEST=https://$PEBBLE_GUEST_HOST:$PEBBLE_PORT/dir" \
    "ACME_DIRECTORY_URL=https://127.0.0.1:$PEBBLE_PORT/dir" \
    "ACME_CA_BUNDLE=$CA_PEM" \
    "PEBBLE_ROOT_URL=https://127.0.0.1:$PEBBLE_MGMT_PORT/roots/0" \
    "PEBBLE_MGMT_URL=https://127.0.0.1:$PEBBLE_MGMT_PORT" \
    "PEBBLE_CHALLTESTSRV_URL=http://127.0.0.1:$PEBBLE_CHALLTESTSRV_PORT" \
    "PEBBLE_HTTP_PORT=$VPS_ACME_HTTP_PORT" \
    "PEBBLE_RUN_DIR=$PEBBLE_RUN_DIR" \
    "PEBBLE_ROOTS=$PEBBLE_RUN_DIR/roots.pem"
}

# Adds this start's issuing root to roots.pem (once).
save_root() {
  local root
  root=$(curl -sf --cacert "$CA_PEM" "https://127.0.0.1:$PEBBLE_MGMT_PORT/roots/0") || die "could not fetch Pebble's root"
  touch "$PEBBLE_RUN_DIR/roots.pem"
  grep -qF "$(sed -n 2p <<<"$root")" "$PEBBLE_RUN_DIR/roots.pem" || printf '%s\n' "$root" >>"$PEBBLE_RUN_DIR/roots.pem"
}

cmd_start() {
  ensure_pebble
  install -d -m 700 "$CACHE_ROOT" "$PEBBLE_RUN_DIR"
  exec 9>"$PEBBLE_RUN_DIR/.lock"
  flock 9
  if proc_pid challtestsrv pebble-challtestsrv >/dev/null && proc_pid pebble pebble >/dev/null \
    && curl -sf --cacert "$CA_PEM" "https://127.0.0.1:$PEBBLE_PORT/dir" >/dev/null 2>&1; then
    log "already running"
    print_env
    return 0
  fi
  kill_proc pebble pebble
  kill_proc challtestsrv pebble-challtestsrv
  ensure_certs
  write_config

  spawn challtestsrv pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
    -http01 "" -https01 "" -tlsalpn01 "" -dns01 "127.0.0.1:$PEBBLE_DNS_PORT" \
    -management "127.0.0.1:$PEBBLE_CHALLTESTSRV_PORT"
  wait_for challtestsrv pebble-challtestsrv curl -s -o /dev/null "http://127.0.0.1:$PEBBLE_CHALLTESTSRV_PORT/"

  spawn pebble env PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
    pebble -config "$CONFIG" -dnsserver "127.0.0.1:$PEBBLE_DNS_PORT"
  wait_for pebble pebble curl -sf --cacert "$CA_PEM" "https://127.0.0.1:$PEBBLE_PORT/dir"
  log "ACME directory up at https://127.0.0.1:$PEBBLE_PORT/dir (pebble pid $(cat "$PEBBLE_RUN_DIR/pebble.pid"))"
  save_root
  print_env
}

cmd_stop() {
  [[ -d $PEBBLE_RUN_DIR ]] || return 0
  exec 9>"$PEBBLE_RUN_DIR/.lock"
  flock 9
  kill_proc pebble pebble
  kill_proc challtestsrv pebble-challtestsrv
}

main() {
  local cmd=${1:-}
  check_settings
  case $cmd in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) print_env ;;
    *)
      sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
      exit 2
      ;;
  esac
}

main "$@"
