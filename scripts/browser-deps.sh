#!/usr/bin/env bash
# Chromium for the UI tests, from Debian's packages (browsers cannot be downloaded by test tools here).
exec bash "$(dirname "${BASH_SOURCE[0]}")/system-deps.sh" browser
