#!/usr/bin/env bash
# The full-length recorder stress test: 8 writer processes x 60 s into one SQLite file and
# 32 into PostgreSQL, each with a reader running, then the checks of
# tests/datasetq/test_recorder_reliability.py (0 rows lost, 0 duplicated, 0 lock errors).
# CI runs the same test with 8 writers x 4 s. Each writer submits about 20 tiny epochs/s,
# far faster than real training; the output says how long the backlog took to deliver.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATASETQ_STRESS_SECONDS="${DATASETQ_STRESS_SECONDS:-60}"
export DATASETQ_STRESS_WRITERS_SQLITE="${DATASETQ_STRESS_WRITERS_SQLITE:-8}"
export DATASETQ_STRESS_WRITERS_POSTGRESQL="${DATASETQ_STRESS_WRITERS_POSTGRESQL:-32}"
export DATASETQ_STRESS_CLOSE_TIMEOUT="${DATASETQ_STRESS_CLOSE_TIMEOUT:-600}"
export DATASETQ_REQUIRE_POSTGRES=1
exec .venv/bin/python -m pytest -q -s -p no:cacheprovider --durations=0 \
  tests/datasetq/test_recorder_reliability.py -k concurrent "$@"
