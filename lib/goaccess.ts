// GoAccess reads the JSON access log as it is (GoAccess 1.7, Debian 12's,
// parses JSON lines when --log-format is a JSON object whose values are its
// specifiers; keys it is not given are ignored). Pure: the arguments only;
// scripts/logs.ts runs it.

/** Our keys (files/nginx/log-format.conf) mapped to GoAccess specifiers. */
export const GOACCESS_LOG_FORMAT = JSON.stringify({
  time: "%x",
  client: "%h",
  host: "%v",
  method: "%m",
  path: "%U",
  protocol: "%H",
  status: "%s",
  bytes: "%b",
  request_time: "%T",
  user_agent: "%u",
});

/** $time_iso8601: 2026-11-29T17:04:05+00:00. */
export const GOACCESS_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z";

/** Visitors panel buckets: minutes for a window up to 3 hours, hours up to 3 days, else days. */
export function dateSpec(spanSeconds: number): "min" | "hr" | "date" {
  return spanSeconds <= 3 * 3600 ? "min" : spanSeconds <= 3 * 86400 ? "hr" : "date";
}

/** `goaccess` arguments: an HTML report of `input` at `output`, ignoring any ~/.goaccessrc. */
export function goaccessArgs(input: string, output: string, title: string, spanSeconds = 0): string[] {
  return [
    input,
    "--no-global-config",
    `--date-spec=${dateSpec(spanSeconds)}`,
    `--log-format=${GOACCESS_LOG_FORMAT}`,
    `--datetime-format=${GOACCESS_DATETIME_FORMAT}`,
    `--html-report-title=${title}`,
    "--tz=UTC",
    "-o",
    output,
  ];
}
