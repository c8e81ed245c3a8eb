#!/usr/bin/env bash
# Install (if needed), initialise the data directory (asks for an admin password
# once, or takes PASAR_ADMIN_PASSWORD), and run the node.
# The node starts its own tor and publishes every store as an onion service;
# the admin UI is at http://127.0.0.1:8420. Extra arguments go to `pasar run`
# (e.g. --tor-control 127.0.0.1:9051 to use a system tor, or --no-tor).
#
#   deploy/run.sh demo [down|status]   a whole demo market on 127.0.0.1 instead
#                                      (docs/demo.md; builds a regtest bitcoind
#                                      once unless PASAR_BITCOIND names one)
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install.sh
if [ "${1:-}" = "demo" ]; then
  shift
  starting=1
  for arg in "$@"; do
    case "$arg" in down|status) starting=0 ;; esac
  done
  if [ "$starting" = 1 ]; then
    PASAR_BITCOIND=$(deploy/build-bitcoind.sh)
    export PASAR_BITCOIND
  fi
  exec .venv/bin/pasar demo "$@"
fi
.venv/bin/pasar init
exec .venv/bin/pasar run "$@"
