#!/usr/bin/env bash
# run-container.sh PORT — exec podman for one fastapi-edge app container.
# run-container.sh --release-port PORT — take PORT out of the port guard (ExecStopPost).
# run-container.sh --pin-bridge PORT — fix the network bridge's MAC address (ExecStartPost).
#
# ExecStart of fastapi-edge-container@.service (PORT = instance name %i): runs
# the app image as container fastapi-edge-app-PORT on the podman network
# CONTAINER_NETWORK, published on 127.0.0.1:PORT only (container port 8000),
# uvicorn inside trusting X-Forwarded-For/-Proto only from the network's
# gateway: podman's port forwarding masquerades every connection to
# 127.0.0.1:PORT (nginx's included) to the gateway address, so that address, and
# not 127.0.0.1, is the proxy the app sees (measured with podman 4.3/netavark 1.4
# and podman 5.4/netavark 1.14: docs/containers.md).
#
# Under systemd (NOTIFY_SOCKET set, Type=notify) the container runs detached
# with --sdnotify=conmon --cgroups=split, as Quadlet's units do: conmon becomes
# the main process and reports readiness. Without NOTIFY_SOCKET (tests, a
# shell) podman runs in the foreground and forwards SIGTERM to the container.
# --replace removes a leftover container of the same name first, so a restart
# is idempotent; --rm removes it when it stops.
#
# The port guard (CONTAINER_PORT_GUARD=nft; the program turns it on). podman (rootful) keeps a
# listening socket on 127.0.0.1:PORT in conmon for as long as the container
# lives ("port reservation"). Normal traffic never reaches it: netavark's DNAT
# redirects every connection to the container. A connection that is not
# redirected while conmon listens (the DNAT rule not yet or no longer in
# place) would be accepted by the kernel on that socket and never answered:
# the client hangs (a curl hung 17 minutes in a Debian 13 guest), nginx waits
# proxy_read_timeout. With the guard, before podman starts, PORT goes into an
# nftables set whose one rule, in the output hook after NAT, resets every
# connection to 127.0.0.1:PORT that was not redirected: it is refused at once,
# which nginx retries on the next upstream (a POST too: nothing was sent).
# `run-container.sh --release-port PORT` (the unit's ExecStopPost) takes the
# port out of the set. Needs nft (package nftables). Off unless set; the
# program's container.env sets it: on Debian 12 (podman 4.3, netavark 1.4)
# conmon's socket never held a connection during restarts under load, but the
# e2e's switch to containers on a Debian 13 guest (podman 5.4) had 6 of 23,536
# requests hang there until wrk's 15 s timeout (docs/containers.md).
#
# The bridge's MAC address (`--pin-bridge`, the unit's ExecStartPost). A Linux
# bridge whose address was never set takes the lowest MAC address of its ports,
# so it changes whenever a container with a lower one joins or leaves.
# netavark before 1.9 (Debian 12 has 1.4) leaves it so. Each change flushes the
# host's neighbour entries on the bridge, and the containers still hold the old
# address for their gateway. Connections to the other containers then fail
# for a moment: the landing CI of 2026-11-30 had a kill -9 of one container
# make nginx's connects to the other, healthy one fail with "No route to host"
# 3 s later, and with no other upstream left, a 502. Pinning sets the bridge's
# current address as its own (`ip link set dev BRIDGE address SAME`: the kernel
# marks it set and stops following the ports), so nothing on the wire changes
# now and nothing changes later. netavark 1.9+ (Debian 13) creates bridges with
# a fixed address already: then this does nothing. A bridge netavark deletes
# with its last container and creates again is pinned again by the next start.
#
# Environment (normally from /etc/fastapi-edge/container.env):
#   IMAGE                 image to run, present locally (never pulled here):
#                         localhost/fastapi-edge-app:RELEASE or sha256:ID
# Optional:
#   CONTAINER_NETWORK     podman network (default fastapi-edge; container-network.sh creates it)
#   FORWARDED_ALLOW_IPS   proxies trusted for X-Forwarded-*; default: the network's
#                         gateway address(es). When set, it must include every gateway
#                         address, or nginx's own requests would be untrusted (exit 78).
#   APP_MODULE            ASGI app (default main:app)
#   APP_DIR_IN_IMAGE      the app's directory in the image (default /app; not app.env's APP_DIR)
#   APP_VERSION           passed to the app (the image's own APP_VERSION otherwise)
#   UVICORN_KEEPALIVE     keep-alive timeout in s (default 75; above nginx's)
#   CONTAINER_LOG_DRIVER  default passthrough (the container's stdout/stderr are the
#                         unit's, so the journal files them under the unit); journald
#                         and k8s-file also work. A terminal gets k8s-file (passthrough
#                         refuses a tty).
#   CONTAINER_ENV_FILE    extra KEY=VALUE file passed with --env-file (e.g. FASTAPI_EDGE_STATS=1)
#   CONTAINER_MEMORY      memory limit (podman --memory, e.g. 512m)
#   CONTAINER_PORT_GUARD  off (default) or nft (the port guard above)
#   CONTAINER_PORT_GUARD_TABLE  nftables table (family inet) of the guard (default fastapi_edge_ports)
#   PODMAN                podman command (default podman)
#   NFT                   nft command (default nft)
# Exit: 64 usage, 78 configuration; otherwise podman's own status.
set -euo pipefail

