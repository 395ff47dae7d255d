"""scripts/gpu_checks.sh and gpu_bundle.sh: valid shell, and the GPU checks refuse clearly where there is no GPU
(their real run is on a lent GPU machine, never on CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize("name", ["gpu_checks.sh", "gpu_bundle.sh"])
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
