#!/usr/bin/env bash
# asg-user-data.sh — first boot of an Auto Scaling Group instance (albAutoScaling):
# fetch the release bundle, check its sha256, install it in the single host's
# layout (/opt/fastapi-edge/releases/ID, the app link, the release's virtualenv,
# through the same app-deploy.sh) and start one fastapi-edge-app@PORT per port.
#
# EC2 runs it as the launch template's user data (cloud-init, as root, once per
# instance). components/asg.ts renders it by writing the settings below in as
# assignments right after the first line, so each launch template version
# carries its own; outside AWS (a test guest) they come from the environment.
#
# Settings:
#   RELEASE_ID          the release, 16 hex digits
#   RELEASE_URL         the bundle: s3://BUCKET/KEY (read with the instance role),
#                       or http://, https:// or file:// (a test serves it itself)
#   RELEASE_SHA256      the bundle's sha256: any other bundle is refused before it is unpacked
#   RELEASE_VERSION_ID  s3:// only, optional: the object version, so an older launch
#                       template version (a rollback) fetches exactly its own bundle
#   S3_REGION           s3:// only: the bucket's region
#   PACKAGES            apt packages, separated by spaces (empty: none)
#   APP_PORTS           the app's ports, separated by spaces
#   APP_ENV             the text of /etc/fastapi-edge/app.env
#   HEALTH_PATH, APP_VERSION, HEALTH_TIMEOUT   the rollout's health check (app-deploy.sh)
#   DEPLOY_ARGS         app-deploy.sh's virtualenv options, words separated by spaces
# Test hooks: FASTAPI_EDGE_BASE (default /opt/fastapi-edge), ETC_DIR (/etc/fastapi-edge),
#   UNIT_DIR (/etc/systemd/system), WORK_DIR (/var/tmp), SKIP_USER=1 (no ensure-user.sh),
#   and what app-deploy.sh and app-rollout.sh read (SYSTEMCTL, ...).
#
# Why S3 through python3-boto3: Debian 12 and 13 and Ubuntu 24.04 all package it, and
# every cloud image has python3 (cloud-init is Python); awscli is not in Ubuntu 24.04's
# archive. botocore takes the instance role's credentials from IMDSv2 itself (hop limit
# 1 is enough: it runs on the instance). A presigned URL would expire while the launch
# template version still lives (a scale-out weeks later, a rollback).
#
# Idempotent: a second run fetches and checks the bundle again, installs nothing that is
# installed and only rolls the processes again.
# Exit: 0 the app is healthy on every port; 1 failure; 78 a missing or malformed setting.
set -euo pipefail

die() {
  local code=$1
  shift
  echo "asg-user-data.sh: error: $*" >&2
  exit "$code"
}
log() { echo "asg-user-data.sh: $*"; }

RELEASE_ID=${RELEASE_ID:-}
RELEASE_URL=${RELEASE_URL:-}
RELEASE_SHA256=${RELEASE_SHA256:-}
RELEASE_VERSION_ID=${RELEASE_VERSION_ID:-}
S3_REGION=${S3_REGION:-}
PACKAGES=${PACKAGES:-}
APP_PORTS=${APP_PORTS:-}
APP_ENV=${APP_ENV:-}
HEALTH_PATH=${HEALTH_PATH:-/healthz}
APP_VERSION=${APP_VERSION:-}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-60}
DEPLOY_ARGS=${DEPLOY_ARGS:-}
BASE=${FASTAPI_EDGE_BASE:-/opt/fastapi-edge}
ETC_DIR=${ETC_DIR:-/etc/fastapi-edge}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
WORK_DIR=${WORK_DIR:-/var/tmp}

[[ $RELEASE_ID =~ ^[0-9a-f]{16}$ ]] || die 78 "RELEASE_ID must be 16 hex digits (got '$RELEASE_ID')"
[[ $RELEASE_SHA256 =~ ^[0-9a-f]{64}$ ]] || die 78 "RELEASE_SHA256 must be 64 hex digits"
case $RELEASE_URL in
  s3://?*/?*) [[ -n $S3_REGION ]] || die 78 "S3_REGION is required with an s3:// RELEASE_URL" ;;
  http://?* | https://?* | file:///?*) ;;
  *) die 78 "RELEASE_URL must be s3://BUCKET/KEY, http(s)://... or file:///... (got '$RELEASE_URL')" ;;
