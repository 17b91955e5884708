#!/usr/bin/env bash
# wait-for-boot.sh — the bootstrap-wait-ssh step, the first thing run on a
# new host. It is the step's stdin, not an installed script: nothing of
# fastapi-edge is on the host yet. Running at all means SSH answers; then it
# waits for cloud-init's first boot to finish (users, package sources, apt
# locks) where there is cloud-init, and prints ssh-ready.
# Exit: 0. A cloud-init that finished with errors is not this step's failure:
# the install step that follows reports what is actually missing.
set -euo pipefail

if command -v cloud-init >/dev/null; then
  cloud-init status --wait >/dev/null || true
fi
echo ssh-ready
