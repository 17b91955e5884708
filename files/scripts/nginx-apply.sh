#!/usr/bin/env bash
# nginx-apply.sh — safely push a rendered nginx configuration.
#
# Usage:
#   nginx-apply.sh STAGE          test, install and reload STAGE
#   nginx-apply.sh --check STAGE  only test STAGE and list what would change
#   nginx-apply.sh --remove       restore the distro nginx.conf, delete every
#                                 file this script installed, test, reload
#
# STAGE layout (produced by the renderer):
#   STAGE/conf/REL    installed as $NGINX_CONF_DIR/REL   (nginx.conf, fastapi-edge/...)
#   STAGE/extra/ABS   installed as $EXTRA_ROOT/ABS       (e.g. var/www/fastapi-edge/maintenance.html)
# The staged nginx.conf must use only relative include paths so the candidate
# tree can be tested in isolation.
#
# Procedure: build a candidate tree in a temp dir (copy of NGINX_CONF_DIR +
# STAGE/conf - owned files dropped from the stage) and run `nginx -t -c` on it.
# If nginx rejects it: print nginx's output and exit 1 with nothing changed.
# Otherwise back up the live copies of the files about to change, install
# each file atomically (temp file in the same directory + mv), remove dropped
# owned files, write the ownership manifest, `nginx -t` the live tree (restore
# the backup and exit 1 if that fails) and reload nginx (never restart) with
# nginx-reload.sh, which returns only once the reload is live. If it is not,
# this fails and leaves the reload pending: the next run retries it even
# when no file changed. When nothing differs from the live files, nginx is
# not reloaded.
#
# Environment:
#   NGINX_CONF_DIR    nginx config dir            (default /etc/nginx)
#   EXTRA_ROOT        prefix for STAGE/extra      (default /)
#   STATE_DIR         manifest, backups, orig     (default /var/lib/fastapi-edge)
#   NGINX_BIN         nginx executable            (default nginx)
#   NGINX_RELOAD_CMD  reload command run with `bash -c` (default: see
#                     nginx-reload.sh; an apply starts nginx when it is not
#                     running, --remove never does)
#   NGINX_BACKUP_KEEP backups kept in STATE_DIR/backups (default 10)
#   NGINX_APPLY_LOCK_TIMEOUT  seconds to wait for a concurrent run (default 300)
#   NGINX_APPLY_RELOAD_TIMEOUT  seconds to wait for a reload to take effect
#                     (default 60)
#   NGINX_PID_FILE    master pid file (see nginx-reload.sh)
#
# State: STATE_DIR/nginx-owned.txt (one "conf/REL" or "extra/ABS" per line),
#        STATE_DIR/nginx.conf.orig (distro nginx.conf, saved the first time),
#        STATE_DIR/backups/nginx-*/, STATE_DIR/nginx-reload-pending.
#
# Exit: 0 applied or nothing to do; 1 rejected / failed (see stderr); 64 usage.
set -euo pipefail
shopt -s nullglob
umask 022

NGINX_CONF_DIR=${NGINX_CONF_DIR:-/etc/nginx}
NGINX_CONF_DIR=${NGINX_CONF_DIR%/}
EXTRA_ROOT=${EXTRA_ROOT:-/}
EXTRA_ROOT=${EXTRA_ROOT%/}
STATE_DIR=${STATE_DIR:-/var/lib/fastapi-edge}
STATE_DIR=${STATE_DIR%/}
NGINX_BIN=${NGINX_BIN:-nginx}
BACKUP_KEEP=${NGINX_BACKUP_KEEP:-10}
LOCK_TIMEOUT=${NGINX_APPLY_LOCK_TIMEOUT:-300}
RELOAD_TIMEOUT=${NGINX_APPLY_RELOAD_TIMEOUT:-60}

# The reload routine, installed next to this script.
RELOAD=$(dirname -- "${BASH_SOURCE[0]}")/nginx-reload.sh

MANIFEST=$STATE_DIR/nginx-owned.txt
ORIG=$STATE_DIR/nginx.conf.orig
PENDING=$STATE_DIR/nginx-reload-pending
LIVE_CONF=$NGINX_CONF_DIR/nginx.conf

