#!/usr/bin/env bash
# Debian 13's nginx (1.26.x) in a cached chroot, for the renderer's checks of
# nginx >= 1.25.1 syntax. Prints the chroot's path as the last line of stdout.
# See scripts/get-chroot.sh for the cache, the build and the settings.
set -euo pipefail
exec "$(dirname "$0")/get-chroot.sh" nginx-trixie trixie nginx
