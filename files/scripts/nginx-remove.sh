#!/usr/bin/env bash
# nginx-remove.sh --drop-in FILE
#
# The nginx-site step's delete command (pulumi destroy): gives nginx its
# distribution config back with nginx-apply.sh --remove (next to this
# script), then deletes FILE, the nginx.service drop-in the step wrote.
# Best effort: a half-built host (no nginx, nothing applied yet) must not
# stop a destroy, so a failed nginx-apply.sh --remove is reported and the
# drop-in goes all the same.
# Exit: 0; 64 usage.
set -euo pipefail

usage() {
  echo "usage: nginx-remove.sh --drop-in FILE" >&2
  exit 64
}

if (($# != 2)) || [[ $1 != --drop-in || $2 != /*.conf ]]; then
  usage
fi
drop_in=$2

if ! "$(dirname -- "${BASH_SOURCE[0]}")/nginx-apply.sh" --remove; then
  echo "nginx-remove.sh: nginx-apply.sh --remove failed (see above); removing the drop-in anyway" >&2
fi
rm -f -- "$drop_in"
