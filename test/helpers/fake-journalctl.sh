#!/usr/bin/env bash
# A stand-in for journalctl next to fake-systemctl.sh:
# `-u fastapi-edge-app@PORT.service -n N` prints the tail of that port's log.
set -euo pipefail
unit=''
n=10
while (($#)); do
  case $1 in
    -u)
      unit=$2
      shift 2
      ;;
    -n)
      n=$2
      shift 2
      ;;
    *) shift ;;
  esac
done
[[ $unit =~ @([0-9]+)\.service$ ]] || exit 1
tail -n "$n" "${FAKE_STATE:?FAKE_STATE not set}/${BASH_REMATCH[1]}.log"
