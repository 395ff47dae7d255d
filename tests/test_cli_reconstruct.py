"""End-to-end: the `reconstruct` and `render` commands on the tiny config (untrained weights)."""

import json

import imageio.v3 as iio
import numpy as np
import plyfile
import pytest
from PIL import Image
from skimage import data

from panolam.cli import main
from panolam.gaussians.ply import load_ply, save_ply
from panolam.render.preview import render_cameras
from panolam.geometry.cameras import named_views


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "astro.jpg"
    Image.fromarray(data.astronaut()).save(path, quality=92)
    return path


@pytest.mark.slow
def test_reconstruct_writes_head_previews_and_turntable(tmp_path, photo, capsys, monkeypatch):
    monkeypatch.delenv("PANOLAM_CHECKPOINT", raising=False)
    rc = main(["reconstruct", str(photo), "-o", str(tmp_path), "--config", "tiny", "--size", "64", "--preview-size", "48",
               "--frames", "4", "--gif"])
    assert rc == 0
    out = tmp_path / "astro"
    ply = plyfile.PlyData.read(str(out / "head.ply"))
    assert ply["vertex"].count == 1000  # tiny preset: M_D dense Gaussians
    sheet = iio.imread(out / "views.png")
    assert sheet.shape == (48, 48 * 5, 3)  # input + front/left/right/back
    assert iio.imread(out / "turntable.gif").shape[0] == 4
    assert (out / "turntable.mp4").stat().st_size > 0 and (out / "head.splat").stat().st_size == 1000 * 32
    assert (out / "head.glb").read_bytes()[:4] == b"glTF" and iio.imread(out / "input.png").shape == (64, 64, 3)
    timings = json.loads((out / "timings.json").read_text())
    assert timings["trained"] is False and timings["reconstruct_s"] > 0 and timings["render_previews_s"] > 0
    captured = capsys.readouterr()
    assert "reconstruct" in captured.out and "UNTRAINED" in captured.err
    # The head line is printed before the previews line: files users wait for come first.
    assert captured.out.index("head.ply") < captured.out.index("views.png")


def test_reconstruct_defaults_write_mp4_not_gif_and_no_previews_skips_them(tmp_path, photo, capsys):
    assert main(["reconstruct", str(photo), "-o", str(tmp_path / "a"), "--config", "tiny", "--size", "64", "--preview-size", "32", "--frames", "4"]) == 0
    files = {p.name for p in (tmp_path / "a" / "astro").iterdir()}
    assert {"head.ply", "head.splat", "head.glb", "input.png", "views.png", "turntable.mp4", "timings.json"} <= files
    assert "turntable.gif" not in files
    capsys.readouterr()
    assert main(["reconstruct", str(photo), "-o", str(tmp_path / "b"), "--config", "tiny", "--size", "64", "--no-previews", "--no-mesh"]) == 0
    files = {p.name for p in (tmp_path / "b" / "astro").iterdir()}
    assert files == {"head.ply", "head.splat", "input.png", "timings.json"}
    assert "previews" not in capsys.readouterr().out


def test_reconstruct_reports_bad_photos_and_goes_on(tmp_path, photo, capsys):
    bad = tmp_path / "notimage.jpg"
    bad.write_text("hello")
    rc = main(["reconstruct", str(bad), str(photo), "-o", str(tmp_path / "o"), "--config", "tiny", "--size", "64", "--frames", "0",
               "--refine", "2"])
    assert rc == 1
    captured = capsys.readouterr()
    assert "notimage.jpg" in captured.err
    assert (tmp_path / "o" / "astro" / "head.ply").exists() and not (tmp_path / "o" / "notimage").exists()
    # --refine: two steps at the 64² framing, reported and timed.
    assert "astro: refinement: 2 steps at 64x64" in captured.out
    timings = json.loads((tmp_path / "o" / "astro" / "timings.json").read_text())
    assert timings["refine_s"] > 0
    # The camera estimate is reported: view and apparent size (the untrained magnification head says nominal).
    assert timings["input_magnification_pct"] == 0.0 and "size +0%]" in captured.out and "[estimated view: yaw" in captured.out
    assert main(["reconstruct", str(photo), "-o", str(tmp_path / "o2"), "--refine", "-1"]) == 2
    assert "--refine -1" in capsys.readouterr().err
    assert main(["reconstruct", str(photo), "-o", str(tmp_path / "o2"), "--points", "0"]) == 2
    assert "--points 0" in capsys.readouterr().err


