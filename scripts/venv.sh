#!/usr/bin/env bash
# Make (or refresh) the virtualenv for one Airflow version and print its path.
#
#   scripts/venv.sh 3.3.2          # or 2.11.2
#   scripts/venv.sh 3.3.2 bench    # a separate venv that adds the benchmarks' extras
#
# Virtualenvs live outside the clone (NOXUS_VENV_ROOT, default ~/.cache/airflow-provider-noxus/venvs) so
# that later clones and CI runs on the same machine reuse them; a new machine builds them from scratch.
# Everything is pinned by constraints/airflow-<version>.txt (Airflow's own constraints cannot be
# downloaded here). A stamp of the pins and pyproject.toml skips the install when nothing changed.
#
# What goes in: the provider (editable) with its `test` extra (what users get for the pytest plugin),
# the repository's tooling (`dev`), and on Airflow 3.3.2 the `openlineage` extra; 2.11.2 stays without
# OpenLineage so the suite proves the provider never needs it. Then the official Noxus client for the
# conformance test (see OFFICIAL_CLIENT below).
set -euo pipefail
version="${1:?usage: scripts/venv.sh AIRFLOW_VERSION [bench]}"
flavour="${2:-}"
case "$version" in
  # The distributed e2e tests (PostgreSQL, Redis, Celery) run on Airflow 3.3.2 only.
  3.*) extras="test,dev,openlineage,distributed" ;;
  *) extras="test,dev" ;;
esac
extras="$extras${flavour:+,$flavour}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
constraints="$repo/constraints/airflow-$version.txt"
[ -f "$constraints" ] || { echo "no pins for Airflow $version: $constraints" >&2; exit 2; }
root="${NOXUS_VENV_ROOT:-$HOME/.cache/airflow-provider-noxus/venvs}"
venv="$root/airflow-$version${flavour:+-$flavour}"
python="${PYTHON:-python3}"
stamp_value="$(cat "$constraints" "$repo/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
# The official Noxus client (tests/conformance) and the two packages its client code needs beyond what
# Airflow brings (httpx, pydantic). Installed without its dependencies: noxus-sdk 0.6.0 pins ruff==0.6.3
# for its plugin tooling, which would replace our ruff; its client never uses it. Versions: constraints.
OFFICIAL_CLIENT=(noxus-sdk httpx-sse aiofiles)

mkdir -p "$root"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv (Airflow $version; a few minutes on a new machine)" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
fi
if [ "$(cat "$venv/.noxus-stamp" 2>/dev/null)" != "$stamp_value" ]; then
  echo "installing Airflow $version and the provider's test dependencies into $venv" >&2
  "$venv/bin/python" -m pip install -q -c "$constraints" "apache-airflow==$version" -e "$repo[$extras]" >&2
  "$venv/bin/python" -m pip install -q --no-deps --no-warn-conflicts -c "$constraints" "${OFFICIAL_CLIENT[@]}" >&2
  echo "$stamp_value" > "$venv/.noxus-stamp"
fi
# The venv may have been made, or last pointed, from another clone (which may be gone by now): the
# editable install must resolve to this one. Ask from outside the clone, where the current directory
# on sys.path cannot hide a stale install.
if ! (cd / && "$venv/bin/python" - "$repo" 2>/dev/null <<'PY'
import os
import sys

import airflow_provider_noxus

here = os.path.realpath(os.path.dirname(airflow_provider_noxus.__file__))
sys.exit(here != os.path.join(sys.argv[1], "airflow_provider_noxus"))
PY
); then
  echo "pointing the editable install in $venv at $repo" >&2
  "$venv/bin/python" -m pip install -q --no-deps -e "$repo" >&2
fi
echo "$venv"
