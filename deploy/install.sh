#!/usr/bin/env bash
# Install Pasar and everything it needs into ./.venv (idempotent; safe to re-run).
#   deploy/install.sh           install only
#   deploy/install.sh --test    also the test tools
# System packages (Debian): python3-venv for the venv, tor for onion services;
# with --test also chromium and firefox-esr for the browser tests (Playwright drives
# the system chromium; no browser is ever downloaded).
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
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    echo "installing Debian packages: ${need_apt[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
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
