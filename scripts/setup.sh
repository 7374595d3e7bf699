#!/usr/bin/env bash
# Creates .venv with the CPU build of PyTorch and lipoclass (dev, ray, bioimageio and review extras).
set -euo pipefail
cd "$(dirname "$0")/.."
python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# Pinned CPU build first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[dev,ray,bioimageio,review]"
# Debian's chromium for the review page's browser test (Playwright drives it; its own browser
# downloads are not used). Only as root and only when missing; the test skips without it.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null || echo "setup: chromium not installed (the browser test will skip)"
fi
