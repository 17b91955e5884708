#!/usr/bin/env bash
# cert-expiry-check.sh — days until a TLS certificate expires.
#
# Usage:
#   cert-expiry-check.sh [OPTIONS] CERT.pem
#   cert-expiry-check.sh [OPTIONS] --host HOST [--port PORT] [--servername NAME]
# Options:
#   --publish        also send the value to CloudWatch:
#                      aws cloudwatch put-metric-data --namespace FastapiEdge
#                        --metric-name CertificateDaysToExpiry
#                        --dimensions Domain=NAME --value N --unit Count --region R
#   --domain NAME    Domain dimension (default: --servername, else --host, else
#                    the certificate's subject CN, else the cert's directory name)
#   --warn-days N    threshold (default $WARN_DAYS or 14)
# Prints exactly one line on stdout: days_left=N (whole days, rounded down;
# negative once expired). Everything else goes to stderr.
#
# Environment:
#   WARN_DAYS        threshold in days (default 14)
#   AWS_REGION / AWS_DEFAULT_REGION   region for --publish; otherwise read
#                    from IMDSv2 at $AWS_EC2_METADATA_SERVICE_ENDPOINT
#                    (default http://169.254.169.254)
#   CONNECT_TIMEOUT  seconds for the live TLS connection (default 15)
#   NOW_EPOCH        override "now" (seconds since epoch; for tests)
# Exit: 0 ok; 2 days_left < WARN_DAYS (days_left still printed, and still
#       published); 1 error (unreadable cert, connection failure, publish
#       failure); 64 usage.
set -euo pipefail

die() {
  echo "cert-expiry-check.sh: error: $*" >&2
  exit 1
}
usage() {
  echo "usage: cert-expiry-check.sh [--publish] [--domain NAME] [--warn-days N] (CERT.pem | --host HOST [--port PORT] [--servername NAME])" >&2
  exit 64
}
need_arg() { (( $1 >= 2 )) || usage; }

cert_file=
host=
port=443
servername=
domain=
publish=0
warn_days=${WARN_DAYS:-14}

while (( $# > 0 )); do
  case $1 in
    --host) need_arg $#; host=$2; shift 2 ;;
    --port) need_arg $#; port=$2; shift 2 ;;
    --servername) need_arg $#; servername=$2; shift 2 ;;
    --domain) need_arg $#; domain=$2; shift 2 ;;
    --warn-days) need_arg $#; warn_days=$2; shift 2 ;;
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

[[ $warn_days =~ ^-?[0-9]+$ ]] || die "WARN_DAYS/--warn-days must be an integer, got '$warn_days'"
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

enddate=$(openssl x509 -noout -enddate <<<"$pem" 2>/dev/null) ||
  die "$source_desc does not contain a PEM certificate"
enddate=${enddate#notAfter=}
not_after=$(date -u -d "$enddate" +%s 2>/dev/null) ||
  die "cannot parse certificate end date '$enddate'"

now=${NOW_EPOCH:-$(date -u +%s)}
[[ $now =~ ^[0-9]+$ ]] || die "NOW_EPOCH must be seconds since the epoch"

# floor((not_after - now) / 86400), also for negative values
diff=$((not_after - now))
if (( diff >= 0 )); then
  days_left=$((diff / 86400))
else
  days_left=$((-((-diff + 86399) / 86400)))
fi

echo "days_left=$days_left"

# ------------------------------------------------------------ publish
status=0
if (( days_left < warn_days )); then
  echo "cert-expiry-check.sh: WARNING: certificate from $source_desc expires in $days_left day(s) ($enddate), below threshold $warn_days" >&2
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
    --metric-name CertificateDaysToExpiry \
    --dimensions "Domain=$domain" \
    --value "$days_left" \
    --unit Count \
    --region "$region" >&2 || die "aws cloudwatch put-metric-data failed"
  echo "cert-expiry-check.sh: published CertificateDaysToExpiry=$days_left for Domain=$domain in $region" >&2
fi

exit "$status"
