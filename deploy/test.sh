#!/usr/bin/env bash
# Install everything the tests need (idempotent) and run the whole suite.
# Extra arguments go to pytest, e.g. deploy/test.sh -k storefront
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install.sh --test
.venv/bin/ruff check node tests
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure for this project" >&2
  exit 1
fi
exit "$code"
