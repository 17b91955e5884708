#!/usr/bin/env bash
# Make the real Pulumi engine available offline, built from Go modules.
#
# Builds (or reuses) three binaries into a cache directory outside git:
#   pulumi                   CLI / engine            (github.com/pulumi/pulumi/pkg/v3 v3.259.0)
#   pulumi-language-nodejs   Node.js language host   (same SDK release)
#   pulumi-resource-command  command provider        (github.com/pulumi/pulumi-command v1.2.1)
#
# Usage:   PATH="$(scripts/get-pulumi.sh | tail -1):$PATH"
# All progress goes to stderr; the last line of stdout is the bin directory.
#
# Environment:
#   FASTAPI_EDGE_CACHE      cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/fastapi-edge)
#   GET_PULUMI_FORCE_BUILD  1 = ignore a pulumi found on PATH, build the CLI from Go modules
#   GET_PULUMI_STRICT       1 = exit non-zero if any of the three binaries is missing
#                           (default: only a missing CLI is fatal; see docs/engine.md)
#   GET_PULUMI_LEGACY_LANGHOST  0 = no fallback language host from sdk/v3 v3.68.0
#   GET_PULUMI_RETRY        1 = ask the proxy again for module versions it refused < 24h ago
#   GET_PULUMI_LANGHOST_VERSION, GET_PULUMI_COMMAND_VERSION
#                           override the Go module (pseudo-)versions tried for the language
#                           host and the command provider
# Needs go and jq (installed with apt-get when missing and running as root).
set -euo pipefail

PULUMI_VERSION="v3.259.0"
COMMAND_VERSION="v1.2.1"

PKG_MOD="github.com/pulumi/pulumi/pkg/v3"
SDK_MOD="github.com/pulumi/pulumi/sdk/v3"
CLI_MAIN="${PKG_MOD}/cmd/pulumi"
CLI_LDFLAGS="-s -w -X ${SDK_MOD}/go/common/version.Version=${PULUMI_VERSION}"
CLI_TAGS="osusergo,grpcnotrace"

# The language host module has no tags of its own: only a pseudo-version of the commit
# tagged v3.259.0 / sdk/v3.259.0 (0ac56e876614) names it.
LANGHOST_MOD="github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3"
LANGHOST_MAIN="${LANGHOST_MOD}"
LANGHOST_VERSION="${GET_PULUMI_LANGHOST_VERSION:-v3.0.0-20260819165155-0ac56e876614}"
LANGHOST_LDFLAGS="-s -w -X ${SDK_MOD}/go/common/version.Version=${PULUMI_VERSION}"
# Fallback while the proxy refuses that module: sdk/v3 v3.68.0 is the last release whose
# module still contains the language host as a package (v3.69.0 moved it to its own module).
LEGACY_LANGHOST_SDK="v3.68.0"
LEGACY_LANGHOST_MAIN="${SDK_MOD}/nodejs/cmd/pulumi-language-nodejs"
LEGACY_LANGHOST_LDFLAGS="-s -w -X ${SDK_MOD}/go/common/version.Version=${LEGACY_LANGHOST_SDK}"

# The command provider module (subdirectory provider/) has no tags either: pseudo-version of
# the commit of v1.2.1 (f0839b236d7b, as sdk/v1.2.1 reports). The proxy here refuses both this
# and the language host version above (403): see docs/engine.md.
COMMAND_MOD="github.com/pulumi/pulumi-command/provider"
COMMAND_MAIN="${COMMAND_MOD}/cmd/pulumi-resource-command"
COMMAND_MODVERSION="${GET_PULUMI_COMMAND_VERSION:-v0.0.0-20260304002345-f0839b236d7b}"
COMMAND_LDFLAGS="-s -w -X ${COMMAND_MOD}/pkg/version.Version=${COMMAND_VERSION}"

CACHE_ROOT="${FASTAPI_EDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastapi-edge}"
TOOLS_DIR="${CACHE_ROOT}/tools"
BIN_DIR="${TOOLS_DIR}/bin"
SRC_DIR="${TOOLS_DIR}/src"
LOG_DIR="${TOOLS_DIR}/logs"

export PULUMI_SKIP_UPDATE_CHECK=true

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
    export GOFLAGS="-mod=mod ${GOFLAGS:-}" GOWORK=off CGO_ENABLED=0
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

