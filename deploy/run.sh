#!/usr/bin/env bash
# Install (if needed), initialise the data directory (asks for an admin password
# once, or takes PASAR_ADMIN_PASSWORD), and run the node.
# The node starts its own tor and publishes every store as an onion service;
# the admin UI is at http://127.0.0.1:8420. Extra arguments go to `pasar run`
# (e.g. --tor-control 127.0.0.1:9051 to use a system tor, or --no-tor).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install.sh
.venv/bin/pasar init
exec .venv/bin/pasar run "$@"
