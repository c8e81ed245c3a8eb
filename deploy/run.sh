#!/usr/bin/env bash
# Install (if needed), initialise the data directory (asks for an admin password
# once, or takes PASAR_ADMIN_PASSWORD), and run the node.
# Stores are served on loopback; the admin UI is at http://127.0.0.1:8420.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install.sh
.venv/bin/pasar init
exec .venv/bin/pasar run --no-tor "$@"
