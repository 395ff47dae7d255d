"""Two training processes (torchrun, gloo on CPU) through the real engine: both ranks end with
identical weights, and rank 0's checkpoint records both ranks' data positions."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _train_fixtures import make_tiny_dataset  # noqa: E402

WORKER = textwrap.dedent("""
    import sys, torch
    from panolam.config import get_config
    from panolam.train.loop import Trainer
    data, out = sys.argv[1], sys.argv[2]
    cfg = get_config("tiny", ["data.views_per_step=2", "train.steps=3", "train.checkpoint_every=0"])
    tr = Trainer(cfg, data, out, progress=False)
    assert tr.world == 2, tr.world
    tr.fit()
    state = {k: v.detach().cpu() for k, v in tr.accel.unwrap_model(tr.model).state_dict().items()}
    torch.save(state, f"{out}/rank{tr.rank}.pt")
""")


@pytest.mark.slow
def test_two_process_gloo_ranks_agree(tmp_path):
    data = make_tiny_dataset(tmp_path / "data")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    out.mkdir()
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), data, str(out)],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from panolam.train.state_io import load_state

    state = load_state(out / "checkpoints" / "step_00000003")
    assert state["world_size"] == 2 and set(state["ranks"]) == {0, 1}
    # each rank streamed its own share: 3 samples each
    assert all(state["ranks"][r]["data"]["consumed"] + 2 * state["ranks"][r]["data"]["epoch"] >= 1 for r in (0, 1))
