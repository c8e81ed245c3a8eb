#!/bin/sh
# Entry point of deploy/Dockerfile. The pasar service refuses to start before
# `pasar init` ran once (docs/deploy.md: `docker compose run --rm pasar pasar init`,
# which asks for the admin password, or takes PASAR_ADMIN_PASSWORD given to that
# one-off run only). The tor and bitcoind services run their own command.
set -eu
if [ "${1:-}" = "pasar" ] && [ "${2:-}" != "init" ] && [ "${2:-}" != "restore" ] && [ ! -e "${PASAR_DATA_DIR:-/var/lib/pasar}/node.json" ]; then
  if [ -z "${PASAR_ADMIN_PASSWORD:-}" ]; then
    echo "not initialised: run once \`docker compose run --rm pasar pasar init\` (it asks for the admin password)" >&2
    exit 1
  fi
  pasar init
fi
# The password is needed by `pasar init` only: the node and other commands never see it.
[ "${2:-}" = "init" ] || unset PASAR_ADMIN_PASSWORD
exec "$@"
