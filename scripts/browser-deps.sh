#!/usr/bin/env bash
# Chromium for the UI tests, from Debian's packages (browsers cannot be downloaded by test tools here).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing and this is not root: install Debian's 'chromium' package to run the UI tests" >&2
  exit 1
fi
echo "installing Debian's chromium for the UI tests" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium fonts-liberation >&2
