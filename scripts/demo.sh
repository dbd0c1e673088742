#!/usr/bin/env bash
# `make demo`: every example DAG against the Noxus emulator with `airflow dags test`, then a table of
# results and the time it took. On a fresh clone it builds the virtualenv first (a few minutes, once);
# later runs take well under a minute. Extra arguments: example DAG ids to run only those. See
# scripts/demo.py.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
started=$SECONDS
V="$(bash "$repo/scripts/venv.sh" 3.3.2)"
venv_seconds=$((SECONDS - started))
rc=0
"$V/bin/python" "$repo/scripts/demo.py" "$@" || rc=$?
echo "make demo: $((SECONDS - started)) s in all (virtualenv check or build: ${venv_seconds} s)"
exit "$rc"
