#!/usr/bin/env bash
# cert-expiry-check.sh — how much of a TLS certificate's lifetime is left.
#
# Usage:
#   cert-expiry-check.sh [OPTIONS] CERT.pem
#   cert-expiry-check.sh [OPTIONS] --host HOST [--port PORT] [--servername NAME]
# Options:
#   --publish          also send the percentage to CloudWatch:
#                        aws cloudwatch put-metric-data --namespace FastapiEdge
#                          --metric-name CertificateLifetimeLeftPercent
#                          --dimensions Domain=NAME --value P --unit Percent --region R
#   --domain NAME      Domain dimension (default: --servername, else --host, else
#                      the certificate's subject CN, else the cert's directory name)
#   --warn-percent P   threshold (default $WARN_PERCENT or 25)
# The measure is the fraction of the lifetime left,
#   percent_left = floor(100 * (notAfter - now) / (notAfter - notBefore)),
# not days: certbot renews at a third of the lifetime left (half under 10
# days), so a fixed "14 days left" means nothing for a 6-day certificate and
# is late for a 45-day one. Days stay in the output for humans.
# Prints exactly one line on stdout: percent_left=P days_left=N (both rounded
# down; negative once expired). Everything else goes to stderr.
#
# Environment:
#   WARN_PERCENT     threshold in percent of the lifetime (default 25)
#   AWS_REGION / AWS_DEFAULT_REGION   region for --publish; otherwise read
#                    from IMDSv2 at $AWS_EC2_METADATA_SERVICE_ENDPOINT
#                    (default http://169.254.169.254)
#   CONNECT_TIMEOUT  seconds for the live TLS connection (default 15)
#   NOW_EPOCH        override "now" (seconds since epoch; for tests)
# Exit: 0 ok; 2 percent_left < WARN_PERCENT (still printed, and still
#       published); 1 error (unreadable cert, connection failure, publish
#       failure); 64 usage.
set -euo pipefail

die() {
  echo "cert-expiry-check.sh: error: $*" >&2
  exit 1
}
usage() {
  echo "usage: cert-expiry-check.sh [--publish] [--domain NAME] [--warn-percent P] (CERT.pem | --host HOST [--port PORT] [--servername NAME])" >&2
  exit 64
}
need_arg() { (( $1 >= 2 )) || usage; }

cert_file=
host=
port=443
servername=
domain=
publish=0
warn_percent=${WARN_PERCENT:-25}

while (( $# > 0 )); do
  case $1 in
    --host) need_arg $#; host=$2; shift 2 ;;
    --port) need_arg $#; port=$2; shift 2 ;;
    --servername) need_arg $#; servername=$2; shift 2 ;;
    --domain) need_arg $#; domain=$2; shift 2 ;;
    --warn-percent) need_arg $#; warn_percent=$2; shift 2 ;;
    --publish) publish=1; shift ;;
    -h | --help) usage ;;
    -*) echo "cert-expiry-check.sh: error: unknown option $1" >&2; usage ;;
    *)
      [[ -z $cert_file ]] || usage
      cert_file=$1
      shift
      ;;
  esac
done

