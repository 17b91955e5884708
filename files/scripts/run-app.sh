#!/usr/bin/env bash
# run-app.sh PORT — exec uvicorn for one fastapi-edge app instance.
#
# Used as ExecStart of fastapi-edge-app@.service (PORT = instance name %i).
# Required environment (normally from /etc/fastapi-edge/app.env):
#   APP_MODULE            ASGI app, e.g. main:app
#   APP_DIR               directory holding the module, e.g. /opt/fastapi-edge/app
#   FORWARDED_ALLOW_IPS   proxies trusted for X-Forwarded-* (e.g. 127.0.0.1)
# Optional:
#   PYTHON                interpreter (default /usr/bin/python3, which has Debian's FastAPI)
#   APP_VENV              the release's virtualenv, relative to APP_DIR (e.g. .venv):
#                         its python runs uvicorn, and PYTHON is not used
#   UVICORN_KEEPALIVE     keep-alive timeout in s (default 75; must exceed
#                         nginx's upstream keepalive_timeout so nginx closes first)
#   UVICORN_HOST          bind address (default 127.0.0.1)
#   APP_UDS               absolute path of a unix socket to serve on instead of
#                         UVICORN_HOST:PORT (uvicorn --uds; PORT is still required and
#                         exported as APP_PORT). Normally derived from APP_UDS_DIR below;
#                         FORWARDED_ALLOW_IPS must then be "*" for --proxy-headers to
#                         apply (a unix socket peer has no address)
#   APP_UDS_DIR           absolute directory of the instances' sockets (appUpstream unix,
#                         /run/fastapi-edge, the unit's RuntimeDirectory): APP_UDS defaults
#                         to $APP_UDS_DIR/app-PORT.sock. uvicorn makes the socket mode 0666
#                         whatever the umask, so nginx's worker user can connect
# Exit: 64 usage error, 78 configuration error; otherwise uvicorn's own status.
set -euo pipefail

die() {
  local code=$1
  shift
  echo "run-app.sh: error: $*" >&2
  exit "$code"
}

[[ $# -eq 1 ]] || die 64 "usage: run-app.sh PORT (got $# arguments)"
port=$1
if ! [[ $port =~ ^[0-9]{1,5}$ ]] || (( 10#$port < 1 || 10#$port > 65535 )); then
  die 64 "PORT must be an integer 1-65535, got '$port'"
fi
port=$((10#$port))

missing=()
for var in APP_MODULE APP_DIR FORWARDED_ALLOW_IPS; do
  [[ -n ${!var:-} ]] || missing+=("$var")
done
(( ${#missing[@]} == 0 )) ||
  die 78 "required environment variable(s) not set: ${missing[*]} (expected in /etc/fastapi-edge/app.env)"

[[ -d $APP_DIR ]] || die 78 "APP_DIR=$APP_DIR is not a directory"
# APP_DIR is the symlink to the live release: resolved once here, so this process keeps
# its own release's code and packages when a deploy points the link at a newer one.
release_dir=$(readlink -f -- "$APP_DIR")

if [[ -n ${APP_VENV:-} ]]; then
  [[ $APP_VENV =~ ^[A-Za-z0-9._-]+$ && $APP_VENV != .. ]] || die 78 "APP_VENV must be a directory name inside the release, got '$APP_VENV'"
  python=$release_dir/$APP_VENV/bin/python
  [[ -x $python ]] || die 78 "the release $release_dir has no virtualenv $APP_VENV (deployed without app-deploy.sh --venv?)"
else
  python=${PYTHON:-/usr/bin/python3}
  command -v "$python" >/dev/null 2>&1 || die 78 "python interpreter '$python' not found (set PYTHON)"
fi

keepalive=${UVICORN_KEEPALIVE:-75}
[[ $keepalive =~ ^[0-9]+$ ]] || die 78 "UVICORN_KEEPALIVE must be a whole number of seconds, got '$keepalive'"

if [[ -n ${APP_UDS_DIR:-} ]]; then
  [[ $APP_UDS_DIR == /* ]] || die 78 "APP_UDS_DIR must be an absolute path, got '$APP_UDS_DIR'"
  APP_UDS=${APP_UDS:-${APP_UDS_DIR%/}/app-$port.sock}
fi
if [[ -n ${APP_UDS:-} ]]; then
  [[ $APP_UDS == /* ]] || die 78 "APP_UDS must be an absolute path, got '$APP_UDS'"
  [[ -d $(dirname -- "$APP_UDS") ]] || die 78 "APP_UDS=$APP_UDS: its directory does not exist"
  bind=(--uds "$APP_UDS")
else
  bind=(--host "${UVICORN_HOST:-127.0.0.1}" --port "$port")
fi

export APP_PORT=$port

exec "$python" -m uvicorn "$APP_MODULE" \
  --app-dir "$release_dir" \
  "${bind[@]}" \
  --proxy-headers \
  --forwarded-allow-ips "$FORWARDED_ALLOW_IPS" \
  --timeout-keep-alive "$keepalive" \
  --no-access-log
