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
set -euo pipefail
version="${1:?usage: scripts/venv.sh AIRFLOW_VERSION [bench]}"
flavour="${2:-}"
extras="test${flavour:+,$flavour}"
# The distributed e2e tests (PostgreSQL, Redis, Celery) run on Airflow 3.3.2 only.
[ "$version" != 3.3.2 ] || extras="$extras,distributed"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
constraints="$repo/constraints/airflow-$version.txt"
[ -f "$constraints" ] || { echo "no pins for Airflow $version: $constraints" >&2; exit 2; }
root="${NOXUS_VENV_ROOT:-$HOME/.cache/airflow-provider-noxus/venvs}"
venv="$root/airflow-$version${flavour:+-$flavour}"
python="${PYTHON:-python3}"
stamp_value="$(cat "$constraints" "$repo/pyproject.toml" | sha256sum | cut -c1-16)"

mkdir -p "$root"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv (Airflow $version; a few minutes on a new machine)" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
fi
if [ "$(cat "$venv/.noxus-stamp" 2>/dev/null)" != "$stamp_value" ]; then
  echo "installing Airflow $version and the provider's test dependencies into $venv" >&2
  "$venv/bin/python" -m pip install -q -c "$constraints" "apache-airflow==$version" -e "$repo[$extras]" >&2
  echo "$stamp_value" > "$venv/.noxus-stamp"
fi
# The clone may have moved since the venv was made: point the editable install at this one.
if ! "$venv/bin/python" -c "import airflow_provider_noxus, sys; sys.exit(not airflow_provider_noxus.__file__.startswith('$repo/'))" 2>/dev/null; then
  "$venv/bin/python" -m pip install -q --no-deps -e "$repo" >&2
fi
echo "$venv"
