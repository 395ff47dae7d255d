"""``panolam eval`` and :func:`panolam.eval.evaluate.evaluate` on a tiny dataset: identical images
give the capped PSNR and SSIM 1, an oracle reconstructor (the generator's own Gaussians) scores
near-perfect against both ground-truth sources, the CLI writes strict-JSON metrics, the Markdown
tables and the grid for a tiny untrained checkpoint plus the template baseline, and a generator that
does not reproduce the data is refused."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _train_fixtures import BlobHeads, make_tiny_dataset  # noqa: E402

from panolam.cli import main  # noqa: E402
from panolam.config import get_config  # noqa: E402
from panolam.data.dataset import load_subject  # noqa: E402
from panolam.eval import evaluate as ev  # noqa: E402
from panolam.model.checkpoint import save_model  # noqa: E402
from panolam.model.panolam import PanoLAM  # noqa: E402

SIZE = 32


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("eval_data"), n_train=1, n_test=2, views=8, size=SIZE)


def oracle(root: str):
    """A reconstructor that looks the input view up among the test subjects and returns their true Gaussians."""
    gen = BlobHeads()
    table = []
    for sid in ev.eval_subjects(root):
        s = load_subject(root, sid)
        table.append((s["images"][ev.input_view(s["world_to_cam"])], gen.subject(s["meta"]["seed"]).payload))

    def fn(image: torch.Tensor, mask: torch.Tensor | None = None):
        return min(table, key=lambda t: float((t[0] - image).abs().mean()))[1]

    return fn


def test_identical_images_give_capped_psnr_and_unit_ssim():
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    m = ev.image_metrics(x, x)
    assert torch.all(m["psnr"] == ev.PSNR_CAP)
    assert torch.allclose(m["ssim"], torch.ones(2), atol=1e-6)
    assert float(m["lpips"].abs().max()) < 1e-4
    worse = ev.image_metrics((x + 0.1).clamp(0, 1), x)
    assert torch.all(worse["psnr"] < 30) and torch.all(worse["ssim"] < 1)


@pytest.mark.parametrize("gt", ["generator", "nearest"])
def test_oracle_scores_near_perfect(data, gt):
    report = ev.evaluate(oracle(data), data, size=SIZE, gt=gt, generator=BlobHeads(), warmup=False)
    assert [s.gt_source for s in report.subjects] == [gt, gt]
    m = report.mean()
    assert m["psnr"] > 35 and m["ssim"] > 0.98 and m["lpips"] < 0.02, m
    assert report.csim_status in ("ok", ev.CSIM_MISSING)
    if gt == "nearest":
        # The 360 set's equator ring holds the exact eval yaws (with jittered radius/FOV).
        assert all(s.view_error_deg < 1.0 for s in report.subjects)


def test_eval_size_larger_than_the_stored_views(data):
    # The input keeps the dataset's resolution; renders, ground truth and the grid use the eval size.
    report = ev.evaluate(oracle(data), data, size=2 * SIZE, gt="generator", generator=BlobHeads(), warmup=False)
    assert report.mean()["psnr"] > 35
    assert report.grid_rows and all(r.shape == (ev.GRID_TILE, 9 * ev.GRID_TILE, 3) for r in report.grid_rows)


def test_wrong_generator_is_refused(data):
    class Shifted(BlobHeads):
        def render(self, subject, cameras):
            rgb, alpha = super().render(subject, cameras)
            return (rgb * 0.5), alpha

    sample = load_subject(data, "test-000000")
    assert ev.generator_ground_truth(sample, SIZE, Shifted()) is None
    assert ev.generator_ground_truth(sample, SIZE, BlobHeads()) is not None
    with pytest.raises(ValueError, match="no generator reproduces"):
        ev.evaluate(oracle(data), data, size=SIZE, gt="generator", generator=Shifted(), warmup=False)


def test_colour_correlation_tells_a_constant_head_from_one_that_reads_the_input():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, (10, 3))
    assert ev.colour_correlation(truth, truth) == pytest.approx(1.0)
    assert ev.colour_correlation(0.5 * truth + 0.2, truth) == pytest.approx(1.0)  # r ignores gain and offset
    assert ev.colour_correlation(1 - truth, truth) == pytest.approx(-1.0)
    assert ev.colour_correlation(np.full((10, 3), 0.4), truth) == 0.0  # same head for every input
    assert math.isnan(ev.colour_correlation(truth[:2], truth[:2]))  # too few subjects
    with pytest.raises(ValueError, match="equal"):
        ev.colour_correlation(truth[:, :2], truth)


def test_foreground_mean_colour():
    img = torch.ones(3, 8, 8)
    img[:, 2:4, 2:4] = torch.tensor([0.8, 0.1, 0.2])[:, None, None]
    assert torch.allclose(ev.foreground_mean_colour(img), torch.tensor([0.8, 0.1, 0.2]))


def test_cli_untrained_checkpoint_and_baseline(data, tmp_path, capsys):
    cfg = get_config("tiny")
    torch.manual_seed(0)
    ckpt = save_model(tmp_path / "ckpt" / "model", PanoLAM(cfg.model), cfg)
    out = tmp_path / "eval"
    rc = main(["eval", "--checkpoint", str(ckpt.parent), "--data", data, "--size", str(SIZE), "--baseline", "template",
               "--out", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "metrics.json").read_text())  # strict JSON: NaN is written as null
    assert report["label"] == "ckpt" and len(report["subjects"]) == 2
    assert report["baselines"][0]["label"].startswith("Template")
    for r in [report, *report["baselines"]]:
        m = r["mean"]
        assert 0 < m["psnr"] < ev.PSNR_CAP and 0 <= m["ssim"] <= 1 and 0 <= m["lpips"] < 2
        assert m["recon_s"] > 0 and m["render_ms_per_view"] > 0 and m["peak_mem_mb"] > 0
        assert m["apd_missing"] + (m["apd"] is not None) >= 1
        assert m["colour_r"] is None  # two subjects are too few for a correlation
        assert 0 <= m["silhouette_iou"] <= 1
        for s in r["subjects"]:
            assert set(s["per_view"]) == {"front", "left", "right", "back"}
            assert len(s["pred_colour"]) == 3 and all(0 <= c <= 1 for c in s["pred_colour"] + s["gt_colour"])
            assert all(math.isfinite(v) for pv in s["per_view"].values() for v in pv.values())
    md = (out / "metrics.md").read_text()
    assert "| Method | PSNR↑ | SSIM↑ | LPIPS↓ [ST-LPIPS (AlexNet)] | CSIM↑ | APD↓ |" in md
    assert "| ckpt |" in md and "| Template (mean colour) |" in md and "| Recon.(s) |" in md
    assert "silhouette IoU" in md
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape == (2 * ev.GRID_TILE, 9 * ev.GRID_TILE, 3)


def test_cli_errors(tmp_path, data, capsys):
    assert main(["eval", "--data", data]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path), "--data", data]) == 2
    assert "no PanoLAM checkpoint" in capsys.readouterr().err


def test_true_input_camera_is_handed_to_the_reconstructor(data):
    """``input_camera="true"`` passes the stored input view's camera (as the network's InputCamera);
    the default passes none, so two-argument reconstructors keep working."""
    from panolam.model.pixel_aligned import project

    base, seen = oracle(data), []

    def fn(image, mask=None, camera=None):
        seen.append(camera)
        return base(image, mask)

    ev.evaluate(fn, data, size=SIZE, gt="generator", generator=BlobHeads(), warmup=False, input_camera="true")
    assert len(seen) == 2 and all(c is not None for c in seen)
    s = load_subject(data, ev.eval_subjects(data)[0])
    first = ev.input_view(s["world_to_cam"])
    assert torch.allclose(seen[0].world_to_cam[0], s["world_to_cam"][first].float())
    # The origin (the head centre the cameras look at) projects to the image centre.
    uv, z = project(torch.zeros(1, 1, 3), seen[0])
    assert torch.allclose(uv, torch.full_like(uv, 0.5), atol=0.02) and float(z) > 0
    report = ev.evaluate(base, data, size=SIZE, gt="generator", generator=BlobHeads(), warmup=False)
    assert report.settings["input_camera"] == "estimated"
    with pytest.raises(ValueError, match="input_camera"):
        ev.evaluate(base, data, size=SIZE, input_camera="oracle", warmup=False)


def test_silhouette_iou_of_known_shapes() -> None:
    from panolam.eval.evaluate import silhouette_iou

    white = torch.ones(3)
    a = torch.ones(3, 3, 10, 10)
    b = a.clone()
    a[0, :, :, :4] = 0.2  # view 0: prediction covers columns 0-3 ...
    b[0, :, :, 2:6] = 0.5  # ... truth columns 2-5: overlap 2 of 6 columns
    a[1, :, 3:5, 3:5] = 0.0  # view 1: the same square in both
    b[1, :, 3:5, 3:5] = 0.9
    b[2, :, :5] = 0.0  # view 2: nothing predicted, half the image true
    iou = silhouette_iou(a, b, white)
    torch.testing.assert_close(iou, torch.tensor([2 / 6, 1.0, 0.0]))
    # A near-background tint below the tolerance is not silhouette; both empty counts as a perfect match.
    assert float(silhouette_iou(torch.full((1, 3, 4, 4), 0.97), torch.ones(1, 3, 4, 4), white)[0]) == 1.0


def test_refine_fits_the_input_view_and_counts_in_the_time(data, tmp_path):
    """``model_reconstructor(refine_steps=N)`` runs reconstruct's refinement inside the eval's inference
    mode: the head comes back changed, closer to the input view (front) than the feed-forward one, and
    ``panolam eval --refine`` records the step count and labels the row."""
    cfg = get_config("tiny")
    torch.manual_seed(0)
    ckpt = save_model(tmp_path / "ckpt" / "model", PanoLAM(cfg.model), cfg)
    plain = ev.model_reconstructor(ckpt, "cpu")
    refined = ev.model_reconstructor(ckpt, "cpu", refine_steps=15)
    s = load_subject(data, ev.eval_subjects(data)[0])
    first = ev.input_view(s["world_to_cam"])
    image, mask = s["images"][first].float(), s["masks"][first].float()
    g0, _, _ = ev._reconstruct(plain, image, mask)
    g1, _, _ = ev._reconstruct(refined, image, mask)
    assert not torch.equal(g0.colors, g1.colors)
    cams = ev.stored_cameras(s)[first:first + 1]
    err = [float((ev._render(g, cams, torch.ones(3))[0][0] - image).abs().mean()) for g in (g0, g1)]
    assert err[1] < err[0], err
    with pytest.raises(ValueError, match="refine_steps"):
        ev.model_reconstructor(ckpt, "cpu", refine_steps=-1)
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(ckpt.parent), "--data", data, "--size", str(SIZE), "--refine", "2", "--limit", "1",
                 "--out", str(out), "--no-progress", "--device", "cpu", "--points", "1500"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["refine_steps"] == 2 and report["label"] == "ckpt + refine 2"
    assert report["settings"]["points_option"] == 1500
    assert main(["eval", "--checkpoint", str(ckpt.parent), "--data", data, "--refine", "-1"]) == 2
    assert main(["eval", "--checkpoint", str(ckpt.parent), "--data", data, "--points", "0"]) == 2
