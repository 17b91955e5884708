#!/usr/bin/env bash
# Obtain (or keep) the site's certificate with certbot's webroot plugin.
#
#   obtain-cert.sh --domain D --email E --server ACME_DIRECTORY_URL
#                  [--webroot DIR] [--ca-bundle PEM]
#
# Idempotent: an existing certificate from the same ACME server is kept until
# it is due for renewal (certbot --keep-until-expiring makes no ACME call
# then). When the configured server changed (say Let's Encrypt staging to
# production), the certificate is replaced. nginx must already serve
# /.well-known/acme-challenge/ from the webroot on port 80.
set -euo pipefail

domain="" email="" server="" webroot="/var/www/letsencrypt" ca_bundle=""
while [ $# -gt 0 ]; do
  case "$1" in
    --domain) domain="$2"; shift 2 ;;
    --email) email="$2"; shift 2 ;;
    --server) server="$2"; shift 2 ;;
    --webroot) webroot="$2"; shift 2 ;;
    --ca-bundle) ca_bundle="$2"; shift 2 ;;
    *) echo "obtain-cert.sh: unknown argument: $1" >&2; exit 64 ;;
  esac
done
for v in domain email server; do
  if [ -z "${!v}" ]; then echo "obtain-cert.sh: --$v is required" >&2; exit 64; fi
done

if [ -n "$ca_bundle" ]; then
  # certbot trusts only REQUESTS_CA_BUNDLE for a private ACME server.
  export REQUESTS_CA_BUNDLE="$ca_bundle"
fi

install -d -m 0755 "$webroot/.well-known/acme-challenge"

renewal="/etc/letsencrypt/renewal/$domain.conf"
extra=()
if [ -f "$renewal" ]; then
  current="$(sed -n 's/^server *= *//p' "$renewal" | head -n 1)"
  if [ "$current" != "$server" ]; then
    echo "obtain-cert.sh: ACME server changed ($current -> $server): replacing the certificate"
    extra+=(--force-renewal)
  fi
fi

certbot certonly --webroot -w "$webroot" \
  -d "$domain" --cert-name "$domain" \
  --server "$server" \
  --agree-tos -m "$email" --no-eff-email \
  --non-interactive --keep-until-expiring \
  "${extra[@]}"

# Renewals run from certbot's systemd timer (Debian and Ubuntu packages).
if [ -d /run/systemd/system ]; then
  systemctl enable --now certbot.timer >/dev/null 2>&1 || true
fi
echo "obtain-cert.sh: certificate for $domain in /etc/letsencrypt/live/$domain"