die() {
  local code=$1
  shift
  echo "run-container.sh: error: $*" >&2
  exit "$code"
}

mode=run
case ${1:-} in
  --release-port) mode=release ;;
  --pin-bridge) mode=pin ;;
esac
[[ $mode == run ]] || shift
[[ $# -eq 1 ]] || die 64 "usage: run-container.sh [--release-port|--pin-bridge] PORT (got $# arguments)"
port=$1
if ! [[ $port =~ ^[0-9]{1,5}$ ]] || (( 10#$port < 1 || 10#$port > 65535 )); then
  die 64 "PORT must be an integer 1-65535, got '$port'"
fi
port=$((10#$port))

# The port guard (see the header): an nftables table with the set of guarded
# ports and one rule, in the output hook after NAT, that answers a connection
# to 127.0.0.1:PORT that podman's DNAT did not redirect with a TCP reset.
guard=${CONTAINER_PORT_GUARD:-off}
[[ $guard =~ ^(nft|off)$ ]] || die 78 "CONTAINER_PORT_GUARD must be nft or off, got '$guard'"
guard_table=${CONTAINER_PORT_GUARD_TABLE:-fastapi_edge_ports}
[[ $guard_table =~ ^[A-Za-z][A-Za-z0-9_]{0,63}$ ]] || die 78 "invalid CONTAINER_PORT_GUARD_TABLE '$guard_table'"
read -r -a nft <<<"${NFT:-nft}"

guard_port() {
  command -v "${nft[0]}" >/dev/null 2>&1 ||
    die 78 "nft not found: the port guard needs nftables (apt-get install nftables), or set CONTAINER_PORT_GUARD=off"
  # One transaction: idempotent (add = create if missing; the chain's one rule
  # is replaced), and atomic when several instances start at once.
  "${nft[@]}" -f - <<EOF || die 78 "could not install the port guard for $port (nftables table inet $guard_table)"
add table inet $guard_table
add set inet $guard_table ports { type inet_service; }
add chain inet $guard_table output { type filter hook output priority filter; policy accept; }
flush chain inet $guard_table output
add rule inet $guard_table output ip daddr 127.0.0.1 tcp dport @ports counter reject with tcp reset
add element inet $guard_table ports { $port }
EOF
}

if [[ $mode == release ]]; then
  # ExecStopPost: the port is free for anything else again (e.g. the venv unit).
  # Whatever CONTAINER_PORT_GUARD says now: it may have been nft when the port was added.
  command -v "${nft[0]}" >/dev/null 2>&1 || exit 0
  "${nft[@]}" delete element inet "$guard_table" ports "{ $port }" 2>/dev/null || true
  exit 0
fi

network=${CONTAINER_NETWORK:-fastapi-edge}
[[ $network =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die 78 "invalid CONTAINER_NETWORK '$network'"
read -r -a podman <<<"${PODMAN:-podman}"
command -v "${podman[0]}" >/dev/null 2>&1 || die 78 "podman not found (install the podman package)"

if [[ $mode == pin ]]; then
  # See "The bridge's MAC address" in the header. Waits up to 10 s for the
  # bridge (netavark makes it when the first container starts).
  bridge=$("${podman[@]}" network inspect --format '{{.NetworkInterface}}' "$network" 2>/dev/null) ||
    die 78 "podman network '$network' does not exist (container-network.sh creates it)"
  [[ $bridge =~ ^[A-Za-z0-9_.-]{1,15}$ ]] || die 78 "podman network '$network' names no bridge interface (got '$bridge')"
  sys=/sys/class/net/$bridge
  for ((i = 0; i < 100; i++)); do
    [[ -r $sys/addr_assign_type ]] && break
    sleep 0.1
  done
  [[ -r $sys/addr_assign_type ]] || die 1 "bridge $bridge of network '$network' did not appear within 10 s; its MAC address is not pinned"
  # 3 = NET_ADDR_SET: netavark 1.9+ set it, or an earlier start pinned it.
  [[ $(<"$sys/addr_assign_type") == 3 ]] && exit 0
  mac=$(<"$sys/address")
  ip link set dev "$bridge" address "$mac" || die 1 "could not pin the MAC address of bridge $bridge"
  echo "run-container.sh: pinned bridge $bridge's MAC address to $mac (it no longer follows its ports)"
  exit 0
fi

[[ -n ${IMAGE:-} ]] || die 78 "IMAGE is not set (expected in /etc/fastapi-edge/container.env)"
app_module=${APP_MODULE:-main:app}
app_dir=${APP_DIR_IN_IMAGE:-/app}
keepalive=${UVICORN_KEEPALIVE:-75}
[[ $keepalive =~ ^[0-9]+$ ]] || die 78 "UVICORN_KEEPALIVE must be a whole number of seconds, got '$keepalive'"
log_driver=${CONTAINER_LOG_DRIVER:-passthrough}
[[ $log_driver =~ ^(passthrough|journald|k8s-file|none)$ ]] || die 78 "unsupported CONTAINER_LOG_DRIVER '$log_driver'"
if [[ $log_driver == passthrough ]] && { [[ -t 0 ]] || [[ -t 1 ]] || [[ -t 2 ]]; }; then
  log_driver=k8s-file
fi

"${podman[@]}" image exists "$IMAGE" ||
  die 78 "image '$IMAGE' is not in local storage (container-load.sh / container-pull.sh first)"

gateways=$("${podman[@]}" network inspect --format '{{range .Subnets}}{{.Gateway}} {{end}}' "$network" 2>/dev/null) ||
  die 78 "podman network '$network' does not exist (container-network.sh creates it)"
read -r -a gateways <<<"$gateways"
(( ${#gateways[@]} > 0 )) || die 78 "podman network '$network' has no gateway address"

if [[ -z ${FORWARDED_ALLOW_IPS:-} ]]; then
  allow=$(IFS=,; echo "${gateways[*]}")
else
  allow=${FORWARDED_ALLOW_IPS// /}
  for gw in "${gateways[@]}"; do
    [[ ",$allow," == *",$gw,"* ]] ||
      die 78 "FORWARDED_ALLOW_IPS='$FORWARDED_ALLOW_IPS' lacks $gw, the address nginx's connections arrive from through podman's port forwarding on network '$network' (leave FORWARDED_ALLOW_IPS unset to use the gateway)"
  done
fi

args=(
  run --rm --replace --pull=never
  --name "fastapi-edge-app-$port"
  --label "io.fastapi-edge.port=$port"
  --network "$network"
  --publish "127.0.0.1:$port:8000"
  --log-driver "$log_driver"
  --read-only --tmpfs "/tmp:rw,nosuid,nodev,size=64m"
  --cap-drop all --security-opt no-new-privileges
  --stop-timeout 25
  --env "APP_PORT=$port"
  --env "FORWARDED_ALLOW_IPS=$allow"
)
[[ -n ${APP_VERSION:-} ]] && args+=(--env "APP_VERSION=$APP_VERSION")
if [[ -n ${CONTAINER_ENV_FILE:-} ]]; then
  [[ -r $CONTAINER_ENV_FILE ]] || die 78 "CONTAINER_ENV_FILE=$CONTAINER_ENV_FILE is not readable"
  args+=(--env-file "$CONTAINER_ENV_FILE")
fi
[[ -n ${CONTAINER_MEMORY:-} ]] && args+=(--memory "$CONTAINER_MEMORY")
if [[ -n ${NOTIFY_SOCKET:-} ]]; then
  args+=(--sdnotify=conmon --cgroups=split --detach)
fi

[[ $guard == nft ]] && guard_port

exec "${podman[@]}" "${args[@]}" "$IMAGE" \
  "$app_module" \
  --app-dir "$app_dir" \
  --host 0.0.0.0 \
  --port 8000 \
  --proxy-headers \
  --forwarded-allow-ips "$allow" \
  --timeout-keep-alive "$keepalive" \
  --no-access-log
