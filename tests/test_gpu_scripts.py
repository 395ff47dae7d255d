"""scripts/gpu_checks.sh, gpu_train.sh and gpu_bundle.sh: valid shell, and the GPU scripts refuse clearly where there is
no GPU (their real run is on a lent GPU machine, never on CI); gpu_train.py's pack/unpack round trip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize("name", ["gpu_checks.sh", "gpu_bundle.sh", "gpu_train.sh"])
def test_scripts_parse(name):
    subprocess.run(["bash", "-n", str(SCRIPTS / name)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run its checks")
def test_gpu_checks_refuses_without_a_gpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(SCRIPTS / "gpu_checks.sh"), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                       cwd=SCRIPTS.parent)
    assert r.returncode == 2
    assert "sees no CUDA device" in r.stderr and "lent GPU machine" in r.stderr


def test_gpu_checks_names_a_python_without_torch(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    r = subprocess.run(["bash", str(SCRIPTS / "gpu_checks.sh"), str(tmp_path / "out")], env={**os.environ, "PYTHON": str(fake)},
                       capture_output=True, text=True, cwd=SCRIPTS.parent)
    assert r.returncode == 2 and "cannot import torch" in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would train")
def test_gpu_train_refuses_without_a_gpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "WORK": str(tmp_path / "work")}
    r = subprocess.run(["bash", str(SCRIPTS / "gpu_train.sh"), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                       cwd=SCRIPTS.parent)
    assert r.returncode == 2 and "sees no CUDA device" in r.stdout and "DRY=1" in r.stdout
    assert not (tmp_path / "work" / "train").exists()  # refused before any data is made


def _gpu_train_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_train", SCRIPTS / "gpu_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pack_splits_a_model_into_small_pieces_and_unpack_restores_it_exactly(tmp_path):
    from safetensors.torch import load_file

    from panolam.config import get_config
    from panolam.model.checkpoint import save_model
    from panolam.model.panolam import PanoLAM

    cfg = get_config("tiny")
    torch.manual_seed(0)
    model_dir = save_model(tmp_path / "model", PanoLAM(cfg.model), cfg)
    gt = _gpu_train_module()
    total_mib = (model_dir / "model.safetensors").stat().st_size / 2**20
    pieces = gt.pack(model_dir, tmp_path / "packed", max_mib=total_mib / 2.5)
    assert len(pieces) >= 3 and all(p.stat().st_size <= total_mib / 2.5 * 2**20 + 64 * 1024 for p in pieces)
    gt.unpack(tmp_path / "packed", tmp_path / "restored")
    a, b = load_file(str(model_dir / "model.safetensors")), load_file(str(tmp_path / "restored" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pieces[-1].unlink()  # a piece lost on the way back is named, not silently dropped
    with pytest.raises(SystemExit, match="pieces found"):
        gt.unpack(tmp_path / "packed", tmp_path / "broken")
