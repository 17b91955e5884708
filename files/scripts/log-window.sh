#!/usr/bin/env bash
# log-window.sh LOG [SECONDS] — print the access-log lines of the last SECONDS.
#
# Run by `npm run logs` on the host, sent over SSH as the stdin of
# `[sudo -n] bash -s -- LOG SECONDS`; it is not installed on the host. The
# window starts SECONDS before the host's own clock (no clock skew between
# the machine asking and the host). Lines are the JSON objects of
# files/nginx/log-format.conf, each starting with {"msec":EPOCH.MS, so awk
# compares that number and prints the lines at or after the start. When the
# window reaches back past the last rotation, LOG.1 (the previous file,
# uncompressed by Debian's delaycompress) is read first; older files
# (LOG.2.gz...) are not. Without SECONDS: all of LOG, nothing of LOG.1.
# Read-only. Exit: 0 ok (an absent LOG prints nothing), 64 usage.
set -euo pipefail

usage() {
  echo "usage: log-window.sh LOG [SECONDS]" >&2
  exit 64
}

(($# == 1 || $# == 2)) || usage
log=$1
seconds=${2:-}
[[ $log == /* ]] || usage
[[ -z $seconds || $seconds =~ ^[1-9][0-9]{0,9}$ ]] || usage

if [[ -z $seconds ]]; then
  [[ -e $log ]] && cat -- "$log"
  exit 0
fi

from=$(($(date +%s) - seconds))

# The msec of a line, or nothing when it is not one of ours.
line_msec() {
  local m
  [[ $1 =~ ^\{\"msec\":([0-9]+)(\.[0-9]+)?, ]] || return 0
  m=${BASH_REMATCH[1]}
  echo "$m"
}

window() {
  awk -v from="$from" 'index($0, "{\"msec\":") == 1 { split(substr($0, 9), a, ","); if (a[1] + 0 >= from) print }' "$1"
}

if [[ -e $log.1 ]]; then
  last=$(tail -n 1 -- "$log.1")
  msec=$(line_msec "$last")
  if [[ -n $msec ]] && ((msec >= from)); then window "$log.1"; fi
fi
if [[ -e $log ]]; then window "$log"; fi
