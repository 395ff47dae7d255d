#!/usr/bin/env bash
# Make .gpu/site/: what scripts/gpu_checks.sh needs on a lent GPU machine that its image lacks (it has
# CUDA, PyTorch, numba, safetensors, accelerate, rich, jaxtyping, ninja, pytest; no network there),
# unpacked so that PYTHONPATH=.gpu/site is the whole install:
#   gsplat 1.5.3 (pure Python; compiles its CUDA code on first use), without GLM's bundled manuals and
#   tests (20 of its 26 MB); webdataset 1.0.2 and braceexpand; the ST-LPIPS AlexNet weights alone
#   (stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth, in float16: 5 MB instead of the 64 MB wheel).
# The working tree that travels to the device is limited to 64 MiB and the repository alone is ~53 MiB.
# Usage, here (needs PyPI): bash scripts/gpu_bundle.sh   then name ".gpu" in the device call's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
rm -rf .gpu.tmp && mkdir -p .gpu.tmp/site .gpu.tmp/dl
pip_dl() {
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$1" "${@:2}"
}
pip_dl .gpu.tmp/dl gsplat==1.5.3 webdataset==1.0.2 braceexpand==0.1.7 stlpips-pytorch==0.0.2
"$PY" - <<'PY'
import zipfile, glob, io, pathlib, torch
name = "stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth"
with zipfile.ZipFile(glob.glob(".gpu.tmp/dl/stlpips_pytorch-*.whl")[0]) as z:
    state = torch.load(io.BytesIO(z.read(name)), map_location="cpu", weights_only=True)
out = pathlib.Path(".gpu.tmp/site") / name
out.parent.mkdir(parents=True)
torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, out)
PY
for w in gsplat webdataset braceexpand; do unzip -q -o .gpu.tmp/dl/$w-*.whl -d .gpu.tmp/site; done
glm=.gpu.tmp/site/gsplat/cuda/csrc/third_party/glm
find "$glm" -mindepth 1 -maxdepth 1 ! -name glm ! -name copying.txt -exec rm -rf {} +
rm -rf .gpu.tmp/dl .gpu && mv .gpu.tmp .gpu
echo "$(du -sh .gpu | cut -f1) in .gpu (carry it to the device: bash scripts/gpu_checks.sh there)"
