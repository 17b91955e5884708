#!/usr/bin/env bash
# The whole test suite (`npm test`): type check, unit and live tests (vitest),
# then the end-to-end scenario and the quick benchmark. Prints one closing
# line "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p test/artifacts

echo "== type check"
tsc --noEmit -p tsconfig.json

echo "== unit and live tests"
status=0
vitest run --reporter=default --reporter=json --outputFile=test/artifacts/vitest.json || status=$?

node -e '
const r = require("./test/artifacts/vitest.json");
console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
'
exit "$status"
