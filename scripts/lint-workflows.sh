#!/usr/bin/env bash
# Lint every GitHub Actions workflow with actionlint (built and cached by
# scripts/get-actionlint.sh). actionlint also runs shellcheck over `run:`
# blocks when shellcheck is on PATH, and reports it when it is not.
#
#   scripts/lint-workflows.sh                 # all of .github/workflows
#   scripts/lint-workflows.sh path/to/x.yml   # just these files
#
# Exit status is actionlint's: 0 clean, 1 problems found, >1 failure.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

actionlint="$(bash scripts/get-actionlint.sh | tail -n 1)"
if [[ ! -x "${actionlint}" ]]; then
  printf 'lint-workflows: get-actionlint.sh did not produce an executable (got %q)\n' "${actionlint}" >&2
  exit 2
fi

if ! command -v shellcheck >/dev/null 2>&1; then
  echo "lint-workflows: shellcheck not on PATH; run: blocks are not shell-checked (apt-get install shellcheck)" >&2
fi

if [[ $# -gt 0 ]]; then
  files=("$@")
else
  shopt -s nullglob
  files=(.github/workflows/*.yml .github/workflows/*.yaml)
  shopt -u nullglob
  if [[ ${#files[@]} -eq 0 ]]; then
    echo "lint-workflows: no workflow files under .github/workflows" >&2
    exit 2
  fi
fi

"${actionlint}" -no-color "${files[@]}"
echo "lint-workflows: ${#files[@]} workflow file(s) clean" >&2
