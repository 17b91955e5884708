#!/usr/bin/env bash
# systemd-reload.sh [--remove FILE]...
#
# For a step that changed unit files or drop-ins: delete each FILE the step
# no longer installs (a missing one is fine), then make systemd re-read its
# units with `systemctl daemon-reload`, when systemd runs the host (a host
# without it, such as a container, has nothing to reload).
# Exit: 0 ok; 1 a removal or the reload failed; 64 usage.
set -euo pipefail

usage() {
  echo "usage: systemd-reload.sh [--remove FILE]..." >&2
  exit 64
}

remove=()
while (($# > 0)); do
  [[ $1 == --remove && $# -ge 2 && $2 == /* ]] || usage
  remove+=("$2")
  shift 2
done

if ((${#remove[@]} > 0)); then
  rm -f -- "${remove[@]}"
fi
if [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
fi
