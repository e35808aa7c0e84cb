#!/usr/bin/env bash
# README command (2): set up a fresh machine and run the whole test suite (all but `gpu` tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[tests] ruff check"
.venv/bin/ruff check .
echo "[tests] pytest"
.venv/bin/python -m pytest "$@"
# The fixture-driven tests again, on a second fixture set of the same layout that the project
# generates at other sizes (values from its own code): they read every size and path from the set.
echo "[tests] fixture-driven tests on a generated second set (test-artifacts/champ_parity_generated)"
.venv/bin/python scripts/make_fixture_set_b.py test-artifacts/champ_parity_generated
CHAMP_PARITY_DIR=test-artifacts/champ_parity_generated .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/test_pipeline_parity.py tests/test_pipeline_sampling.py tests/test_pipeline_cli.py tests/test_pipeline_windows.py
