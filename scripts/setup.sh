#!/usr/bin/env bash
# Creates .venv with the CPU build of PyTorch and lipoclass (dev, ray, bioimageio, review and
# napari extras).
set -euo pipefail
cd "$(dirname "$0")/.."
python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# Pinned CPU build first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[dev,ray,bioimageio,review,napari]"
# Debian's chromium for the review page's browser test (Playwright drives it; its own browser
# downloads are not used). Only as root and only when missing; the test skips without it.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null || echo "setup: chromium not installed (the browser test will skip)"
fi
# Xvfb and the X/GL libraries Qt needs for the napari plugin's viewer tests (pytest-xvfb starts
# Xvfb). Only as root and only when missing; without a display server the viewer tests fail.
if ! command -v Xvfb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq xvfb libxkbcommon-x11-0 libxcb-icccm4 \
        libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
        libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libgl1 libegl1 libfontconfig1 libdbus-1-3 \
        >/dev/null || echo "setup: xvfb not installed (the napari viewer tests need it)"
fi
