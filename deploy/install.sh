#!/usr/bin/env bash
# Install Pasar and everything it needs into ./.venv (idempotent; safe to re-run).
#   deploy/install.sh           install only
#   deploy/install.sh --test    also the test tools
# System packages (Debian): python3-venv for the venv, tor for onion services;
# with --test also chromium and firefox-esr for the browser tests (Playwright drives
# the system chromium; no browser is ever downloaded) and postgresql (the tests run
# the directory suite on a throwaway PostgreSQL as well as on SQLite).
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

need_apt=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v tor >/dev/null 2>&1 || [ -x /usr/sbin/tor ] || need_apt+=(tor)
if [ "$want_test" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v firefox-esr >/dev/null 2>&1 || need_apt+=(firefox-esr)
  # PostgreSQL for the directory's second backend: the tests start their own throwaway server
  # (initdb + pg_ctl in a temp dir, tests/pg.py) from these binaries; the system service is not used.
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
  command -v jq >/dev/null 2>&1 || need_apt+=(jq)  # docs/recovery.md reads the sheet with jq
  # compose-file check without a Docker engine (tests/unit/test_deploy_files.py)
  { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; } || need_apt+=(docker-compose)
  command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)  # checks deploy/pasar.service
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    if [[ " ${need_apt[*]} " == *" postgresql "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
      # Only the server binaries are wanted: no system cluster created (and started) on port 5432.
      $sudo_cmd mkdir -p /etc/postgresql-common
      echo "create_main_cluster = false" | $sudo_cmd tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    echo "installing Debian packages: ${need_apt[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${need_apt[@]}" >/dev/null
  else
    echo "please install: ${need_apt[*]} (no apt-get on this system)" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# Re-install only when the project's requirements changed (cached by a stamp).
extras=""
[ "$want_test" = 1 ] && extras="[test]"
stamp=".venv/.pasar-installed${extras:+-test}"
digest=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  log=$(mktemp)
  if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e ".${extras}"; } >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2
    rm -f "$log"
    echo "pip install failed (see above)" >&2
    exit 1
  fi
  rm -f "$log"
  .venv/bin/python -c 'import node.cli'
  echo "$digest" > "$stamp"
fi
echo "Pasar installed: $(pwd)/.venv/bin/pasar"
