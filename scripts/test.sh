#!/usr/bin/env bash
# Runs every test of Tidewatch: unit, integration (real server over HTTP, kill -9 rounds,
# hostile input) and the lake's compatibility with DuckDB. Installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

# DuckDB (from PyPI) reads the lake as it is, in the compatibility test.
venv="${TIDEWATCH_TEST_VENV:-$HOME/.cache/tidewatch/test-venv}"
if ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'duckdb>=1.1'
fi
export TIDEWATCH_TEST_PYTHON="$venv/bin/python"

cargo test --workspace --locked "$@" 2>&1
