#!/usr/bin/env bash
# Runs the whole test suite (slow-marked tests included) in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -p no:cacheprovider "$@"
