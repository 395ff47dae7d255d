"""The command's thread settings: the rasteriser's Numba threads follow OMP_NUM_THREADS."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from panolam.cli import numba_threads_follow_omp


def _numba_threads_in_fresh_process(env: dict[str, str]) -> int:
    code = ("from panolam.cli import numba_threads_follow_omp; numba_threads_follow_omp(); "
            "import numba; print(numba.config.NUMBA_NUM_THREADS)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_numba_threads_follow_omp_num_threads():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    assert _numba_threads_in_fresh_process({**env, "OMP_NUM_THREADS": "1"}) == 1
    # An explicit NUMBA_NUM_THREADS wins.
    assert _numba_threads_in_fresh_process({**env, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}) == 2


@pytest.mark.parametrize("omp", ["", "0", "two"])
def test_unusable_omp_num_threads_leaves_numba_alone(monkeypatch, omp):
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    numba_threads_follow_omp()
    assert "NUMBA_NUM_THREADS" not in os.environ


def test_numba_already_imported_is_left_alone(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setitem(sys.modules, "numba", sys.modules.get("numba") or object())
    numba_threads_follow_omp()
    assert "NUMBA_NUM_THREADS" not in os.environ
