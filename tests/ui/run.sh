#!/usr/bin/env bash
# Runs the web UI's browser test: headless Chromium (Debian's package, installed here when it
# is missing) driven by playwright-core, against a `warren` the test starts (WARREN_BIN,
# default target/debug/warren). Screenshots go to tests/ui/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
chromium_bin="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$chromium_bin" ]; then
  echo "chromium is missing: installing Debian's package"
  sudo_if_needed=()
  if [ "$(id -u)" -ne 0 ]; then sudo_if_needed=(sudo); fi
  if ! "${sudo_if_needed[@]}" apt-get install -y chromium; then
    "${sudo_if_needed[@]}" apt-get update
    "${sudo_if_needed[@]}" apt-get install -y chromium
  fi
fi
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
export CHROMIUM_BIN="$chromium_bin"
exec npm test --silent
