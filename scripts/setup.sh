#!/usr/bin/env bash
# Creates .venv with the CPU build of PyTorch and lipoclass (with dev, ray and bioimageio extras).
set -euo pipefail
cd "$(dirname "$0")/.."
python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# Pinned CPU build first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[dev,ray,bioimageio]"
