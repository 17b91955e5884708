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
