#!/usr/bin/env bash
# Obtain (or keep) the site's certificate with certbot's webroot plugin.
#
#   obtain-cert.sh --domain D --email E --server ACME_DIRECTORY_URL
#                  [--webroot DIR] [--ca-bundle PEM] [--profile NAME]
#
# Idempotent: an existing certificate from the same ACME server and profile is
# kept until it is due for renewal (certbot --keep-until-expiring makes no
# ACME call then). When the configured server or profile changed (say Let's
# Encrypt staging to production, or classic to shortlived), the certificate
# is replaced. nginx must already serve /.well-known/acme-challenge/ from the
# webroot on port 80.
#
# --profile NAME (certbot 4.0+): the ACME profile (draft-ietf-acme-profiles),
# passed as --preferred-profile, which certbot records in the renewal config
# (preferred_profile = NAME) so scheduled renewals ask for it too. Preferred,
# not required: should the CA later drop the profile, renewals fall back to
# its default profile instead of failing, and the certificate never lapses.
# A mistyped or unoffered name must not fall back silently at deploy time, so
# before a new certificate is requested this script reads the directory and
# fails when NAME is not among its meta.profiles.
#
# Renewal window: certbot 4.0 meant to renew at a third of the lifetime left
# (half under 10 days) but merges its old default renew_before_expiry = 30
# days into every lineage and renews whenever either says so (fixed in 4.1;
# Debian 13 ships 4.0.0): a 6-day certificate would be renewed at every run
# of certbot.timer, twice a day, into Let's Encrypt's duplicate-certificate
# limit, and a 45-day one after 15 days. So after certbot this script writes
# renew_before_expiry = (a third of the certificate's lifetime, half under 10
# days) seconds into the renewal config. certbot keeps that line when it
# renews; certbot 2.x (Debian 12, Ubuntu 24.04) honours it too, and 4.1+
# still lets an earlier ACME Renewal Information window win.
#
# Environment (tests; unset on hosts): CERTBOT_CONFIG_DIR, CERTBOT_WORK_DIR,
# CERTBOT_LOGS_DIR replace certbot's /etc/letsencrypt, /var/lib/letsencrypt
# and /var/log/letsencrypt.
set -euo pipefail

domain="" email="" server="" webroot="/var/www/letsencrypt" ca_bundle="" profile=""
while [ $# -gt 0 ]; do
  case "$1" in
    --domain) domain="$2"; shift 2 ;;
    --email) email="$2"; shift 2 ;;
    --server) server="$2"; shift 2 ;;
    --webroot) webroot="$2"; shift 2 ;;
    --ca-bundle) ca_bundle="$2"; shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    *) echo "obtain-cert.sh: unknown argument: $1" >&2; exit 64 ;;
  esac
done
for v in domain email server; do
  if [ -z "${!v}" ]; then echo "obtain-cert.sh: --$v is required" >&2; exit 64; fi
done
if [ -n "$profile" ] && ! [[ $profile =~ ^[a-z][a-z0-9-]{0,62}$ ]]; then
  echo "obtain-cert.sh: --profile must be a lowercase ACME profile name such as tlsserver, got '$profile'" >&2
  exit 64
fi

if [ -n "$ca_bundle" ]; then
  # certbot trusts only REQUESTS_CA_BUNDLE for a private ACME server.
  export REQUESTS_CA_BUNDLE="$ca_bundle"
fi

install -d -m 0755 "$webroot/.well-known/acme-challenge"

# The profiles the ACME directory offers (its meta.profiles keys), one a line.
# certbot depends on python3-requests, which honours REQUESTS_CA_BUNDLE.
offered_profiles() {
  python3 - "$server" <<'PY'
import sys
import requests

directory = requests.get(sys.argv[1], timeout=30).json()
for name in (directory.get("meta") or {}).get("profiles") or {}:
    print(name)
PY
}

config_dir=${CERTBOT_CONFIG_DIR:-/etc/letsencrypt}
dirs=()
[ -z "${CERTBOT_CONFIG_DIR:-}" ] || dirs+=(--config-dir "$CERTBOT_CONFIG_DIR")
[ -z "${CERTBOT_WORK_DIR:-}" ] || dirs+=(--work-dir "$CERTBOT_WORK_DIR")
[ -z "${CERTBOT_LOGS_DIR:-}" ] || dirs+=(--logs-dir "$CERTBOT_LOGS_DIR")
renewal="$config_dir/renewal/$domain.conf"
extra=()
new_cert=1
if [ -f "$renewal" ]; then
  new_cert=0
  current="$(sed -n 's/^server *= *//p' "$renewal" | head -n 1)"
  if [ "$current" != "$server" ]; then
    echo "obtain-cert.sh: ACME server changed ($current -> $server): replacing the certificate"
    new_cert=1
  fi
  recorded="$(sed -n 's/^preferred_profile *= *//p' "$renewal" | head -n 1)"
  if [ "$recorded" != "$profile" ]; then
    echo "obtain-cert.sh: ACME profile changed (${recorded:-CA default} -> ${profile:-CA default}): replacing the certificate"
    new_cert=1
  fi
  if ((new_cert)); then extra+=(--force-renewal); fi
fi
if [ -n "$profile" ]; then
  if ((new_cert)); then
    offered="$(offered_profiles)" || { echo "obtain-cert.sh: cannot read the ACME directory $server" >&2; exit 1; }
    if ! grep -qxF -- "$profile" <<<"$offered"; then
      echo "obtain-cert.sh: ACME profile '$profile' (acmeProfile) is not offered by $server; it offers: $(echo "${offered:-none}" | paste -sd, -)" >&2
      exit 1
    fi
  fi
  extra+=(--preferred-profile "$profile")
fi

certbot certonly "${dirs[@]}" --webroot -w "$webroot" \
  -d "$domain" --cert-name "$domain" \
  --server "$server" \
  --agree-tos -m "$email" --no-eff-email \
  --non-interactive --keep-until-expiring \
  "${extra[@]}"

# Pin the renewal window to the lifetime of the certificate now in place.
cert="$config_dir/live/$domain/cert.pem"
not_before="$(date -u -d "$(openssl x509 -noout -startdate -in "$cert" | sed 's/^notBefore=//')" +%s)"
not_after="$(date -u -d "$(openssl x509 -noout -enddate -in "$cert" | sed 's/^notAfter=//')" +%s)"
lifetime=$((not_after - not_before))
if ((lifetime < 10 * 86400)); then window=$((lifetime / 2)); else window=$((lifetime / 3)); fi
line="renew_before_expiry = $window seconds"
if ! grep -qxF -- "$line" "$renewal"; then
  tmp="$(mktemp "$renewal.XXXXXX")"
  { echo "$line"; grep -Ev '^#? *renew_before_expiry *=' "$renewal"; } >"$tmp"
  chmod --reference="$renewal" "$tmp"
  mv -f -- "$tmp" "$renewal"
  echo "obtain-cert.sh: certbot renews $domain with $((window / 3600)) hour(s) left ($(((lifetime + 43200) / 86400))-day certificate)"
fi

# Renewals run from certbot's systemd timer (Debian and Ubuntu packages).
if [ -d /run/systemd/system ]; then
  systemctl enable --now certbot.timer >/dev/null 2>&1 || true
fi
echo "obtain-cert.sh: certificate for $domain in $config_dir/live/$domain"
