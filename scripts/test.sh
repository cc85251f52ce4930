#!/usr/bin/env bash
# Set up (see setup.sh), then run the linters and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest -n "${WEIGHTVAULT_TEST_WORKERS:-2}" -q "$@"
