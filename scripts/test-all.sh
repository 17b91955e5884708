#!/usr/bin/env bash
# The whole test suite (`npm test`): type check, unit and live tests (vitest),
# including the end-to-end scenario, then the quick benchmark. Prints one closing
# line "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p test/artifacts

echo "== type check"
tsc --noEmit -p tsconfig.json

echo "== formatting (prettier --check; npm run format fixes it)"
prettier --check "**/*.ts"

# The Debian chroots the newer-nginx, HTTP/3, post-quantum, nginx.org and ACME-profile tests
# run (test/helpers/chroot.ts and chroot-site.ts name the same entries). Built here, before
# vitest: the tests build them on first use with a synchronous call, and on a fresh machine a
# build that blocks a vitest worker for over 60 s fails the run ("Timeout calling onTaskUpdate")
# although every test passes. Cached: well under a second each once built.
echo "== cached Debian chroots (built once, a minute or so each on a fresh machine)"
bash scripts/get-nginx-newer.sh >/dev/null
bash scripts/get-chroot.sh edge-trixie trixie nginx openssl curl ca-certificates certbot pebble >/dev/null
bash scripts/get-chroot.sh edge-sid sid nginx openssl curl ca-certificates certbot pebble >/dev/null
bash scripts/get-chroot.sh keepalive-trixie-base trixie ca-certificates >/dev/null
# The venv tests' wheelhouse (test/helpers/wheels.ts), built in its own sid chroot.
bash test/helpers/build-wheels.sh "${FASTAPI_EDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastapi-edge}/test-wheelhouse" >/dev/null

echo "== unit and live tests"
status=0
vitest run --reporter=default --reporter=json --outputFile=test/artifacts/vitest.json || status=$?

echo "== quick benchmark (reports, asserts only that every variant ran without errors)"
npm run -s bench -- --quick || status=$?

# shellcheck disable=SC2016 # JavaScript, not shell: nothing here is meant to expand
node -e '
const r = require("./test/artifacts/vitest.json");
console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
'
exit "$status"
