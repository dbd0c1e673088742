#!/usr/bin/env bash
# `make demo`: every example DAG against the Noxus emulator with `airflow dags test`, then a table of
# results. On a fresh clone it builds the virtualenv first (a few minutes, once); later runs take
# about a minute. Extra arguments: example DAG ids to run only those. See scripts/demo.py.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
V="$(bash "$repo/scripts/venv.sh" 3.3.2)"
exec "$V/bin/python" "$repo/scripts/demo.py" "$@"