esac
read -r -a ports <<<"$APP_PORTS"
((${#ports[@]} > 0)) || die 78 "APP_PORTS must name at least one port"
for p in "${ports[@]}"; do [[ $p =~ ^[1-9][0-9]{0,4}$ ]] || die 78 "APP_PORTS: '$p' is not a port"; done
read -r -a packages <<<"$PACKAGES"
read -r -a deploy_args <<<"$DEPLOY_ARGS"
[[ -n $APP_ENV ]] || die 78 "APP_ENV (the app's environment file) is required"
[[ $HEALTH_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die 78 "HEALTH_TIMEOUT must be a whole number of seconds"

work=$(mktemp -d "$WORK_DIR/fastapi-edge-asg.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# 1. packages: the app's, and python3-boto3 to read s3://
if [[ $RELEASE_URL == s3://* ]]; then packages+=(python3-boto3); fi
missing=()
for pkg in ${packages[@]+"${packages[@]}"}; do
  [[ $pkg =~ ^[a-z0-9][a-z0-9+.-]*$ ]] || die 78 "PACKAGES: invalid package name '$pkg'"
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true) == installed ]] || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_opts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  apt-get "${apt_opts[@]}" -q update || die 1 "apt-get update failed (do the subnets reach the internet through a NAT gateway?)"
  apt-get "${apt_opts[@]}" -q -y install "${missing[@]}" || die 1 "apt-get install failed for: ${missing[*]}"
fi

# 2. fetch and check the bundle
bundle=$work/bundle.tar.gz
log "fetching release $RELEASE_ID from $RELEASE_URL"
case $RELEASE_URL in
  s3://*)
    AWS_DEFAULT_REGION=$S3_REGION python3 - "$RELEASE_URL" "$RELEASE_VERSION_ID" "$bundle" <<'PY' || die 1 "cannot fetch $RELEASE_URL (the instance role may read only the bucket's releases/ prefix)"
import sys
import boto3

url, version, dest = sys.argv[1:4]
bucket, key = url[len("s3://"):].split("/", 1)
extra = {"VersionId": version} if version else {}
boto3.client("s3").download_file(bucket, key, dest, ExtraArgs=extra)
PY
    ;;
  *) curl -fsS --retry 5 --retry-connrefused --proto '=http,https,file' -o "$bundle" -- "$RELEASE_URL" || die 1 "cannot fetch $RELEASE_URL" ;;
esac
have=$(sha256sum -- "$bundle" | cut -d' ' -f1)
[[ $have == "$RELEASE_SHA256" ]] || die 1 "the bundle's sha256 is $have, not $RELEASE_SHA256: refused"
mkdir -- "$work/bundle"
tar -xzf "$bundle" -C "$work/bundle" --no-same-owner
for f in bin/app-deploy.sh bin/release-lib.sh bin/app-rollout.sh bin/run-app.sh bin/ensure-user.sh systemd/fastapi-edge-app@.service; do
  [[ -f $work/bundle/$f ]] || die 1 "the bundle has no $f"
done
[[ -d $work/bundle/app ]] || die 1 "the bundle has no app/"

# 3. the host scripts, the app's user, its unit and environment (the single host's layout)
install -d -m 0755 "$BASE" "$BASE/bin" "$ETC_DIR" "$UNIT_DIR"
install -m 0755 -- "$work"/bundle/bin/*.sh "$BASE/bin/"
if [[ ${SKIP_USER:-0} != 1 ]]; then "$BASE/bin/ensure-user.sh" fastapi-edge; fi
install -m 0644 -- "$work/bundle/systemd/fastapi-edge-app@.service" "$UNIT_DIR/fastapi-edge-app@.service"
printf '%s' "$APP_ENV" >"$ETC_DIR/app.env.tmp"
chmod 0644 -- "$ETC_DIR/app.env.tmp"
mv -f -- "$ETC_DIR/app.env.tmp" "$ETC_DIR/app.env"

# 4. the release, its virtualenv and the processes: app-deploy.sh, as on a single host
upload=$WORK_DIR/fastapi-edge-upload-$RELEASE_ID
rm -rf -- "$upload"
mv -T -- "$work/bundle/app" "$upload"
wheel_args=()
if [[ -d $work/bundle/wheels ]]; then
  wheelhouse=$WORK_DIR/fastapi-edge-wheels-$RELEASE_ID
  rm -rf -- "$wheelhouse"
  mv -T -- "$work/bundle/wheels" "$wheelhouse"
  wheel_args=(--wheelhouse "$wheelhouse")
fi
FASTAPI_EDGE_BASE=$BASE UNIT_DIR=$UNIT_DIR "$BASE/bin/app-deploy.sh" --release "$RELEASE_ID" --upload "$upload" \
  --health-path "$HEALTH_PATH" --expect-version "$APP_VERSION" --health-timeout "$HEALTH_TIMEOUT" \
  ${deploy_args[@]+"${deploy_args[@]}"} ${wheel_args[@]+"${wheel_args[@]}"} -- "${ports[@]}"
log "release $RELEASE_ID is live on ports ${ports[*]}"
