"""The web demo without a browser: the viewer's display copy, one request through the runner with a
small fake network (real preprocessing and output writing), and the command-line guards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

gr = pytest.importorskip("gradio")

from panolam.app.demo import VIEWER_SCALE, DemoRunner, DemoSettings, build_demo, build_viewer, to_viewer_frame  # noqa: E402
from panolam.cli import main  # noqa: E402
from panolam.gaussians import Gaussians  # noqa: E402
from panolam.gaussians.ply import load_ply, save_ply  # noqa: E402
from panolam.pipeline import Reconstruction  # noqa: E402


def random_head(n: int = 200, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g)
    return Gaussians(torch.randn(n, 3, generator=g) * 0.15, q / q.norm(dim=-1, keepdim=True),
                     torch.rand(n, 3, generator=g) * 0.02 + 0.005, torch.rand(n, generator=g) * 0.9 + 0.05, torch.rand(n, 3, generator=g))


class FakeReconstructor:
    """Stands in for panolam.pipeline.Reconstructor: real preprocessing, a random head instead of a network."""

    device = torch.device("cpu")
    trained = False

    def reconstruct(self, photo, preprocess: bool = True, size: int = 512) -> Reconstruction:
        from panolam.preprocess import frame_photo

        framed = frame_photo(photo, size=size).image
        return Reconstruction(gaussians=random_head(), framed=framed, timings={"preprocess_s": 0.1, "reconstruct_s": 0.2}, trained=False)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def test_viewer_frame_is_a_rigid_turn_about_x():
    g = random_head(50)
    v = to_viewer_frame(g)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    torch.testing.assert_close(v.means, g.means @ flip.T * VIEWER_SCALE)
    # Covariances turn with the positions: R' = Rx(180°) R.
    torch.testing.assert_close(quat_to_matrix(v.quats), flip @ quat_to_matrix(g.quats), atol=1e-6, rtol=0)
    torch.testing.assert_close(v.scales, g.scales * VIEWER_SCALE)
    torch.testing.assert_close(v.colors, g.colors)


def test_runner_one_request(tmp_path):
    from skimage import data

    from panolam.preprocess import save_png

    save_png(data.astronaut(), tmp_path / "astro.png")
    runner = DemoRunner(DemoSettings(turntable_frames=4, render_size=64, size=128, out_root=tmp_path / "runs", refine_steps=0),
                        reconstructor=FakeReconstructor())
    steps = list(runner.run_steps(str(tmp_path / "astro.png")))
    assert len(steps) == 2  # the head first, without a video; then the turntable
    first_framed, first_view, no_video, first_ply, pending = steps[0]
    assert no_video is None and "Rendering the turntable" in pending and load_ply(first_ply) is not None
    framed, view_ply, mp4, ply, md = steps[1]
    assert (first_view, first_ply) == (view_ply, ply)
    assert framed.shape == (128, 128, 3)
    head = load_ply(ply)
    assert len(head) == 200
    torch.testing.assert_close(load_ply(view_ply).means, to_viewer_frame(head).means, atol=1e-5, rtol=0)
    assert mp4 is not None and mp4.endswith(".mp4")
    assert "| reconstruct (one forward pass) | 0.20 |" in md and "untrained" in md and "200 Gaussians" in md
    assert "refinement" not in md  # 0 steps: no refinement row
    # The page's "refinement steps" slider value: the head changes and the timings gain a row.
    _, _, _, refined_ply, md = runner.run(str(tmp_path / "astro.png"), 3)
    assert "| test-time refinement |" in md and not torch.equal(load_ply(refined_ply).colors, head.colors)
    with pytest.raises(gr.Error, match="Upload a photo"):
        runner.run(None)
    save_png(np.full((100, 100, 3), 200, np.uint8), tmp_path / "blank.png")
    with pytest.raises(gr.Error, match="no person found"):
        runner.run(str(tmp_path / "blank.png"))
    # Both pages build (no server started).
    assert build_demo(runner) is not None
    assert build_viewer(ply, tmp_path / "w") is not None and (tmp_path / "w" / "view" / "head.ply").exists()


def test_cli_guards(tmp_path, capsys):
    assert main(["app", "--share"]) == 2
    assert "--share is not supported" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("hello")
    assert main(["view", str(tmp_path / "x.txt")]) == 2
    assert "expected a .ply" in capsys.readouterr().err
    (tmp_path / "bad.ply").write_text("not a ply")
    assert main(["view", str(tmp_path / "bad.ply")]) == 2
    assert "bad.ply" in capsys.readouterr().err
    save_ply(random_head(), tmp_path / "ok.ply")
    assert main(["view", str(tmp_path / "ok.ply"), "--port", "70000"]) == 2
