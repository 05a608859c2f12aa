#!/usr/bin/env bash
# Runs every test of Tidewatch: unit, integration (real server over HTTP, kill -9 rounds,
# hostile input) and the lake's compatibility with DuckDB. Installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real clients and peers from PyPI (DuckDB reads the lake; boto3, elasticsearch-py and moto's
# S3 server drive the compatible APIs and sources), in a venv reinstalled when the list changes.
venv="${TIDEWATCH_TEST_VENV:-$HOME/.cache/tidewatch/test-venv}"
requirements="scripts/test-requirements.txt"
stamp="$venv/.requirements"
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
export TIDEWATCH_TEST_PYTHON="$venv/bin/python"

cargo test --workspace --locked "$@" 2>&1
