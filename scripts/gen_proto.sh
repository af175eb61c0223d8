#!/usr/bin/env bash
# Regenerates the Python modules of proto/gpve/v1/*.proto (committed; tests/test_grpc_stubs.py fails when
# they no longer match). Needs grpcio-tools at the version pyproject.toml's test extra pins.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
"$python" -m grpc_tools.protoc -Iproto --python_out=proto --grpc_python_out=proto proto/gpve/v1/*.proto
