#!/usr/bin/env bash
# Issue 15's GPU checks as one command that fits one device call (≤ 10 min, steps time-boxed, in order of
# value): the `paper` network forward in fp32 and bf16 (target ≤ 0.05 s bf16), gsplat's CUDA build, the
# gsplat tests (tests/test_rasterize_gsplat*.py, never run on CI), and the Table 3/4 GPU rows (512²
# render, C2F vs direct dense at 30K/100K). Every step's output lands in OUT_DIR/<step>.txt; one failing
# step does not stop the next. Record the figures in BENCHMARKS.md with the device named.
#
#   here:  bash scripts/gpu_bundle.sh                       (once; makes .gpu/, which is git-ignored)
#   there: bash scripts/gpu_checks.sh "$OUT"                (device call with carry [".gpu"], timeout 600)
set -u
OUT_DIR=${1:-gpu_checks}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_checks.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_checks: $PY cannot import torch (set PYTHON to the interpreter that has CUDA PyTorch)" >&2
  exit 2
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_checks: $PY sees no CUDA device (torch.cuda.is_available() is False); run this on a lent GPU machine" >&2
  exit 2
fi
if [ -d .gpu/site ]; then
  export PYTHONPATH="$PYTHONPATH:$PWD/.gpu/site"
else
  echo "gpu_checks: no .gpu/site (bash scripts/gpu_bundle.sh here, then carry .gpu): gsplat steps will fail" | tee -a "$LOG"
fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}

step() {  # step NAME SECONDS CMD...: run CMD with a time limit, log it, keep going
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  echo "== $name (limit ${limit} s): $*" | tee -a "$LOG"
  timeout "$limit" "$@" >"$OUT_DIR/$name.txt" 2>&1
  local rc=$?
  tail -n 25 "$OUT_DIR/$name.txt" | tee -a "$LOG"
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
}

step env 30 bash -c "nvidia-smi; $PY -c 'import torch, numba, numpy; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), numba.__version__, numpy.__version__)'"
step forward_fp32 45 "$PY" benchmarks/reconstruct.py --device cuda --presets default paper --precision fp32 --repeats 20
step forward_bf16 45 "$PY" benchmarks/reconstruct.py --device cuda --presets default paper --precision bf16 --repeats 20
step gsplat_build 240 "$PY" -c "import time; t = time.time(); from gsplat.cuda._backend import _C; print(f'gsplat CUDA code built and loaded in {time.time() - t:.0f} s')"
step gsplat_tests 60 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_rasterize_gsplat.py tests/test_rasterize_gsplat_parity.py
step table3_4 150 "$PY" benchmarks/table4.py --device cuda --preset paper --points 30000 100000 --repeats 3 --timeout 100
echo "gpu_checks: done; outputs in $OUT_DIR" | tee -a "$LOG"