ensure_langhost() {
  local bin="${BIN_DIR}/pulumi-language-nodejs" real
  if is_current "$bin" "$LANGHOST_MAIN" "$LANGHOST_LDFLAGS" "$LANGHOST_MOD" "$LANGHOST_VERSION"; then
    log "pulumi-language-nodejs ${LANGHOST_VERSION}: cached"
    return 0
  fi
  # A CLI reused from PATH usually ships its own language host beside it.
  if [[ -L "${BIN_DIR}/pulumi" ]]; then
    real="$(dirname "$(readlink -f "${BIN_DIR}/pulumi")")/pulumi-language-nodejs"
    if [[ -x "$real" ]]; then
      log "pulumi-language-nodejs: reusing ${real} (shipped with the CLI on PATH)"
      ln -sfn "$real" "$bin"
      return 0
    fi
  fi
  have_go || { log "go is missing: cannot build pulumi-language-nodejs"; return 1; }
  if wrapper_build pulumi-language-nodejs "$LANGHOST_MAIN" "$LANGHOST_LDFLAGS" "" \
    "${LANGHOST_MOD}@${LANGHOST_VERSION}" "${PKG_MOD}@${PULUMI_VERSION}" "${SDK_MOD}@${PULUMI_VERSION}"; then
    return 0
  fi
  [[ "${GET_PULUMI_LEGACY_LANGHOST:-1}" == 1 ]] || return 1
  log "WARNING: pulumi-language-nodejs ${PULUMI_VERSION} could not be built; falling back to the language" \
    "host of sdk/v3 ${LEGACY_LANGHOST_SDK} (GET_PULUMI_LEGACY_LANGHOST=0 disables; see docs/engine.md)"
  if is_current "$bin" "$LEGACY_LANGHOST_MAIN" "$LEGACY_LANGHOST_LDFLAGS" "$SDK_MOD" "$LEGACY_LANGHOST_SDK"; then
    log "pulumi-language-nodejs ${LEGACY_LANGHOST_SDK} (fallback): cached"
    return 0
  fi
  wrapper_build pulumi-language-nodejs "$LEGACY_LANGHOST_MAIN" "$LEGACY_LANGHOST_LDFLAGS" "" \
    "${SDK_MOD}@${LEGACY_LANGHOST_SDK}"
}

ensure_command_provider() {
  local bin="${BIN_DIR}/pulumi-resource-command"
  if is_current "$bin" "$COMMAND_MAIN" "$COMMAND_LDFLAGS" "$COMMAND_MOD" "$COMMAND_MODVERSION"; then
    log "pulumi-resource-command ${COMMAND_VERSION}: cached"
    return 0
  fi
  have_go || { log "go is missing: cannot build pulumi-resource-command"; return 1; }
  wrapper_build pulumi-resource-command "$COMMAND_MAIN" "$COMMAND_LDFLAGS" "" \
    "${COMMAND_MOD}@${COMMAND_MODVERSION}"
}

# pulumi-resource-pulumi-nodejs: the plugin that serves pulumi.dynamic.Resource for Node.js
# programs. Pulumi's CLI archives ship it beside the CLI; it only starts the dynamic-provider
# script of the program's own @pulumi/pulumi (resolved from the program directory).
ensure_dynamic_provider_shim() {
  local bin="${BIN_DIR}/pulumi-resource-pulumi-nodejs" tmp
  tmp="$(mktemp "${BIN_DIR}/.shim.XXXXXX")"
  cat >"$tmp" <<'SHIM'
#!/bin/sh
# Written by fastapi-edge scripts/get-pulumi.sh: Node.js dynamic-provider plugin.
script=$(node -e "console.log(require.resolve('@pulumi/pulumi/cmd/dynamic-provider'))") || exit 1
exec node "$script" "$@"
SHIM
  chmod 0755 "$tmp"
  if cmp -s "$tmp" "$bin"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$bin"
    log "wrote ${bin}"
  fi
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
  ensure_command_provider || missing+=(pulumi-resource-command)
  ensure_dynamic_provider_shim

  log "done in $(($(now) - t0))s; bin dir: ${BIN_DIR}"
  if ((${#missing[@]})); then
    log "WARNING: not available: ${missing[*]} (see docs/engine.md for the fallback)"
    [[ "${GET_PULUMI_STRICT:-0}" != 1 ]] || exit 1
  fi
  printf '%s\n' "$BIN_DIR"
}

main "$@"
