#!/usr/bin/env bash
# cert-expiry-timer.sh --servername DOMAIN | --remove
#
# The cert-expiry-timer step (nginx mode with alertEmail set).
# --servername DOMAIN: run after the step has written
#   fastapi-edge-cert-expiry.service and .timer. Makes sure the AWS CLI is
#   there (it publishes the metric: Debian packages it, on Ubuntu 24.04 it is
#   a snap), reloads systemd, enables and starts the daily timer, and runs one
#   check now against the live site on 127.0.0.1:443 (cert-expiry-check.sh,
#   next to this script). A certificate below the threshold (check exit 2) is
#   the alarm's business, not a failure of this step.
# --remove: the step's delete command. Stops and disables the timer, deletes
#   both units, reloads systemd; best effort (a half-built host must not stop
#   a destroy).
# Exit: 0 ok; 1 failure; 64 usage.
set -euo pipefail

unit=fastapi-edge-cert-expiry
units_dir=/etc/systemd/system

usage() {
  echo "usage: cert-expiry-timer.sh --servername DOMAIN | --remove" >&2
  exit 64
}

case ${1:-} in
  --servername)
    (($# == 2)) || usage
    domain=$2
    [[ $domain =~ ^[A-Za-z0-9.-]+$ ]] || usage
    check=$(dirname -- "${BASH_SOURCE[0]}")/cert-expiry-check.sh
    command -v aws >/dev/null || apt-get install -y -q awscli || snap install aws-cli --classic
    systemctl daemon-reload
    systemctl enable --now "$unit.timer"
    rc=0
    "$check" --host 127.0.0.1 --port 443 --servername "$domain" || rc=$?
    ((rc == 0 || rc == 2)) || exit "$rc"
    ;;
  --remove)
    (($# == 1)) || usage
    systemctl disable --now "$unit.timer" || true
    rm -f -- "$units_dir/$unit".*
    systemctl daemon-reload || true
    ;;
  *) usage ;;
esac
