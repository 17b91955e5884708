#!/usr/bin/env bash
# container-network.sh [NAME [SUBNET]]
#
# Creates the podman bridge network the app containers run on, once:
# NAME (default fastapi-edge), IPv4 SUBNET (default 10.89.77.0/24), gateway the
# subnet's first address, no DNS server (the app resolves through the host's
# resolvers). A fixed, dedicated network makes the address the app sees for
# every forwarded connection (the gateway; see run-container.sh) a known
# constant instead of whatever the default network happens to use.
# Idempotent: an existing network with the same subnet is left alone; one with
# another subnet is an error (containers may be attached: remove it by hand).
#
# stdout: NETWORK=NAME and GATEWAY=ADDRESS (the FORWARDED_ALLOW_IPS value).
# Environment: PODMAN (default podman); CONTAINER_NETWORK and CONTAINER_SUBNET,
# NAME and SUBNET when not given (container-deploy.sh runs this without
# arguments; a test points it at a network of its own).
# Exit: 0 ok, 1 failure, 64 usage.
set -euo pipefail

die() {
  echo "container-network.sh: error: $*" >&2
  exit 1
}
usage() {
  echo "usage: container-network.sh [NAME [SUBNET]]" >&2
  exit 64
}

(( $# <= 2 )) || usage
name=${1:-${CONTAINER_NETWORK:-fastapi-edge}}
subnet=${2:-${CONTAINER_SUBNET:-10.89.77.0/24}}
[[ $name =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || usage
[[ $subnet =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})/([0-9]{1,2})$ ]] || usage
for i in 1 2 3 4; do (( BASH_REMATCH[i] <= 255 )) || usage; done
(( BASH_REMATCH[5] >= 8 && BASH_REMATCH[5] <= 30 )) || usage
(( BASH_REMATCH[4] % 2 == 0 )) || usage
gateway="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.${BASH_REMATCH[3]}.$((BASH_REMATCH[4] + 1))"

read -r -a podman <<<"${PODMAN:-podman}"
command -v "${podman[0]}" >/dev/null 2>&1 || die "podman not found (install the podman package)"

if have=$("${podman[@]}" network inspect --format '{{range .Subnets}}{{.Subnet}}={{.Gateway}} {{end}}' "$name" 2>/dev/null); then
  have=${have% }
  [[ $have == "$subnet=$gateway" ]] ||
    die "network $name exists with subnet/gateway '$have', not '$subnet=$gateway'; stop its containers and 'podman network rm $name', or use another name"
  echo "container-network.sh: network $name ($subnet, gateway $gateway) already exists" >&2
else
  "${podman[@]}" network create --driver bridge --subnet "$subnet" --gateway "$gateway" \
    --disable-dns --label io.fastapi-edge=1 "$name" >/dev/null
  echo "container-network.sh: created network $name ($subnet, gateway $gateway)" >&2
fi
printf 'NETWORK=%s\nGATEWAY=%s\n' "$name" "$gateway"
