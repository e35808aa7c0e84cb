#!/usr/bin/env bash
# README command (2): set up a fresh machine and run the whole test suite (all but `gpu` tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[tests] ruff check"
.venv/bin/ruff check .
echo "[tests] pytest"
exec .venv/bin/python -m pytest "$@"
