#!/usr/bin/env bash
# The whole test suite, on a fresh machine: builds .venv, installs carbonspan with what the tests
# need, then runs ruff and pytest. Safe to re-run: it reuses .venv and only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# Debian's prometheus package ships promtool (alert rule checks and unit tests in dashboards/) and
# the prometheus server (tests marked `prometheus`). One guarded block for both; a no-op once installed.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    as_root=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends prometheus
fi

# Debian's chromium: tests/test_report_html.py renders the HTML report in headless Chromium.
if ! command -v chromium >/dev/null; then
    as_root=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends chromium
fi

.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
