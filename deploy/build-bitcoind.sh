#!/usr/bin/env bash
# Build a wallet-enabled bitcoind + bitcoin-cli for the TEST SUITE (regtest only).
# Debian ships no Bitcoin Core; the py-bitcoinkernel source distribution vendors the
# full Bitcoin Core tree under depend/bitcoin. The result is cached by version under
#   ${XDG_CACHE_HOME:-~/.cache}/pasar/bitcoind/<version>/{bitcoind,bitcoin-cli}
# so later runs skip the ~15 minute build. Idempotent; prints the bitcoind path.
# Operators point Pasar at their own Bitcoin Core; this script is for tests only.
# Set PASAR_BITCOIND to use an existing bitcoind instead (bitcoin-cli beside it).
set -euo pipefail
cd "$(dirname "$0")/.."

version="py-bitcoinkernel-0.1.0a5"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pasar/bitcoind/$version"

if [ -n "${PASAR_BITCOIND:-}" ]; then
  [ -x "$PASAR_BITCOIND" ] || { echo "PASAR_BITCOIND=$PASAR_BITCOIND is not executable" >&2; exit 1; }
  echo "$PASAR_BITCOIND"
  exit 0
fi
if [ -x "$cache/bitcoind" ] && [ -x "$cache/bitcoin-cli" ]; then
  echo "$cache/bitcoind"
  exit 0
fi

need_apt=()
for pkg in cmake g++ make pkg-config libboost-dev libevent-dev libsqlite3-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "installing Debian packages to build bitcoind: ${need_apt[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

mkdir -p "$cache"
work=$(mktemp -d "${cache%/*}/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "building bitcoind for the tests (once, about 15 minutes on 2 cores) in $work" >&2
# The project's venv has pip (deploy/install.sh); Debian's python3 may not.
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
"$py" -m pip download -q --no-deps --no-binary :all: -d "$work" "py-bitcoinkernel==0.1.0a5" >&2
tar -xzf "$work"/py_bitcoinkernel-0.1.0a5.tar.gz -C "$work" 2>/dev/null \
  || tar -xzf "$work"/py-bitcoinkernel-0.1.0a5.tar.gz -C "$work"
src=$(find "$work" -maxdepth 3 -type d -path '*/depend/bitcoin' | head -n1)
[ -n "$src" ] || { echo "depend/bitcoin not found in the source distribution" >&2; exit 1; }
log="$work/build.log"
if ! {
  cmake -S "$src" -B "$work/build" -DBUILD_GUI=OFF -DBUILD_TESTS=OFF -DBUILD_BENCH=OFF \
    -DBUILD_FUZZ_BINARY=OFF -DENABLE_IPC=OFF -DWITH_ZMQ=OFF -DBUILD_UTIL=OFF -DBUILD_TX=OFF \
    -DBUILD_WALLET_TOOL=OFF -DENABLE_WALLET=ON -DBUILD_KERNEL_LIB=OFF -DCMAKE_BUILD_TYPE=Release \
  && cmake --build "$work/build" -j"$(nproc)" --target bitcoind bitcoin-cli
} >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "bitcoind build failed (log above)" >&2
  exit 1
fi
for bin in bitcoind bitcoin-cli; do
  path=$(find "$work/build" -type f -name "$bin" -perm -u+x | head -n1)
  [ -n "$path" ] || { echo "$bin not produced by the build" >&2; exit 1; }
  strip "$path" 2>/dev/null || true
  install -m 0755 "$path" "$cache/$bin.tmp"
  mv "$cache/$bin.tmp" "$cache/$bin"
done
echo "$cache/bitcoind"
