#!/usr/bin/env bash
# Set-up from two clones in turn, on the already-built virtualenv (a step of `make test`, ~20 s).
#
#   scripts/check-two-clones.sh 3.3.2
#
# The venvs live outside the clone and are shared by every clone on the machine (CI runs each
# submission in a new folder). Clone 1 runs scripts/venv.sh and is deleted; clone 2 runs it next. Each
# time the package must resolve to the running clone when imported from outside it (a subprocess such
# as `airflow db migrate` does not have the clone on sys.path). At the end the venv points back here.
set -euo pipefail
version="${1:?usage: scripts/check-two-clones.sh AIRFLOW_VERSION}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
venv="$(bash "$repo/scripts/venv.sh" "$version")"
work="$(mktemp -d)"
restore() {
  rm -rf "$work"
  bash "$repo/scripts/venv.sh" "$version" >/dev/null
}
trap restore EXIT

for n in 1 2; do
  clone="$work/clone$n"
  git clone -q "$repo" "$clone"
  got="$(bash "$clone/scripts/venv.sh" "$version")"
  if [ "$got" != "$venv" ]; then
    echo "clone $n made a new venv ($got) instead of reusing $venv" >&2
    exit 1
  fi
  # A subprocess started outside the clone, like the e2e tests' Airflow commands.
  resolved="$(cd / && "$venv/bin/python" -c 'import airflow_provider_noxus as p; print(p.__file__)')"
  case "$resolved" in
    "$clone"/airflow_provider_noxus/*) ;;
    *) echo "clone $n: airflow_provider_noxus resolves to $resolved, not to the clone" >&2; exit 1 ;;
  esac
  (cd / && "$venv/bin/python" -m airflow_provider_noxus.emulator --help >/dev/null)
  echo "clone $n: set-up reused $venv, the package resolves to $clone"
  rm -rf "$clone"  # the next clone runs with this one gone
done
