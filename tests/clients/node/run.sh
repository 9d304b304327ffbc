#!/usr/bin/env bash
# Runs the amqplib client tests with node's built-in runner.
# Broker: WARREN_TEST_AMQP_URL if set, else the binary in WARREN_BIN (default target/debug/warren).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
exec npm test --silent
