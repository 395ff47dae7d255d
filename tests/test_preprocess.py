"""Preprocessing on real photos nobody in the project drew (scikit-image's astronaut and cat):
framing lands on the head, roll is corrected, mirrored/odd-format inputs work, and bad input fails
with a message naming the file."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")

from panolam.cli import main  # noqa: E402
from panolam.preprocess import PreprocessError, frame_photo, load_photo, parse_background  # noqa: E402
from panolam.preprocess.detect import LEFT_EYE, MOUTH, RIGHT_EYE, detect_faces  # noqa: E402
from panolam.preprocess.framing import EYE_CENTER, EYE_TO_MOUTH, MultipleFacesWarning, apply_affine  # noqa: E402
from panolam.preprocess.matting import refine_alpha  # noqa: E402

SIZE = 256


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def framed(astronaut):
    return frame_photo(astronaut, size=SIZE)


def eye_mouth(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return landmarks[list(RIGHT_EYE)].mean(0), landmarks[list(LEFT_EYE)].mean(0), landmarks[list(MOUTH)].mean(0)


def test_astronaut_framing_lands_on_the_head(framed):
    assert framed.method == "face" and framed.num_faces == 1 and framed.face_index == 0
    assert framed.image.shape == (SIZE, SIZE, 3) and framed.image.dtype == np.uint8
    assert framed.alpha.shape == (SIZE, SIZE) and 0 <= framed.alpha.min() and framed.alpha.max() <= 1
    assert framed.landmarks.shape == (478, 2)
    er, el, mouth = eye_mouth(framed.landmarks)
    eye = (er + el) / 2
    np.testing.assert_allclose((eye + 0.5) / SIZE, EYE_CENTER, atol=0.01)
    assert abs(np.linalg.norm(mouth - eye) / SIZE - EYE_TO_MOUTH) < 0.02
    assert abs(er[1] - el[1]) < 0.02 * SIZE, "eyes should be level after roll correction"
    # Re-detecting on the framed output finds the face where the framing put it.
    again = detect_faces(framed.image)
    assert len(again) == 1
    np.testing.assert_allclose((again[0].eye_center + 0.5) / SIZE, EYE_CENTER, atol=0.02)


def test_astronaut_mask_covers_face_not_corners(framed):
    x0, y0, x1, y1 = framed.face_box.round().astype(int)
    inner = framed.alpha[y0 + (y1 - y0) // 4: y1 - (y1 - y0) // 4, x0 + (x1 - x0) // 4: x1 - (x1 - x0) // 4]
    assert inner.mean() > 0.95
    # The training framing fills the image with the head (her hair reaches the top corners and
    # nearly the right edge); the background beside her face, at eye height, must be removed.
    k, eye_y = SIZE // 32, int(EYE_CENTER[1] * SIZE)
    for side in (framed.alpha[eye_y - k // 2: eye_y + k // 2, :k], framed.alpha[eye_y - k // 2: eye_y + k // 2, -k:]):
        assert side.max() == 0
    assert (framed.image[eye_y - k: eye_y + k, :k] == 255).all(), "background must be exactly the chosen colour (white)"
    assert framed.rgba.shape == (SIZE, SIZE, 4)
    np.testing.assert_array_equal(framed.rgba[..., 3], np.clip(framed.alpha * 255 + 0.5, 0, 255).astype(np.uint8))


def test_transform_round_trip_and_json(framed, astronaut):
    pts = np.array([[10.0, 20.0], [300.0, 100.0], [511.0, 511.0]])
    np.testing.assert_allclose(apply_affine(framed.inverse, apply_affine(framed.transform, pts)), pts, atol=1e-9)
    meta = json.loads(json.dumps(framed.to_json()))
    assert meta["method"] == "face" and meta["photo_size"] == [512, 512] and len(meta["landmarks"]) == 478
    # The transform maps the photo's pixels onto the framed image: sample a face pixel both ways.
    x, y = framed.landmarks[1].round().astype(int)  # nose tip
    px, py = apply_affine(framed.inverse, np.array([[x, y]], float))[0].round().astype(int)
    assert np.abs(framed.rgba[y, x, :3].astype(int) - astronaut[py, px].astype(int)).max() < 40


def test_rotated_photo_is_levelled(astronaut, framed):
    rotated = np.asarray(Image.fromarray(astronaut).rotate(25, resample=Image.BICUBIC, expand=True, fillcolor=(255, 255, 255)))
    out = frame_photo(rotated, size=SIZE)
    er, el, _ = eye_mouth(out.landmarks)
    assert abs(np.degrees(np.arctan2(el[1] - er[1], el[0] - er[0]))) < 3
    # The transform undoes the rotation: relative to the upright photo's framing it turns by 25°
    # the other way (Pillow rotates counter-clockwise on screen, i.e. -25° in y-down image angles).
    def angle(a):
        return np.degrees(np.arctan2(a[0, 1], a[0, 0]))
    assert abs(angle(out.transform) - angle(framed.transform) + 25) < 2


def test_mirrored_photo_gives_mirrored_framing(astronaut, framed):
    out = frame_photo(np.ascontiguousarray(astronaut[:, ::-1]), size=SIZE)
    assert out.method == "face"
    er, el, mouth = eye_mouth(out.landmarks)
    np.testing.assert_allclose(((er + el) / 2 + 0.5) / SIZE, EYE_CENTER, atol=0.01)
    assert er[0] < el[0] - 0.1 * SIZE, "eye labels stay image-left/right after mirroring"
    face = framed.alpha > 0.5
    diff = np.abs(out.image[:, ::-1].astype(int) - framed.image.astype(int))[face].mean()
    assert diff < 20, f"mirrored framing differs from the mirror of the framing by {diff:.1f} grey levels"


def test_person_fallback_frames_like_the_face_path(astronaut, framed):
    out = frame_photo(astronaut, size=SIZE, method="person")
    assert out.method == "person" and out.landmarks is None and out.num_faces == 0
    faces = detect_faces(out.image)
    assert len(faces) == 1
    np.testing.assert_allclose((faces[0].eye_center + 0.5) / SIZE, EYE_CENTER, atol=0.05)
    ratio = np.linalg.norm(faces[0].mouth - faces[0].eye_center) / SIZE / EYE_TO_MOUTH
    assert 0.85 < ratio < 1.15


def test_cat_has_no_face_and_is_refused_clearly():
    # Decision: a cat is not a person. No face is found and the person mask fills the photo and runs
    # off its top edge, so we refuse with an explanation rather than frame a random crop.
    cat = skimage_data.chelsea()
    with pytest.raises(PreprocessError, match="cannot be located"):
        frame_photo(cat, size=SIZE)
    with pytest.raises(PreprocessError, match="no face found"):
        frame_photo(cat, size=SIZE, method="face")


def test_blank_image_no_person():
    with pytest.raises(PreprocessError, match="no person found"):
        frame_photo(np.full((200, 300, 3), 180, np.uint8), size=SIZE)


def test_several_faces_pick_largest_or_index(astronaut):
    # BlazeFace full-range sees the photo at 192 px, so the second face must not be tiny.
    canvas = np.full((512, 896, 3), 255, np.uint8)
    canvas[64:448, :384] = np.asarray(Image.fromarray(astronaut).resize((384, 384), Image.BILINEAR))
    canvas[:, 384:] = astronaut
    with pytest.warns(MultipleFacesWarning, match="2 faces"):
        big = frame_photo(canvas, size=SIZE)
    assert big.num_faces == 2 and big.face_index == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultipleFacesWarning)
        small = frame_photo(canvas, size=SIZE, index=0)
    assert small.face_index == 0
    # The left face is 3/4 the size in the photo, so the framing scales it up 4/3 as much (area: 16/9).
    ratio = np.linalg.det(small.transform[:, :2]) / np.linalg.det(big.transform[:, :2])
    assert 1.5 < ratio < 2.1
    with pytest.raises(PreprocessError, match="2 face"):
        frame_photo(canvas, size=SIZE, index=2)


def test_rgba_photo_uses_its_own_alpha(astronaut):
    yy, xx = np.mgrid[:512, :512]
    disc = ((xx - 225) ** 2 + (yy - 120) ** 2 < 110 ** 2).astype(np.uint8) * 255
    out = frame_photo(np.dstack([astronaut, disc]), size=SIZE, background="black")
    assert out.method == "face"
    centre = apply_affine(out.transform, np.array([[225.0, 120.0]]))[0].round().astype(int)
    assert out.alpha[centre[1], centre[0]] == 1
    far = apply_affine(out.transform, np.array([[225.0, 120.0 + 160.0]]))[0].round().astype(int)
    if 0 <= far[1] < SIZE:
        assert out.alpha[far[1], far[0]] == 0 and (out.image[far[1], far[0]] == 0).all()


def test_load_photo_formats(tmp_path, astronaut):
    gray = (astronaut.mean(-1)).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    got = load_photo(tmp_path / "gray.png")
    assert got.shape == (512, 512, 3) and (got[..., 0] == got[..., 2]).all()

    Image.fromarray((gray.astype(np.uint16) * 257)).save(tmp_path / "gray16.png")
    got16 = load_photo(tmp_path / "gray16.png")
    assert got16.dtype == np.uint8 and np.abs(got16[..., 0].astype(int) - gray).max() <= 1

    rgba = np.dstack([astronaut, np.full((512, 512), 255, np.uint8)])
    rgba[:50, :50, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert load_photo(tmp_path / "rgba.png").shape == (512, 512, 4)
    Image.fromarray(np.dstack([astronaut, np.full((512, 512), 255, np.uint8)])).save(tmp_path / "opaque.png")
    assert load_photo(tmp_path / "opaque.png").shape == (512, 512, 3), "a fully opaque alpha is dropped"

    Image.fromarray(astronaut).convert("P", palette=Image.ADAPTIVE).save(tmp_path / "palette.png")
    pal = load_photo(tmp_path / "palette.png")
    assert pal.shape == (512, 512, 3) and np.abs(pal.astype(int) - astronaut).mean() < 12


def test_load_photo_applies_exif_orientation(tmp_path, astronaut):
    # Store the pixels rotated as a camera would, with EXIF orientation 6 ("rotate 90° CW to view").
    stored = Image.fromarray(astronaut).transpose(Image.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", quality=95, exif=exif)
    raw = np.asarray(Image.open(tmp_path / "phone.jpg"))
    assert np.abs(raw.astype(int) - astronaut).mean() > 30, "the stored pixels really are rotated"
    got = load_photo(tmp_path / "phone.jpg")
    assert got.shape == astronaut.shape and np.abs(got.astype(int) - astronaut).mean() < 4
    assert frame_photo(got, size=SIZE).method == "face"


def test_bad_files_name_the_file(tmp_path):
    Image.fromarray(np.zeros((40, 300, 3), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(PreprocessError, match=r"tiny\.png.*300x40.*at least 64"):
        load_photo(tmp_path / "tiny.png")
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(PreprocessError, match=r"notes\.jpg: not an image"):
        load_photo(tmp_path / "notes.jpg")
    with pytest.raises(PreprocessError, match=r"missing\.png: no such file"):
        load_photo(tmp_path / "missing.png")
    assert issubclass(PreprocessError, ValueError)


def test_parse_background():
    assert parse_background("white") == (255, 255, 255)
    assert parse_background("#102030") == (16, 32, 48)
    assert parse_background("1,2,3") == (1, 2, 3)
    for bad in ("purple-ish", "#12", "1,2", "300,0,0"):
        with pytest.raises(ValueError, match="background"):
            parse_background(bad)


def test_refine_alpha_drops_blobs_and_fills_holes():
    mask = np.zeros((128, 128), np.float32)
    mask[30:110, 30:90] = 1.0
    mask[60:70, 50:60] = 0.0  # a hole (e.g. dark glasses)
    mask[5:15, 110:120] = 1.0  # a stray blob
    guide = np.full((128, 128, 3), 128, np.uint8)
    alpha = refine_alpha(mask, guide, seed=(60, 40))
    assert alpha[65, 55] > 0.9 and alpha[10, 115] == 0 and alpha[0, 0] == 0 and alpha[70, 40] == 1


def test_cli_preprocess_writes_outputs(tmp_path, astronaut, capsys):
    Image.fromarray(astronaut).save(tmp_path / "astro.jpg", quality=95)
    assert main(["preprocess", str(tmp_path / "astro.jpg"), "-o", str(tmp_path / "out"), "--size", "128", "--background", "black"]) == 0
    img = np.asarray(Image.open(tmp_path / "out" / "input.png"))
    assert img.shape == (128, 128, 3) and (img[:8, :8] == 0).all()
    assert np.asarray(Image.open(tmp_path / "out" / "rgba.png")).shape == (128, 128, 4)
    meta = json.loads((tmp_path / "out" / "transform.json").read_text())
    assert meta["method"] == "face" and np.array(meta["transform"]).shape == (2, 3)
    assert "framed by face" in capsys.readouterr().out
    assert main(["preprocess", str(tmp_path / "astro.jpg"), "-o", str(tmp_path / "o2"), "--index", "3"]) == 2
    assert "--index 3" in capsys.readouterr().err


def test_framing_constants_match_the_training_renders():
    """The face lands where training renders put the template's eyes and mouth (mean front camera)."""
    import torch

    from panolam.geometry.cameras import Cameras
    from panolam.geometry.template import REGION_NAMES, load_template
    from panolam.preprocess.framing import EYE_CENTER, EYE_TO_MOUTH

    t = load_template()
    cam = Cameras.orbit(0.0, 0.0, 2.7, 18.837, 1)

    def centroid(*names):
        ids = [REGION_NAMES.index(n) for n in names]
        p = t.vertices[torch.isin(t.regions, torch.tensor(ids))].mean(0)
        c = cam.world_to_cam[0, :3, :3] @ p + cam.world_to_cam[0, :3, 3]
        return (cam.K[0] @ c)[:2] / c[2]

    eye, mouth = centroid("eye_l", "eye_r"), centroid("lips")
    assert abs(float(eye[1]) - EYE_CENTER[1]) < 0.04 and abs(float(eye[0]) - EYE_CENTER[0]) < 0.01
    assert abs(float((mouth - eye).norm()) - EYE_TO_MOUTH) < 0.02


def test_mediapipe_imports_without_matplotlib_and_its_plotting_still_works():
    """import_mediapipe keeps matplotlib out of start-up (0.66 s) yet mediapipe's pyplot reference stays usable."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from panolam.preprocess.detect import import_mediapipe\n"
        "mp = import_mediapipe()\n"
        "assert 'matplotlib' not in sys.modules and 'matplotlib.pyplot' not in sys.modules\n"
        "assert mp.solutions.face_mesh.FaceMesh is not None\n"
        "du = sys.modules['mediapipe.python.solutions.drawing_utils']\n"
        "figure = du.plt.figure\n"
        "import matplotlib.pyplot\n"
        "assert figure is matplotlib.pyplot.figure and type(sys.modules['matplotlib']).__name__ == 'module'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("ok")
