"""Regression suite for issue 14: every bad input gets a clear one-line error (or a warning), never a
traceback, silent nonsense or code execution. One test per case of the issue; the security cases use
planted files (a pickle that would create a marker file when unpickled, secrets beside a PLY)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _train_fixtures import make_tiny_dataset  # noqa: E402

from panolam.cli import main  # noqa: E402
from panolam.config import get_config  # noqa: E402
from panolam.errors import PanoLAMError  # noqa: E402
from panolam.gaussians import Gaussians  # noqa: E402
from panolam.gaussians.ply import save_ply  # noqa: E402


class Planted:
    """Unpickling this runs ``touch MARKER``: proof of code execution if the marker appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 1, "payload": Planted(marker)}, path)
    return path


def head(n: int = 60, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g)
    return Gaussians(torch.randn(n, 3, generator=g) * 0.15, q / q.norm(dim=-1, keepdim=True),
                     torch.rand(n, 3, generator=g) * 0.02 + 0.005, torch.rand(n, generator=g) * 0.9 + 0.05, torch.rand(n, 3, generator=g))


def one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"))


# --- security: training state is never unpickled ---------------------------------------------------

def test_planted_state_pt_is_refused_and_never_runs(tmp_path):
    from panolam.train.state_io import TrainStateError, load_state

    marker = tmp_path / "pwned"
    plant_pickle(tmp_path / "step_00000001" / "state.pt", marker)
    with pytest.raises(TrainStateError, match="state.pt"):
        load_state(tmp_path / "step_00000001")
    assert not marker.exists()


def test_resume_with_a_planted_state_pt_is_one_line_error(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    marker = tmp_path / "pwned"
    plant_pickle(run / "checkpoints" / "step_00000001" / "state.pt", marker)
    (run / "checkpoints" / "latest").write_text("step_00000001")
    code = main(["train", "--config", "tiny", "--set", "data.views_per_step=2", "--data", dataset, "--out", str(run),
                 "--resume", "--no-progress"])
    one_line_error(capsys, code, "no intact checkpoint", "state.pt")
    assert not marker.exists()


# --- security: `view` serves the one PLY only ------------------------------------------------------

def test_view_does_not_serve_files_beside_the_ply(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from _browser import free_port

    import panolam.app.demo as demo

    folder = tmp_path / "home"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "id_rsa").write_text("SECRET KEY")
    (folder / "notes.txt").write_text("SECRET NOTES")
    save_ply(head(), folder / "head.ply")
    started = {}
    real_launch = demo.launch

    def launch_in_background(blocks, host, port, allowed_paths=None, on_start=None, block=True):
        started["url"] = real_launch(blocks, host, port, allowed_paths=allowed_paths, block=False)
        started["blocks"], started["allowed"] = blocks, allowed_paths
        return started["url"]

    monkeypatch.setattr(demo, "launch", launch_in_background)
    assert main(["view", str(folder / "head.ply"), "--port", str(free_port())]) == 0
    try:
        url = started["url"]
        assert all(not Path(p).resolve().is_relative_to(folder.resolve()) for p in started["allowed"])
        for secret in (folder / "sub" / "id_rsa", folder / "notes.txt", folder / "head.ply"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(f"{url}gradio_api/file={secret}")
            assert info.value.code in (403, 404)
        # the route itself works: the viewer's own copy is served
        view = Path(started["allowed"][0]) / "view" / "head.ply"
        assert urllib.request.urlopen(f"{url}gradio_api/file={view}").read().startswith(b"ply\n")
    finally:
        started["blocks"].close()
