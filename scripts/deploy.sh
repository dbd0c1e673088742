#!/usr/bin/env bash
# `make deploy`: the example DAGs in a real multi-process Airflow 3 (api-server + UI, dag-processor,
# scheduler, triggerer) against the Noxus emulator, on loopback. Prints the UI's address; Ctrl-C stops
# everything. See scripts/deploy.py (--no-wait to stop after the DAGs have run).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
V="$(bash "$repo/scripts/venv.sh" 3.3.2)"
exec "$V/bin/python" "$repo/scripts/deploy.py" "$@"
