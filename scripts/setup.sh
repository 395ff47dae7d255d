#!/usr/bin/env bash
# Create .venv and install PanoLAM with everything the demo and the tests need (CPU only, offline
# except for the package registries). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first, by exact version: this picks the CPU build (any looser spec pulls CUDA wheels).
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[app,dev]"
# Compile the CPU rasteriser's Numba kernels now (~20 s, cached next to the package) rather than in the
# first `panolam reconstruct`, which would otherwise take ~20 s longer than every later one.
.venv/bin/python -c "from panolam.render.rasterize import warm_up; warm_up('cpu')"
