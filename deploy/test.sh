#!/usr/bin/env bash
# Install everything the tests need (idempotent) and run the whole suite.
# Extra arguments go to pytest, e.g. deploy/test.sh -k storefront
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install.sh --test
# A real regtest bitcoind for the payment tests: built once (~15 min on 2 cores), then cached
# under ${XDG_CACHE_HOME:-~/.cache}/pasar/bitcoind/; PASAR_BITCOIND, when set, names one to use.
PASAR_BITCOIND=$(deploy/build-bitcoind.sh)
export PASAR_BITCOIND
.venv/bin/ruff check node tests
.venv/bin/mypy
# Three workers (pytest-xdist), one test file each at a time: most integration tests wait on tor,
# bitcoind or a browser, so three run side by side on 2 cores (measured on the whole suite: one
# process 15m45s before the node-order tests; two workers 14m20s and three 12m39s with them).
# PASAR_TEST_WORKERS=0 runs everything in one process.
workers=${PASAR_TEST_WORKERS:-3}
parallel=()
[ "$workers" != "0" ] && parallel=(-n "$workers" --dist loadfile)
set +e
.venv/bin/python -m pytest "${parallel[@]}" "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure for this project" >&2
  exit 1
fi
exit "$code"
