#!/usr/bin/env bash
# Set up (see setup.sh), then run the linters, the import contracts (docs/architecture.md) and
# the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest -n "${WEIGHTVAULT_TEST_WORKERS:-2}" -q "$@"
