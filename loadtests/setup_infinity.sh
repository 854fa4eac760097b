#!/usr/bin/env bash
# Build a separate venv with Infinity (infinity-emb 0.0.78) for the HTTP comparison.
# It needs numpy<2 and its own torch, so it must not share the project's venv.
# Usage: bash loadtests/setup_infinity.sh [VENV_DIR]   (default: /tmp/infinity-venv)
set -euo pipefail
VENV="${1:-/tmp/infinity-venv}"
PYTHON="${PYTHON:-python3.11}"
if [ ! -x "$VENV/bin/infinity_emb" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    # torch is pinned like the project's (the CPU wheel); numpy<2 is what infinity 0.0.78 needs.
    "$VENV/bin/pip" install -q "infinity-emb[server,torch]==0.0.78" "torch==2.13.0" "numpy<2"
fi
"$VENV/bin/infinity_emb" v2 --help >/dev/null
echo "$VENV/bin/infinity_emb"
