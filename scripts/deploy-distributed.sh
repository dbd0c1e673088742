#!/usr/bin/env bash
# `make deploy-distributed`: the example DAGs in Airflow 3 as production runs it, on loopback: PostgreSQL
# and Redis (Debian's packages, installed when missing; started as plain processes, not as services),
# the CeleryExecutor, two schedulers, two triggerers, two Celery workers, the api-server with the UI and
# the dag-processor, against the Noxus emulator. Prints the UI's address; Ctrl-C stops everything.
# See scripts/deploy.py (--no-wait to stop after the DAGs have run).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/system-deps.sh" distributed
V="$(bash "$repo/scripts/venv.sh" 3.3.2)"
exec "$V/bin/python" "$repo/scripts/deploy.py" --distributed "$@"
