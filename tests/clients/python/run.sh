#!/usr/bin/env bash
# Runs the pika client tests. Extra arguments go to pytest.
# Broker: WARREN_TEST_AMQP_URL if set, else the binary in WARREN_BIN (default target/debug/warren).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
exec .venv/bin/python -m pytest -q "$@"