if ! [[ $warn_percent =~ ^[0-9]{1,3}$ ]] || ((10#$warn_percent > 100)); then
  die "WARN_PERCENT/--warn-percent must be a whole number from 0 to 100, got '$warn_percent'"
fi
warn_percent=$((10#$warn_percent))
if [[ -n $cert_file && -n $host ]] || [[ -z $cert_file && -z $host ]]; then
  echo "cert-expiry-check.sh: error: give either a certificate file or --host" >&2
  usage
fi
[[ $port =~ ^[0-9]+$ ]] || die "--port must be numeric, got '$port'"
command -v openssl >/dev/null 2>&1 || die "openssl is required"

# ------------------------------------------------------------ get the cert
if [[ -n $host ]]; then
  servername=${servername:-$host}
  connect=$host:$port
  [[ $host == *:* ]] && connect="[$host]:$port"
  pem=$(timeout "${CONNECT_TIMEOUT:-15}" openssl s_client -connect "$connect" \
    -servername "$servername" </dev/null 2>/dev/null) || true
  [[ $pem == *"BEGIN CERTIFICATE"* ]] ||
    die "could not read a certificate from $connect (servername $servername)"
  source_desc="$connect (servername $servername)"
else
  [[ -r $cert_file ]] || die "cannot read certificate file $cert_file"
  pem=$(<"$cert_file")
  source_desc=$cert_file
fi

dates=$(openssl x509 -noout -startdate -enddate <<<"$pem" 2>/dev/null) ||
  die "$source_desc does not contain a PEM certificate"
startdate=$(sed -n 's/^notBefore=//p' <<<"$dates")
enddate=$(sed -n 's/^notAfter=//p' <<<"$dates")
not_before=$(date -u -d "$startdate" +%s 2>/dev/null) ||
  die "cannot parse certificate start date '$startdate'"
not_after=$(date -u -d "$enddate" +%s 2>/dev/null) ||
  die "cannot parse certificate end date '$enddate'"
lifetime=$((not_after - not_before))
((lifetime > 0)) || die "certificate from $source_desc has no lifetime (notBefore $startdate, notAfter $enddate)"

now=${NOW_EPOCH:-$(date -u +%s)}
[[ $now =~ ^[0-9]+$ ]] || die "NOW_EPOCH must be seconds since the epoch"

# floor(a / b) for b > 0, also for negative a (bash rounds towards zero)
floor_div() {
  local a=$1 b=$2
  if ((a >= 0)); then
    echo $((a / b))
  else
    echo $((-((-a + b - 1) / b)))
  fi
}
diff=$((not_after - now))
days_left=$(floor_div "$diff" 86400)
percent_left=$(floor_div $((100 * diff)) "$lifetime")
lifetime_days=$(((lifetime + 43200) / 86400)) # rounded: CAs issue N days minus a second

echo "percent_left=$percent_left days_left=$days_left"

# ------------------------------------------------------------ publish
status=0
if ((percent_left < warn_percent)); then
  echo "cert-expiry-check.sh: WARNING: certificate from $source_desc has $percent_left% of its $lifetime_days-day lifetime left, below threshold $warn_percent%: it expires in $days_left day(s) ($enddate) and certbot should have renewed it" >&2
  status=2
fi

if (( publish )); then
  if [[ -z $domain ]]; then
    domain=${servername:-}
  fi
  if [[ -z $domain ]]; then
    subject=$(openssl x509 -noout -subject -nameopt RFC2253 <<<"$pem" 2>/dev/null || true)
    if [[ $subject =~ CN=([^,]+) ]]; then
      domain=${BASH_REMATCH[1]}
    else
      domain=$(basename -- "$(dirname -- "$cert_file")")
    fi
  fi
  [[ $domain != *[[:space:],=]* && -n $domain ]] || die "cannot use '$domain' as the Domain dimension (use --domain)"

  command -v aws >/dev/null 2>&1 || die "--publish needs the aws CLI on PATH"
  region=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
  if [[ -z $region ]]; then
    imds=${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}
    imds=${imds%/}
    token=$(curl -sSf --max-time 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
      "$imds/latest/api/token" 2>/dev/null) || die "no AWS_REGION set and IMDSv2 token request to $imds failed"
    region=$(curl -sSf --max-time 2 -H "X-aws-ec2-metadata-token: $token" \
      "$imds/latest/meta-data/placement/region" 2>/dev/null) || die "no AWS_REGION set and IMDSv2 region lookup failed"
    [[ $region =~ ^[a-z0-9-]+$ ]] || die "IMDS returned an invalid region '$region'"
  fi
  aws cloudwatch put-metric-data \
    --namespace FastapiEdge \
    --metric-name CertificateLifetimeLeftPercent \
    --dimensions "Domain=$domain" \
    --value "$percent_left" \
    --unit Percent \
    --region "$region" >&2 || die "aws cloudwatch put-metric-data failed"
  echo "cert-expiry-check.sh: published CertificateLifetimeLeftPercent=$percent_left for Domain=$domain in $region ($days_left day(s) left)" >&2
fi

exit "$status"
