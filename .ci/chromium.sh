#!/usr/bin/env bash
# Headless Chromium for tests/integration/test_report_browser.py (Debian's package).
# Installs it only when absent; prints nothing on success so CI logs stay short.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >/dev/null
test -x /usr/bin/chromium
