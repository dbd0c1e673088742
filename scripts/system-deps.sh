#!/usr/bin/env bash
# Debian packages some tests need, installed when missing (as root, non-interactive):
#
#   scripts/system-deps.sh browser       # chromium for the UI tests (test tools cannot download browsers here)
#   scripts/system-deps.sh distributed   # postgresql and redis-server for the distributed e2e tests
#
# Nothing is installed when the programs are already there. The packaged services are never started:
# the test harness (tests/support/loopback_services.py) runs postgres and redis-server itself, as plain
# processes on loopback ports in temporary directories. Where no /usr/sbin/policy-rc.d forbids service
# starts (Docker images have one), one is put in place for the install and removed afterwards.
set -euo pipefail

has_postgres() { compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || command -v postgres >/dev/null; }

missing=()
for group in "${@:?usage: scripts/system-deps.sh browser|distributed ...}"; do
  case "$group" in
    browser) command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-liberation) ;;
    distributed)
      has_postgres || missing+=(postgresql)
      command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
      ;;
    *) echo "unknown group '$group': use browser or distributed" >&2; exit 2 ;;
  esac
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages and this is not root: install ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# put here by scripts/system-deps.sh for one install: start no service\nexit 101\n' >"$policy"
  chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