log() { echo "fastapi-edge: $*"; }
warn() { echo "fastapi-edge: warning: $*" >&2; }
die() {
  echo "fastapi-edge: error: $*" >&2
  exit 1
}
usage() {
  echo "usage: nginx-apply.sh STAGE | --check STAGE | --remove" >&2
  exit 64
}

# ---------------------------------------------------------------- arguments
mode=apply
stage=
case ${1:-} in
  --remove)
    (( $# == 1 )) || usage
    mode=remove
    ;;
  --check)
    (( $# == 2 )) || usage
    mode=check
    stage=$2
    ;;
  -h | --help) usage ;;
  -*) usage ;;
  *)
    (( $# == 1 )) || usage
    stage=$1
    ;;
esac

[[ $BACKUP_KEEP =~ ^[0-9]+$ ]] || die "NGINX_BACKUP_KEEP must be a whole number"
[[ $LOCK_TIMEOUT =~ ^[0-9]+$ ]] || die "NGINX_APPLY_LOCK_TIMEOUT must be a whole number"
[[ $RELOAD_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "NGINX_APPLY_RELOAD_TIMEOUT must be a whole number of seconds >= 1"
[[ -d $NGINX_CONF_DIR ]] || die "NGINX_CONF_DIR $NGINX_CONF_DIR is not a directory"
command -v "$NGINX_BIN" >/dev/null 2>&1 || die "nginx executable '$NGINX_BIN' not found (set NGINX_BIN)"
[[ -x $RELOAD ]] || die "$RELOAD is missing: nginx-apply.sh and nginx-reload.sh are installed together"

if [[ -n $stage ]]; then
  stage=${stage%/}
  [[ -d $stage/conf ]] || die "stage directory $stage has no conf/ subdirectory"
fi

# ------------------------------------------------------------------ helpers
# A manifest/stage entry is "conf/REL" or "extra/REL" without . or .. parts.
valid_entry() {
  local e=$1
  [[ $e =~ ^(conf|extra)/[^/] ]] || return 1
  [[ $e != *$'\n'* && $e != */ && $e != *//* ]] || return 1
  [[ /$e/ != */../* && /$e/ != */./* ]]
}

live_path() {
  case $1 in
    conf/*) printf '%s/%s' "$NGINX_CONF_DIR" "${1#conf/}" ;;
    extra/*) printf '%s/%s' "$EXTRA_ROOT" "${1#extra/}" ;;
  esac
}

exists() { [[ -e $1 || -L $1 ]]; }

# Write $1 (a file) to $2 atomically: temp file in the target dir, then mv.
install_atomic() {
  local src=$1 dest=$2 dir tmp
  dir=$(dirname -- "$dest")
  mkdir -p -- "$dir" || return 1
  tmp=$(mktemp "$dir/.fastapi-edge-new.XXXXXX") || return 1
  if ! cat -- "$src" >"$tmp" || ! chmod 0644 "$tmp" || ! mv -f -- "$tmp" "$dest"; then
    rm -f -- "$tmp"
    return 1
  fi
}

# Remove empty directories upwards from $1 while they are below $2 and their
# path below $2 has a component named fastapi-edge (never prunes distro dirs).
prune_dirs() {
  local dir=$1 stop=$2 rel
  while [[ $dir == "$stop"/* ]]; do
    rel=${dir#"$stop"/}
    [[ /$rel/ == */fastapi-edge/* ]] || break
    rmdir -- "$dir" 2>/dev/null || break
    dir=$(dirname -- "$dir")
  done
}

entry_root() {
  case $1 in
    conf/*) printf '%s' "$NGINX_CONF_DIR" ;;
    extra/*) printf '%s' "$EXTRA_ROOT" ;;
  esac
}

in_list() {
  local needle=$1 item
  shift
  for item in "$@"; do
    [[ $item == "$needle" ]] && return 0
  done
  return 1
}

nginx_test() { # $1 = nginx.conf to test; output captured by caller
  "$NGINX_BIN" -t -c "$1" 2>&1 9<&-
}

# Reload nginx with nginx-reload.sh and wait until the reload is live.
# Returns 1 if the reload command failed, 2 if it did not take effect in
# time; nginx not running is fine (an apply starts it).
# fd 9 holds the lock: closed for the child, or a daemon it starts (nginx
# itself) would keep the lock forever.
reload_and_confirm() { # $1 = apply|remove
  local start=() rc=0
  [[ $1 == apply ]] && start=(--start)
  NGINX_BIN=$NGINX_BIN NGINX_CONF_DIR=$NGINX_CONF_DIR NGINX_RELOAD_TIMEOUT=$RELOAD_TIMEOUT \
    "$RELOAD" "${start[@]}" 9<&- || rc=$?
  ((rc == 3)) && return 0 # not running: nothing to reload
  return "$rc"
}

reload_failed() { # $1 = status from reload_and_confirm
  : >"$PENDING"
  if (( $1 == 2 )); then
    die "nginx was signalled to reload but started no new worker processes within ${RELOAD_TIMEOUT}s, so it still serves the previous config; nginx -t passed, so a step only the running server takes failed (for example bind() on a listen address already in use): read nginx's error log, fix, and rerun to retry the reload"
  fi
  die "nginx reload failed; new config is installed and valid (nginx -t ok); rerun to retry the reload"
}

# --------------------------------------------------------------- read state
# Serialise concurrent runs on the config dir itself (creates no file).
exec 9<"$NGINX_CONF_DIR"
flock -w "$LOCK_TIMEOUT" 9 || die "another nginx-apply.sh run holds the lock on $NGINX_CONF_DIR"

old_owned=()
if [[ -f $MANIFEST ]]; then
  while IFS= read -r line || [[ -n $line ]]; do
    [[ -z $line || $line == \#* ]] && continue
    if valid_entry "$line"; then
      old_owned+=("$line")
    else
      warn "ignoring invalid manifest entry '$line' in $MANIFEST"
    fi
  done <"$MANIFEST"
fi

if [[ $mode == remove && ! -f $MANIFEST ]]; then
  log "nothing to remove: no manifest at $MANIFEST"
  exit 0
fi

new_owned=()
if [[ -n $stage ]]; then
  roots=("$stage/conf")
  [[ -d $stage/extra ]] && roots+=("$stage/extra")
  odd=$(find "${roots[@]}" -mindepth 1 ! -type f ! -type d -print | head -n 5)
  [[ -z $odd ]] || die "stage contains entries that are neither files nor directories (symlinks?): ${odd//$'\n'/ }"
  while IFS= read -r -d '' f; do
    entry=${f#"$stage"/}
    valid_entry "$entry" || die "unsupported file name in stage: '$f'"
    new_owned+=("$entry")
  done < <(find "${roots[@]}" -type f -print0 | sort -z)
  (( ${#new_owned[@]} > 0 )) || die "stage $stage/conf contains no files (use --remove to uninstall)"
  if abs=$(grep -rnF -- "include $NGINX_CONF_DIR/" "$stage/conf" 2>/dev/null); then
    warn "staged config uses absolute include paths into $NGINX_CONF_DIR; the candidate test reads the LIVE copies of those files:"
    printf '%s\n' "$abs" >&2
  fi
fi

# Dropped = owned before, not staged now. conf/nginx.conf is never deleted:
# it goes back to the saved distro copy.
dropped=()
for e in "${old_owned[@]}"; do
  in_list "$e" "${new_owned[@]}" || dropped+=("$e")
done

# ---------------------------------------------------- (a) candidate tree
work=$(mktemp -d "${TMPDIR:-/tmp}/fastapi-edge-nginx.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
cand=$work/candidate
mkdir -p "$cand"
cp -a -- "$NGINX_CONF_DIR/." "$cand/" || die "cannot copy $NGINX_CONF_DIR to a temp dir"

for e in "${new_owned[@]}"; do
  [[ $e == conf/* ]] || continue
  mkdir -p -- "$(dirname -- "$cand/${e#conf/}")"
  rm -f -- "$cand/${e#conf/}"
  cp -- "$stage/$e" "$cand/${e#conf/}"
done
for e in "${dropped[@]}"; do
  [[ $e == conf/* ]] || continue
  if [[ $e == conf/nginx.conf ]]; then
    [[ -f $ORIG ]] && cp -- "$ORIG" "$cand/nginx.conf"
  else
    rm -f -- "$cand/${e#conf/}"
  fi
done
[[ -f $cand/nginx.conf ]] || die "candidate tree has no nginx.conf (stage it as conf/nginx.conf)"

# ---------------------------------------------------- (b) nginx -t candidate
if ! test_out=$(nginx_test "$cand/nginx.conf"); then
  {
    echo "fastapi-edge: candidate nginx config rejected by nginx -t; live config unchanged"
    echo "fastapi-edge: (candidate = copy of $NGINX_CONF_DIR overlaid with ${stage:-the removal}; paths below under $cand)"
    printf '%s\n' "$test_out"
  } >&2
  exit 1
fi

# ---------------------------------------------------- what would change
added=() updated=() removed=() restored=()
for e in "${new_owned[@]}"; do
  live=$(live_path "$e")
  if ! exists "$live"; then
    added+=("$e")
  elif [[ -L $live || ! -f $live ]] || ! cmp -s -- "$stage/$e" "$live"; then
    updated+=("$e")
  fi
done
for e in "${dropped[@]}"; do
  live=$(live_path "$e")
  if [[ $e == conf/nginx.conf ]]; then
    if [[ ! -f $ORIG ]]; then
      warn "no saved distro nginx.conf ($ORIG); leaving $live in place"
    elif ! cmp -s -- "$ORIG" "$live"; then
      restored+=("$e")
    fi
  elif exists "$live"; then
    removed+=("$e")
  fi
done
touched=("${added[@]}" "${updated[@]}" "${removed[@]}" "${restored[@]}")

print_summary() {
  local e
  for e in "${added[@]}"; do echo "  + $(live_path "$e")"; done
  for e in "${updated[@]}"; do echo "  ~ $(live_path "$e")"; done
  for e in "${removed[@]}"; do echo "  - $(live_path "$e")"; done
  for e in "${restored[@]}"; do echo "  < $(live_path "$e") (restored from $ORIG)"; done
}

if [[ $mode == check ]]; then
  log "candidate config OK (nginx -t); ${#touched[@]} file(s) would change"
  print_summary
  exit 0
fi

write_manifest() {
  mkdir -p -- "$STATE_DIR" || return 1
  if [[ $mode == remove ]]; then
    rm -f -- "$MANIFEST"
    return
  fi
  local tmp
  tmp=$(mktemp "$STATE_DIR/.nginx-owned.XXXXXX") || return 1
  {
    echo "# files installed by nginx-apply.sh (conf/ = under $NGINX_CONF_DIR, extra/ = under ${EXTRA_ROOT:-/})"
    printf '%s\n' "${new_owned[@]}"
  } >"$tmp" && chmod 0644 "$tmp" && mv -f -- "$tmp" "$MANIFEST"
}

manifest_matches() {
  [[ -f $MANIFEST ]] || return 1
  local want
  want=$(printf '%s\n' "${new_owned[@]}")
  [[ $want == "$(grep -v '^#' "$MANIFEST" | grep -v '^$')" ]]
}

# ---------------------------------------------------- nothing to do?
if (( ${#touched[@]} == 0 )); then
  if [[ $mode == remove ]]; then
    write_manifest || die "cannot update $MANIFEST"
    rm -f -- "$ORIG"
  elif ! manifest_matches; then
    write_manifest || die "cannot write $MANIFEST"
  fi
  # Fix modes of unchanged files silently (no reload needed).
  for e in "${new_owned[@]}"; do
    live=$(live_path "$e")
    [[ -f $live && ! -L $live ]] && chmod 0644 -- "$live"
  done
  if [[ -f $PENDING ]]; then
    log "no file changes, but a previous reload failed; reloading nginx"
    rc=0
    reload_and_confirm "$mode" || rc=$?
    (( rc == 0 )) || reload_failed "$rc"
    rm -f -- "$PENDING"
    log "nginx reload done"
    exit 0
  fi
  log "no changes; live config already matches, nginx not reloaded"
  exit 0
fi

# ---------------------------------------------------- (c) install
mkdir -p -- "$STATE_DIR/backups" || die "cannot create $STATE_DIR/backups"
if [[ ! -e $ORIG && -f $LIVE_CONF ]] && ! in_list conf/nginx.conf "${old_owned[@]}"; then
  install_atomic "$LIVE_CONF" "$ORIG" || die "cannot save distro nginx.conf to $ORIG"
  log "saved distro nginx.conf as $ORIG"
fi

backup=$STATE_DIR/backups/nginx-$(date -u +%Y%m%dT%H%M%SZ)-$$
mkdir -p -- "$backup/files" || die "cannot create backup dir $backup"
: >"$backup/absent.txt"
for e in "${touched[@]}"; do
  live=$(live_path "$e")
  if exists "$live"; then
    mkdir -p -- "$(dirname -- "$backup/files/$e")"
    cp -a -- "$live" "$backup/files/$e" || die "cannot back up $live (nothing changed yet)"
  else
    printf '%s\n' "$e" >>"$backup/absent.txt"
  fi
done
if [[ -f $MANIFEST ]]; then
  cp -p -- "$MANIFEST" "$backup/nginx-owned.txt"
fi

# Put every touched file back as it was before this run.
restore_backup() {
  local e live ok=0
  for e in "${touched[@]}"; do
    live=$(live_path "$e")
    if [[ -e $backup/files/$e || -L $backup/files/$e ]]; then
      mkdir -p -- "$(dirname -- "$live")"
      rm -f -- "$live.fastapi-edge-restore"
      if cp -a -- "$backup/files/$e" "$live.fastapi-edge-restore" &&
        mv -f -- "$live.fastapi-edge-restore" "$live"; then
        :
      else
        echo "fastapi-edge: error: could not restore $live from $backup" >&2
        ok=1
      fi
    else
      rm -f -- "$live"
      prune_dirs "$(dirname -- "$live")" "$(entry_root "$e")"
    fi
  done
  if [[ -f $backup/nginx-owned.txt ]]; then
    cp -p -- "$backup/nginx-owned.txt" "$MANIFEST"
  else
    rm -f -- "$MANIFEST"
  fi
  return "$ok"
}

apply_changes() {
  local e live
  for e in "${added[@]}" "${updated[@]}"; do
    live=$(live_path "$e")
    if [[ -d $live && ! -L $live ]]; then
      echo "fastapi-edge: error: $live is a directory" >&2
      return 1
    fi
    install_atomic "$stage/$e" "$live" || return 1
  done
  for e in "${restored[@]}"; do
    install_atomic "$ORIG" "$(live_path "$e")" || return 1
  done
  for e in "${removed[@]}"; do
    live=$(live_path "$e")
    rm -f -- "$live" || return 1
    prune_dirs "$(dirname -- "$live")" "$(entry_root "$e")"
  done
  write_manifest || return 1
}

if ! apply_changes; then
  restore_backup || true
  die "installing files failed; previous files restored from $backup; nginx not reloaded"
fi

if ! live_out=$(nginx_test "$LIVE_CONF"); then
  {
    echo "fastapi-edge: installed config failed nginx -t on the live tree; restoring previous files from $backup"
    printf '%s\n' "$live_out"
  } >&2
  if restore_backup; then
    die "live config restored; nginx not reloaded"
  fi
  die "RESTORE INCOMPLETE: inspect $NGINX_CONF_DIR and $backup; nginx not reloaded"
fi

if [[ $mode == remove ]]; then
  rm -f -- "$ORIG"
fi

# Keep the newest $BACKUP_KEEP backups.
backups=("$STATE_DIR"/backups/nginx-*)
if (( ${#backups[@]} > BACKUP_KEEP )); then
  mapfile -t old_backups < <(printf '%s\n' "${backups[@]}" | sort | head -n $((${#backups[@]} - BACKUP_KEEP)))
  rm -rf -- "${old_backups[@]}"
fi

verb=applied
[[ $mode == remove ]] && verb=removed
log "nginx config $verb: ${#touched[@]} file(s) changed (${#added[@]} added, ${#updated[@]} updated, ${#removed[@]} removed, ${#restored[@]} restored); backup in $backup"
print_summary

rc=0
reload_and_confirm "$mode" || rc=$?
(( rc == 0 )) || reload_failed "$rc"
rm -f -- "$PENDING"
log "nginx reload done"
