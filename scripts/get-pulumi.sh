#!/usr/bin/env bash
# Make the real Pulumi engine available, also on machines without internet access.
#
#   pulumi                   CLI / engine: a pulumi on PATH, or built from Go modules
#                            (github.com/pulumi/pulumi/pkg/v3 v3.259.0, served by the proxy)
#   pulumi-language-nodejs   Node.js language host: the one shipped beside that CLI, or built
#                            from ../shared/vendor/ (sdk/nodejs/cmd/pulumi-language-nodejs, v3.259.0)
#   command plugin v1.2.1    installed in $PULUMI_HOME like a downloaded plugin: downloaded by
#                            pulumi where it can, else built from ../shared/vendor/ and installed
#                            with `pulumi plugin install resource command v1.2.1 --file BINARY`
#
# Usage:   PATH="$(scripts/get-pulumi.sh | tail -1):$PATH"
# All progress goes to stderr; the last line of stdout is the bin directory. Exits non-zero
# if any of the three cannot be provided.
#
# Environment:
#   FASTAPI_EDGE_CACHE      cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/fastapi-edge)
#   FASTAPI_EDGE_VENDOR     plugin sources (default ../shared/vendor beside the repository)
#   FASTAPI_EDGE_OFFLINE    1 = do not try to download the command plugin
#   PULUMI_HOME             plugin cache (default $FASTAPI_EDGE_CACHE/pulumi-home)
#   GET_PULUMI_FORCE_BUILD  1 = ignore a pulumi found on PATH, build the CLI from Go modules
#   GET_PULUMI_RETRY        1 = ask the proxy again for module versions it refused < 24h ago
# Needs go and jq (installed with apt-get when missing and running as root).
set -euo pipefail

PULUMI_VERSION="v3.259.0"
COMMAND_VERSION="v1.2.1"

PKG_MOD="github.com/pulumi/pulumi/pkg/v3"
SDK_MOD="github.com/pulumi/pulumi/sdk/v3"
CLI_MAIN="${PKG_MOD}/cmd/pulumi"
CLI_LDFLAGS="-s -w -X ${SDK_MOD}/go/common/version.Version=${PULUMI_VERSION}"
CLI_TAGS="osusergo,grpcnotrace"

# The language host and the command provider: the Go module proxy refuses both at these
# versions (their folders have no tags of their own), so they are built from the public
# sources at the exact upstream tags kept in ../shared/vendor/ (see its README).
LANGHOST_TARBALL="pulumi-language-nodejs-${PULUMI_VERSION#v}.tar.gz"
LANGHOST_SUBDIR="pulumi-${PULUMI_VERSION#v}/sdk/nodejs/cmd/pulumi-language-nodejs"
LANGHOST_LDFLAGS="-s -w -X ${SDK_MOD}/go/common/version.Version=${PULUMI_VERSION}"
COMMAND_TARBALL="pulumi-command-${COMMAND_VERSION#v}-provider.tar.gz"
COMMAND_SUBDIR="pulumi-command-${COMMAND_VERSION#v}/provider"
COMMAND_MAIN="./cmd/pulumi-resource-command"
COMMAND_LDFLAGS="-s -w -X github.com/pulumi/pulumi-command/provider/pkg/version.Version=${COMMAND_VERSION#v}"

CACHE_ROOT="${FASTAPI_EDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastapi-edge}"
TOOLS_DIR="${CACHE_ROOT}/tools"
BIN_DIR="${TOOLS_DIR}/bin"
SRC_DIR="${TOOLS_DIR}/src"
LOG_DIR="${TOOLS_DIR}/logs"
PLUGIN_BUILD_DIR="${TOOLS_DIR}/plugin-build"
VENDOR_DIR="$(realpath -m "${FASTAPI_EDGE_VENDOR:-$(dirname "$0")/../../shared/vendor}")"
# Plugins are installed where the engine of scripts/pulumi-env.sh looks for them.
export PULUMI_HOME="${PULUMI_HOME:-${CACHE_ROOT}/pulumi-home}"

export PULUMI_SKIP_UPDATE_CHECK=true
# Every build: module mode (no vendor/ dirs), no go.work, static binaries as upstream releases.
export GOFLAGS="-mod=mod ${GOFLAGS:-}" GOWORK=off CGO_ENABLED=0