def test_missing_checkpoint_is_a_clear_error(tmp_path, photo, capsys):
    rc = main(["reconstruct", str(photo), "-o", str(tmp_path), "--checkpoint", str(tmp_path / "nope")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_render_command_matches_direct_render(tmp_path):
    import torch

    from panolam.gaussians import Gaussians

    g = Gaussians(
        means=torch.randn(200, 3) * 0.15, quats=torch.nn.functional.normalize(torch.randn(200, 4), dim=-1),
        scales=torch.full((200, 3), 0.02), opacities=torch.full((200,), 0.8), colors=torch.rand(200, 3),
    )
    save_ply(g, tmp_path / "head.ply")
    assert main(["render", str(tmp_path / "head.ply"), "--size", "48", "--views", "front,back", "--yaw", "45", "--turntable", "--frames", "3"]) == 0
    sheet = iio.imread(tmp_path / "views.png")
    direct = render_cameras(load_ply(tmp_path / "head.ply"), named_views(("front", "back"), size=48))
    # The sheet's tiles carry a caption box in the top-left corner; compare below it.
    assert np.abs(sheet[20:, :48].astype(int) - direct[0, 20:].astype(int)).max() <= 1
    assert np.abs(sheet[20:, 48:].astype(int) - direct[1, 20:].astype(int)).max() <= 1
    assert (tmp_path / "yaw+45_pitch+0.png").exists() and iio.imread(tmp_path / "turntable.gif").shape[0] == 3


def test_render_rejects_bad_ply_and_views(tmp_path, capsys):
    (tmp_path / "x.ply").write_bytes(b"garbage")
    assert main(["render", str(tmp_path / "x.ply")]) == 2
    assert "not a PLY" in capsys.readouterr().err


def test_checkpoint_resolution_order(tmp_path, monkeypatch):
    import panolam.pipeline as pipeline

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "panolam.json").write_text("{}")
    monkeypatch.setattr(pipeline, "DEFAULT_CHECKPOINT", shipped)
    monkeypatch.delenv("PANOLAM_CHECKPOINT", raising=False)
    assert pipeline.find_checkpoint(None) == shipped
    assert pipeline.find_checkpoint(None, use_default=False) is None  # another architecture: untrained
    mine = tmp_path / "run" / "checkpoints" / "step_00000002" / "model"
    mine.mkdir(parents=True)
    (mine / "panolam.json").write_text("{}")
    (mine.parent / "state.pt").write_bytes(b"")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step_00000002")
    monkeypatch.setenv("PANOLAM_CHECKPOINT", str(tmp_path / "run"))
    assert pipeline.find_checkpoint(None) == mine  # a run directory resolves to its latest model


def test_already_framed_input_is_composited_and_cropped_not_stretched():
    from panolam.pipeline import _square_resize

    img = np.zeros((40, 80, 4), np.uint8)
    img[..., 0] = 200
    img[:, 20:60, 3] = 255  # opaque square in the middle, transparent left/right bands
    out, alpha = _square_resize(img, 40)
    assert out.shape == (40, 40, 3)
    assert (out[..., 0] == 200).all() and (out[..., 1] == 0).all()  # the centre crop is the opaque square
    assert alpha.shape == (40, 40) and np.allclose(alpha, 1.0)  # its matte travels with it (pixel-aligned input)
    wide, wide_alpha = _square_resize(np.dstack([img[..., :3], np.zeros((40, 80), np.uint8)]), 20)
    assert (wide == 255).all()  # fully transparent -> the white training background
    assert np.allclose(wide_alpha, 0.0)
    assert _square_resize(img[..., :3], 20)[1] is None  # RGB has no matte: the network estimates one
