"""benchmarks/real_photos.py: one photo end to end on the tiny untrained network (pictures, table,
BENCHMARKS.md section; the dlib columns wherever the optional extra is installed), its masked PSNR and its table."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image
from skimage import data

from _benchmarks import load_benchmark

HAS_DLIB = importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models") is not None


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("real_photos")


def test_masked_psnr_counts_only_the_mask(bench):
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[:, :2] = 255  # wrong everywhere on the left half
    b[:, 2:] = 51  # off by 0.2 on the right half
    mask = np.zeros((4, 4), np.float32)
    mask[:, 2:] = 1
    assert bench.masked_psnr(b, a, mask) == pytest.approx(10 * np.log10(1 / 0.2**2), abs=1e-6)
    assert bench.masked_psnr(b, a, None) == pytest.approx(10 * np.log10(1 / ((1 + 0.04) / 2)), abs=1e-6)
    assert bench.masked_psnr(a, a, mask) == float("inf")


def test_table_marks_missing_dlib_and_the_same_person_rule(bench):
    rows = [bench.Row("a", 0, 0.0, 0.0, 9.5, None, None, None), bench.Row("b", 20, 1.5, 2.5, 11.25, True, 0.41, True),
            bench.Row("c", 20, 1.5, 2.5, 11.25, True, 0.72, True), bench.Row("d", 0, 0.0, 0.0, 8.0, False, None, True)]
    text = bench.table(rows, "note")
    assert "| a | 0 | 0.00 s / 0.00 s | 9.50 | n/a | n/a | n/a |" in text
    assert "| b | 20 | 1.50 s / 2.50 s | 11.25 | yes | 0.410 | yes |" in text
    assert "| c | 20 | 1.50 s / 2.50 s | 11.25 | yes | 0.720 | no |" in text
    assert "| d | 0 | 0.00 s / 0.00 s | 8.00 | no | - | n/a |" in text and text.endswith("note\n")


@pytest.mark.slow
def test_one_photo_end_to_end(bench, tmp_path, monkeypatch):
    monkeypatch.delenv("PANOLAM_CHECKPOINT", raising=False)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(data.astronaut()).resize((256, 256)).save(photos / "astro.jpg", quality=92)
    (photos / "notes.txt").write_text("not a photo")
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Other\nkeep me\n")
    rows = bench.main([str(photos), "--config", "tiny", "--refine", "0", "2", "--size", "64", "--out", str(tmp_path / "out"),
                       "--write", "--benchmarks-file", str(md)])
    assert [(r.photo, r.refine_steps) for r in rows] == [("astro", 0), ("astro", 2)]
    assert rows[0].refine_s == 0 and rows[1].refine_s > 0
    assert all(np.isfinite(r.psnr_front) for r in rows)
    picture = np.asarray(Image.open(tmp_path / "out" / "astro.png"))
    assert picture.shape == (2 * 64, 5 * 64, 3)  # rows: refine 0, 2; columns: input, front, left, right, back
    assert np.asarray(Image.open(tmp_path / "out" / "real_photos.png")).shape == picture.shape
    text = md.read_text()
    assert "keep me" in text and text.count(bench.START) == 1 and "| astro | 2 |" in text and "untrained tiny" in text and "load average when it finished" in text
    if not HAS_DLIB:
        pytest.skip("dlib columns not checked: optional extra missing (pip install 'panolam[csim]')")
    # dlib ran: it finds the astronaut's face in the photo; an untrained 64² render may or may not have one.
    assert all(r.input_face is True and r.face_found is not None for r in rows)
    assert all((r.distance is None) == (not r.face_found) for r in rows)
