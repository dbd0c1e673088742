#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine: `make test` (or `bash scripts/test.sh`).
#
# 0. the venvs' set-up run from two fresh clones in turn (scripts/check-two-clones.sh);
# 1. lint and type checks (ruff, mypy) on Airflow 3.3.2;
# 2. the suite on Airflow 3.3.2, end-to-end (single-machine and distributed) and browser tests included;
# 3. the suite on Airflow 2.11.2 (no e2e, distributed or browser: those need Airflow 3's processes and UI);
# 4. the benchmarks in --quick mode (they fail only when broken, never for slowness).
#
# Extra arguments go to both pytest runs, e.g. `make test ARGS="-k trigger"`.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
failed=()

step() { echo; echo "=== $* ==="; }

step "virtualenvs"
af3="$(bash scripts/venv.sh 3.3.2)" || exit 1
af2="$(bash scripts/venv.sh 2.11.2)" || exit 1
bash scripts/browser-deps.sh || failed+=("browser dependencies")
bash scripts/system-deps.sh distributed || failed+=("PostgreSQL and Redis for the distributed tests")

step "set-up from two clones in turn"
bash scripts/check-two-clones.sh 3.3.2 || failed+=("two clones")

artifacts="$repo/artifacts"
export NOXUS_E2E_LOG_DIR="${NOXUS_E2E_LOG_DIR:-$artifacts/e2e-logs}"
mkdir -p "$artifacts"
rm -f "$artifacts"/junit-*.xml

step "ruff"
"$af3/bin/ruff" check airflow_provider_noxus tests dags_examples benchmarks scripts || failed+=("ruff")
step "mypy"
"$af3/bin/mypy" || failed+=("mypy")

run_pytest() {  # name venv args...
  local name="$1" venv="$2"; shift 2
  step "pytest on $name"
  "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
  local rc=$?
  # 5 = no test collected: that is a broken selection, not a pass.
  [ "$rc" -eq 0 ] || failed+=("pytest on $name (exit $rc)")
}
run_pytest "Airflow 3.3.2" "$af3" --junitxml="$artifacts/junit-airflow-3.xml" ${ARGS:-} "$@"
run_pytest "Airflow 2.11.2" "$af2" -m "not e2e and not browser and not distributed" --junitxml="$artifacts/junit-airflow-2.xml" ${ARGS:-} "$@"

if [ -d benchmarks ] && ls benchmarks/*.py >/dev/null 2>&1; then
  step "benchmarks (--quick)"
  "$af3/bin/python" benchmarks/run_all.py --quick || failed+=("benchmarks --quick")
fi

# One closing line over both pytest runs, from their JUnit reports.
"$af3/bin/python" - "$artifacts"/junit-airflow-*.xml <<'PY' || true
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for path in sys.argv[1:]:
    for suite in ET.parse(path).getroot().iter("testsuite"):
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skip = int(suite.get("skipped", 0))
        failed += bad
        skipped += skip
        passed += int(suite.get("tests", 0)) - bad - skip
print(f"\ntests: {passed} passed, {failed} failed, {skipped} skipped")
PY

echo
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all checks passed"