log() { printf '[get-pulumi] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

now() { date +%s; }

have_go() { command -v go >/dev/null 2>&1; }

# find_on_path NAME: first executable NAME on PATH, ignoring our own bin dir.
find_on_path() {
  local d
  local -a dirs
  IFS=: read -r -a dirs <<<"$PATH"
  for d in "${dirs[@]}"; do
    [[ -n "$d" && "$d" != "$BIN_DIR" ]] || continue
    if [[ -x "$d/$1" && ! -d "$d/$1" ]]; then
      printf '%s\n' "$d/$1"
      return 0
    fi
  done
  return 0
}

# build_info BINARY: the Go build info of BINARY (module path/versions). -trimpath drops
# -ldflags from it, so the ldflags used are kept beside the binary in BINARY.buildinfo.
build_info() {
  local bin="$1"
  [[ -x "$bin" ]] || return 1
  if have_go; then
    go version -m "$bin" 2>/dev/null
  else
    cat "${bin}.buildinfo"
  fi
}

# is_current BINARY MAINPKG LDFLAGS MODULE MODVERSION: the cached binary was built from
# MAINPKG in MODULE at MODVERSION with LDFLAGS (which carry the version string).
is_current() {
  local bin="$1" main="$2" ldflags="$3" mod="$4" modver="$5" info
  [[ -x "$bin" && -f "${bin}.buildinfo" ]] || return 1
  grep -qxF "ldflags: ${ldflags}" "${bin}.buildinfo" || return 1
  info="$(build_info "$bin")" || return 1
  grep -qF "	path	${main}" <<<"$info" || return 1
  # The module holding MAINPKG is listed as "mod" (or "dep") with its version.
  grep -qE "^[[:space:]]*(mod|dep)[[:space:]]+${mod//./\\.}[[:space:]]+${modver//./\\.}([[:space:]]|$)" <<<"$info" || return 1
}

# copy_replaces GOMOD_FILE: copy the module->module replace directives of a dependency's go.mod
# into the current (wrapper) module; filesystem replaces (../sdk) are dropped.
copy_replaces() {
  local gomod="$1" line
  while IFS= read -r line; do
    [[ -n "$line" ]] || continue
    log "  replace ${line}"
    go mod edit -replace="${line}"
  done < <(go mod edit -json "$gomod" | jq -r '
      (.Replace // [])[]
      | select(.New.Version != null and .New.Version != "")
      | (.Old.Path + (if (.Old.Version // "") != "" then "@" + .Old.Version else "" end))
        + "=" + .New.Path + "@" + .New.Version')
}

# A module version the proxy refused is not asked for again for a day (GET_PULUMI_RETRY=1
# asks anyway): keeps a warm run fast while the proxy does not serve it.
refused_recently() {
  local stamp="${TOOLS_DIR}/refused/${1//\//_}"
  [[ "${GET_PULUMI_RETRY:-0}" != 1 && -f "$stamp" ]] || return 1
  (($(now) - $(stat -c %Y "$stamp") < 86400))
}

# wrapper_build NAME MAINPKG LDFLAGS TAGS MOD@VER [MOD@VER...]
# Builds MAINPKG from a throwaway wrapper module in $SRC_DIR/NAME that requires the listed
# module versions (the first one holds MAINPKG). Output goes to $BIN_DIR/NAME.
wrapper_build() {
  local name="$1" main="$2" ldflags="$3" tags="$4"
  shift 4
  local first="$1" dir="${SRC_DIR}/${name}" logf="${LOG_DIR}/${name}.log" gomod t0 t1
  local -a tagargs=()
  [[ -n "$tags" ]] && tagargs=(-tags "$tags")
  t0="$(now)"
  if refused_recently "$first"; then
    log "${name}: skipped; go mod download ${first} failed in the last 24h (GET_PULUMI_RETRY=1 retries):"
    sed 's/^/    /' "${TOOLS_DIR}/refused/${first//\//_}" >&2
    return 1
  fi
  log "building ${name} from ${first} (log: ${logf})"
  rm -rf "$dir"
  mkdir -p "$dir" "$BIN_DIR" "$LOG_DIR"
  : >"$logf"
  (
    cd "$dir"
    {
      echo "+ go mod init fastapi-edge.local/tools/${name}"
      go mod init "fastapi-edge.local/tools/${name}"
      # Dependency go.mod: copy its module replace directives (ignored in a dependency).
      echo "+ go mod download -json ${first}"
      local dl
      dl="$(go mod download -json "$first" || true)"
      gomod="$(jq -r '.GoMod // empty' <<<"$dl")"
      if [[ -z "$gomod" || ! -f "$gomod" ]]; then
        mkdir -p "${TOOLS_DIR}/refused"
        jq -r '.Error // "unknown error"' <<<"$dl" | tee "${TOOLS_DIR}/refused/${first//\//_}"
        exit 1
      fi
      copy_replaces "$gomod"
      local req
      for req in "$@"; do
        go mod edit -require="$req"
      done
      echo "+ go get ${main}@${first#*@} $*"
      go get "${main}@${first#*@}" "$@"
      echo "+ go build -trimpath ${tagargs[*]} -ldflags '${ldflags}' -o ${BIN_DIR}/.${name}.tmp ${main}"
      go build -trimpath "${tagargs[@]}" -ldflags "$ldflags" -o "${BIN_DIR}/.${name}.tmp" "$main"
    } >>"$logf" 2>&1
  ) || {
    log "FAILED to build ${name}; last lines of ${logf}:"
    tail -n 15 "$logf" >&2
    rm -f "${BIN_DIR}/.${name}.tmp"
    return 1
  }
  mv -f "${BIN_DIR}/.${name}.tmp" "${BIN_DIR}/${name}"
  {
    go version -m "${BIN_DIR}/${name}"
    printf 'ldflags: %s\n' "$ldflags"
  } >"${BIN_DIR}/${name}.buildinfo"
  t1="$(now)"
  rm -f "${TOOLS_DIR}/refused/${first//\//_}"
  log "built ${name} in $((t1 - t0))s"
}

ensure_cli() {
  local bin="${BIN_DIR}/pulumi" onpath ver
  if is_current "$bin" "$CLI_MAIN" "$CLI_LDFLAGS" "$PKG_MOD" "$PULUMI_VERSION" &&
    [[ "$("$bin" version 2>/dev/null)" == "$PULUMI_VERSION" ]]; then
    log "pulumi ${PULUMI_VERSION}: cached (${bin})"
    return 0
  fi
  if [[ "${GET_PULUMI_FORCE_BUILD:-0}" != 1 ]]; then
    onpath="$(find_on_path pulumi)"
    if [[ -n "$onpath" ]] && ver="$("$onpath" version 2>/dev/null)" && [[ -n "$ver" ]]; then
      log "pulumi ${ver}: reusing the CLI found on PATH (${onpath}); GET_PULUMI_FORCE_BUILD=1 builds ${PULUMI_VERSION}"
      [[ "$ver" == "$PULUMI_VERSION" ]] || log "WARNING: ${onpath} is ${ver}, not ${PULUMI_VERSION}"
      mkdir -p "$BIN_DIR"
      ln -sfn "$onpath" "$bin"
      return 0
    fi
  fi
  have_go || die "pulumi is not on PATH and go is missing: cannot build it"
  wrapper_build pulumi "$CLI_MAIN" "$CLI_LDFLAGS" "$CLI_TAGS" \
    "${PKG_MOD}@${PULUMI_VERSION}" "${SDK_MOD}@${PULUMI_VERSION}" || return 1
  ver="$("$bin" version)"
  [[ "$ver" == "$PULUMI_VERSION" ]] || die "built pulumi reports '${ver}', expected ${PULUMI_VERSION}"
}

# vendor_build OUTDIR NAME TARBALL SUBDIR MAINPKG LDFLAGS [go mod edit args...]
# Builds MAINPKG of the Go module in SUBDIR of ../shared/vendor/TARBALL into OUTDIR/NAME.
# The binary is reused while the tarball and the flags are unchanged (stamp NAME.buildinfo).
vendor_build() {
  local outdir="$1" name="$2" tarball="$3" subdir="$4" main="$5" ldflags="$6"
  shift 6
  local src="${VENDOR_DIR}/${tarball}" dir="${SRC_DIR}/${name}" logf="${LOG_DIR}/${name}.log"
  local bin="${outdir}/${name}" stamp t0
  [[ -f "$src" ]] || { log "${name}: source archive ${src} is missing (set FASTAPI_EDGE_VENDOR)"; return 1; }
  stamp="source: $(sha256sum "$src" | cut -d' ' -f1) ${tarball}
ldflags: ${ldflags}
edits: $*"
  if [[ -x "$bin" && -f "${bin}.buildinfo" ]] && [[ "$(sed -n '1,3p' "${bin}.buildinfo")" == "$stamp" ]]; then
    log "${name}: cached (${bin})"
    return 0
  fi
  have_go || { log "go is missing: cannot build ${name}"; return 1; }
  t0="$(now)"
  log "building ${name} from ${tarball} (log: ${logf})"
  rm -rf "$dir"
  mkdir -p "$dir" "$outdir" "$LOG_DIR"
  (
    tar -xzf "$src" -C "$dir"
    cd "${dir}/${subdir}"
    if (($#)); then
      echo "+ go mod edit $*"
      go mod edit "$@"
    fi
    echo "+ go build -trimpath -ldflags '${ldflags}' -o ${outdir}/.${name}.tmp ${main}"
    go build -trimpath -ldflags "$ldflags" -o "${outdir}/.${name}.tmp" "$main"
  ) >"$logf" 2>&1 || {
    log "FAILED to build ${name}; last lines of ${logf}:"
    tail -n 15 "$logf" >&2
    rm -f "${outdir}/.${name}.tmp"
    return 1
  }
  mv -f "${outdir}/.${name}.tmp" "$bin"
  printf '%s\n' "$stamp" >"${bin}.buildinfo"
  rm -rf "$dir"
  log "built ${name} in $(($(now) - t0))s"
}

ensure_langhost() {
  local bin="${BIN_DIR}/pulumi-language-nodejs" real
  # A CLI reused from PATH ships its own language host beside it: use that one.
  if [[ -L "${BIN_DIR}/pulumi" ]]; then
    real="$(dirname "$(readlink -f "${BIN_DIR}/pulumi")")/pulumi-language-nodejs"
    if [[ -x "$real" ]]; then
      log "pulumi-language-nodejs: reusing ${real} (shipped with the CLI on PATH)"
      ln -sfn "$real" "$bin"
      return 0
    fi
  fi
  [[ ! -L "$bin" ]] || rm -f "$bin"
  # Upstream's go.mod points pkg/v3 and sdk/v3 at folders of the same repository;
  # the released modules of the same tag replace them.
  vendor_build "$BIN_DIR" pulumi-language-nodejs "$LANGHOST_TARBALL" "$LANGHOST_SUBDIR" . "$LANGHOST_LDFLAGS" \
    -dropreplace "${PKG_MOD}" -dropreplace "${SDK_MOD}" \
    -require "${PKG_MOD}@${PULUMI_VERSION}" -require "${SDK_MOD}@${PULUMI_VERSION}"
}

# The command provider as an installed plugin in $PULUMI_HOME, exactly where `pulumi` puts a
# downloaded one. Online, pulumi downloads it; offline (or when the download fails) it is
# built from ../shared/vendor/ and installed from the file.
ensure_command_plugin() {
  local pulumi="${BIN_DIR}/pulumi" ver="${COMMAND_VERSION#v}"
  if "$pulumi" plugin ls --json 2>/dev/null |
    jq -e --arg v "$ver" 'any(.[]; .name == "command" and .kind == "resource" and .version == $v)' >/dev/null; then
    log "pulumi-resource-command ${COMMAND_VERSION}: installed in ${PULUMI_HOME}"
    return 0
  fi
  if [[ "${FASTAPI_EDGE_OFFLINE:-0}" != 1 ]]; then
    log "pulumi-resource-command ${COMMAND_VERSION}: trying the download (FASTAPI_EDGE_OFFLINE=1 skips it)"
    if timeout "${GET_PULUMI_DOWNLOAD_TIMEOUT:-60}" "$pulumi" plugin install resource command "$COMMAND_VERSION" >&2 2>"${LOG_DIR}/command-download.log"; then
      return 0
    fi
    log "download failed ($(tail -n 1 "${LOG_DIR}/command-download.log")); building from source"
  fi
  # Outside the bin dir: a provider on PATH would be used instead of the installed plugin
  # (with a warning on every run).
  vendor_build "$PLUGIN_BUILD_DIR" pulumi-resource-command "$COMMAND_TARBALL" "$COMMAND_SUBDIR" "$COMMAND_MAIN" "$COMMAND_LDFLAGS" || return 1
  "$pulumi" plugin install resource command "$COMMAND_VERSION" --file "${PLUGIN_BUILD_DIR}/pulumi-resource-command" >&2
}

main() {
  local t0 missing=()
  t0="$(now)"
  if ! command -v jq >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      log "installing jq with apt-get"
      { apt-get install -y -q jq || { apt-get update -q && apt-get install -y -q jq; }; } >&2
    fi
    command -v jq >/dev/null 2>&1 || die "jq is required (apt-get install -y jq)"
  fi
  mkdir -p "$TOOLS_DIR"
  # One build at a time per cache dir (parallel callers wait here).
  exec 9>"${TOOLS_DIR}/.lock"
  if ! flock -n 9; then
    log "another get-pulumi.sh is building in ${TOOLS_DIR}; waiting for it"
    flock 9
  fi

  ensure_cli || die "could not provide the pulumi CLI"
  ensure_langhost || missing+=(pulumi-language-nodejs)
  ensure_command_plugin || missing+=(pulumi-resource-command)
  # Left by earlier versions of this script: a shim and a provider on PATH.
  rm -f "${BIN_DIR}/pulumi-resource-pulumi-nodejs" "${BIN_DIR}"/pulumi-resource-command*

  log "done in $(($(now) - t0))s; bin dir: ${BIN_DIR}"
  ((${#missing[@]} == 0)) || die "not available: ${missing[*]} (see ${LOG_DIR} and docs/engine.md)"
  printf '%s\n' "$BIN_DIR"
}

main "$@"
