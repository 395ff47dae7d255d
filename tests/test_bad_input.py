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


# --- one error type, output folders checked before the model runs ----------------------------------

def test_every_input_error_is_a_panolam_error():
    from panolam.cli import UserError
    from panolam.data.format import CorruptShardError
    from panolam.data.manifest import DatasetError
    from panolam.gaussians.ply import PlyFormatError
    from panolam.model.checkpoint import CheckpointError
    from panolam.model.encoder import EncoderWeightsError
    from panolam.preprocess import PreprocessError
    from panolam.train.state_io import TrainStateError

    for cls in (UserError, CorruptShardError, DatasetError, PlyFormatError, CheckpointError, EncoderWeightsError,
                PreprocessError, TrainStateError):
        assert issubclass(cls, PanoLAMError), cls


class FakeReconstructor:
    """Stands in for the network: records that it was built, returns a fixed small head."""

    built = 0

    def __init__(self, *args, **kwargs) -> None:
        FakeReconstructor.built += 1
        self.trained = True

    def reconstruct(self, photo, preprocess: bool = True, size: int = 512, force: bool = False):
        from panolam.pipeline import Reconstruction

        return Reconstruction(gaussians=head(), framed=np.full((size, size, 3), 200, np.uint8), timings={"preprocess_s": 0.0, "reconstruct_s": 0.0}, trained=True)


@pytest.fixture
def fake_pipeline(monkeypatch):
    import panolam.pipeline as pipeline

    FakeReconstructor.built = 0
    monkeypatch.setattr(pipeline, "Reconstructor", FakeReconstructor)
    return FakeReconstructor


def _photo(tmp_path: Path, name: str = "me.png") -> Path:
    from panolam.preprocess import save_png

    return save_png(np.full((80, 80, 3), 128, np.uint8), tmp_path / name)


def test_output_that_is_a_file_fails_before_the_model_runs(tmp_path, capsys, fake_pipeline):
    (tmp_path / "out.txt").write_text("not a folder")
    code = main(["reconstruct", str(_photo(tmp_path)), "-o", str(tmp_path / "out.txt")])
    one_line_error(capsys, code, "out.txt", "not a folder")
    code = main(["reconstruct", str(_photo(tmp_path)), "-o", str(tmp_path / "out.txt" / "sub")])
    one_line_error(capsys, code, "is a file")
    assert fake_pipeline.built == 0  # refused before any model was loaded


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_output_not_writable_fails_before_the_model_runs(tmp_path, capsys, fake_pipeline):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code = main(["reconstruct", str(_photo(tmp_path)), "-o", str(locked / "out")])
        one_line_error(capsys, code, "not writable")
        assert fake_pipeline.built == 0
    finally:
        locked.chmod(0o700)


def test_a_failed_write_does_not_stop_the_batch(tmp_path, capsys, fake_pipeline):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("a file where photo a's folder should go")
    a, b = _photo(tmp_path, "a.png"), _photo(tmp_path, "b.png")
    code = main(["reconstruct", str(a), str(b), "-o", str(out), "--frames", "0", "--size", "64"])
    err = capsys.readouterr().err
    assert code == 1 and "a.png" in err and "Traceback" not in err
    assert (out / "b" / "head.ply").is_file()


def test_other_commands_check_their_output_folder(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    save_ply(head(), tmp_path / "h.ply")
    one_line_error(capsys, main(["render", str(tmp_path / "h.ply"), "-o", str(tmp_path / "f")]), "not a folder")
    one_line_error(capsys, main(["data", "synth", "--out", str(tmp_path / "f"), "--subjects", "1"]), "not a folder")


# --- pickles refused clearly where weights are read ---------------------------------------------------

def test_pickle_as_st_decoder_is_refused(tmp_path):
    from panolam.train.loop import build_st_renderer

    marker = tmp_path / "pwned"
    bad = plant_pickle(tmp_path / "decoder.pt", marker)
    with pytest.raises(PanoLAMError, match=r"train.st_decoder=.*decoder.pt.*refused"):
        build_st_renderer(get_config("tiny", [f"train.st_decoder={bad}"]))
    assert not marker.exists()


def test_pickle_as_vgg_encoder_weights_is_refused(tmp_path):
    import dataclasses

    from panolam.model.encoder import EncoderWeightsError, ImageEncoder

    marker = tmp_path / "pwned"
    bad = plant_pickle(tmp_path / "vgg.pth", marker)
    cfg = dataclasses.replace(get_config("tiny").model, encoder="vgg", image_size=56, encoder_weights=str(bad))
    with pytest.raises(EncoderWeightsError, match=r"vgg.pth.*refused"):
        ImageEncoder(cfg)
    assert not marker.exists()


def test_pickle_as_eval_lpips_weights_is_one_line_error(dataset, tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = plant_pickle(tmp_path / "lpips.pth", marker)
    code = main(["eval", "--baseline", "template", "--data", dataset, "--lpips-weights", str(bad), "--out", str(tmp_path / "ev"), "--no-progress"])
    one_line_error(capsys, code, "lpips.pth", "refused")
    assert not marker.exists()
    assert not (tmp_path / "ev" / "metrics.json").exists()


# --- datasets -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, needle", [("[]", "expected a JSON object"), ("null", "expected a JSON object"),
                                             ('{"format_version": 1, "camera_set": "360", "views": 8, "size": 32}', "lacks generator")])
def test_bad_manifest_is_one_line_error(tmp_path, capsys, content, needle):
    (tmp_path / "manifest.json").write_text(content)
    one_line_error(capsys, main(["data", "info", str(tmp_path)]), "manifest.json", needle)


def test_deleted_shard_is_an_error_not_fewer_subjects(dataset, tmp_path, capsys):
    import shutil

    from panolam.data.dataset import MultiViewDataset

    root = tmp_path / "ds"
    shutil.copytree(dataset, root)
    (root / "shards" / "train-00001.tar").unlink()
    with pytest.raises(PanoLAMError, match="train-00001.tar"):
        MultiViewDataset(str(root))
    one_line_error(capsys, main(["data", "info", str(root)]), "train-00001.tar", "missing")


def test_data_info_does_not_call_a_truncated_tar_complete(dataset, tmp_path, capsys):
    import shutil
    import tarfile

    root = tmp_path / "ds"
    shutil.copytree(dataset, root)
    assert main(["data", "info", str(root), "--verify"]) == 0
    capsys.readouterr()
    shard = root / "shards" / "train-00000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    for flags in ([], ["--verify"]):
        assert main(["data", "info", str(root), *flags]) == 1
        out = capsys.readouterr()
        assert "train-00000.tar" in out.err and "truncated" in out.err and "Traceback" not in out.err
        assert "2 complete shards" in out.out  # of 3
    # a well-formed tar holding fewer samples than its record: only reading every shard finds it
    with tarfile.open(shard, "w"):
        pass
    assert main(["data", "info", str(root)]) == 0
    capsys.readouterr()
    assert main(["data", "info", str(root), "--verify"]) == 1
    assert "holds 0 samples" in capsys.readouterr().err


# --- photos: no head found ----------------------------------------------------------------------------

def test_coffee_cup_is_refused_unless_forced():
    from skimage import data

    from panolam.pipeline import Reconstructor
    from panolam.preprocess.framing import NoHeadError

    with pytest.warns(UserWarning, match="UNTRAINED"):
        rec = Reconstructor(None, "tiny", device="cpu")
    with pytest.raises(NoHeadError, match="no face found.*--force"):
        rec.reconstruct(data.coffee(), size=64)
    assert len(rec.reconstruct(data.coffee(), size=64, force=True).gaussians) > 0


def test_reconstruct_cli_reports_no_head_and_has_force(tmp_path, capsys, monkeypatch):
    from skimage import data

    import panolam.pipeline as pipeline
    from panolam.preprocess import save_png

    real = pipeline.Reconstructor
    monkeypatch.setattr(pipeline, "Reconstructor", lambda ckpt, config, overrides, device, points=None: real(None, "tiny", (), "cpu", points=points))
    cup = save_png(data.coffee(), tmp_path / "cup.png")
    assert main(["reconstruct", str(cup), "-o", str(tmp_path / "o"), "--size", "64", "--frames", "0"]) == 1
    err = capsys.readouterr().err
    assert "cup.png: no face found" in err and "--force" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "cup" / "head.ply").exists()
    assert main(["reconstruct", str(cup), "-o", str(tmp_path / "o"), "--size", "64", "--frames", "0", "--force"]) == 0
    assert (tmp_path / "o" / "cup" / "head.ply").is_file()


# --- Gaussians loaded from PLY files ------------------------------------------------------------------

def _write_binary_ply(path: Path, arr: np.ndarray, count: int | None = None) -> Path:
    from panolam.gaussians.ply import PLY_FIELDS

    n = len(arr) if count is None else count
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n" + "".join(f"property float {f}\n" for f in PLY_FIELDS) + "end_header\n"
    path.write_bytes(header.encode() + arr.tobytes())
    return path


def _ply_array(n: int = 10) -> np.ndarray:
    from panolam.gaussians.ply import gaussians_to_ply_array

    return gaussians_to_ply_array(head(n))


@pytest.mark.parametrize("field", ["x", "f_dc_1", "opacity", "scale_2", "rot_0"])
def test_non_finite_rows_are_dropped_with_a_count(tmp_path, field):
    from panolam.gaussians.ply import PlyWarning, load_ply

    arr = _ply_array(10)
    arr[field][[2, 5]] = [np.nan, np.inf]
    path = _write_binary_ply(tmp_path / "h.ply", arr)
    with pytest.warns(PlyWarning, match=r"h.ply: dropped 2 of 10 Gaussians"):
        g = load_ply(path)
    assert len(g) == 8 and all(torch.isfinite(t).all() for t in (g.means, g.quats, g.scales, g.opacities, g.colors))


@pytest.mark.parametrize("case, needle", [("all-nan", "all 10 Gaussians"), ("zero", "0 Gaussians"), ("negative", "cannot be negative")])
def test_unusable_plys_are_errors_naming_the_file(tmp_path, capsys, case, needle):
    from panolam.gaussians.ply import PlyFormatError, load_ply

    arr = _ply_array(10)
    if case == "all-nan":
        arr["x"] = np.nan
        path = _write_binary_ply(tmp_path / "bad.ply", arr)
    else:
        path = _write_binary_ply(tmp_path / "bad.ply", arr[:0] if case == "zero" else arr, count=0 if case == "zero" else -1)
    with pytest.raises(PlyFormatError, match=needle):
        load_ply(path)
    one_line_error(capsys, main(["render", str(path), "-o", str(tmp_path / "r")]), "bad.ply", needle)
    assert not (tmp_path / "r" / "views.png").exists()


def test_ascii_ply_parse_error_names_the_file(tmp_path):
    from panolam.gaussians.ply import PLY_FIELDS, PlyFormatError, load_ply

    header = "ply\nformat ascii 1.0\nelement vertex 2\n" + "".join(f"property float {f}\n" for f in PLY_FIELDS) + "end_header\n"
    good = " ".join(["0"] * 13 + ["1", "0", "0", "0"])
    (tmp_path / "a.ply").write_text(header + good + "\n" + good.replace("0", "zero", 1) + "\n")
    with pytest.raises(PlyFormatError, match=r"a.ply: vertex 1 .*not a row of numbers"):
        load_ply(tmp_path / "a.ply")
    (tmp_path / "b.ply").write_text(header + good + "\n" + "0 0 0\n")
    with pytest.raises(PlyFormatError, match=r"b.ply: vertex 1 .*3 values"):
        load_ply(tmp_path / "b.ply")


# --- web app uploads ----------------------------------------------------------------------------------

def _upload(path: Path):
    from gradio.data_classes import FileData

    return FileData(path=str(path), orig_name=path.name)


def test_app_upload_messages_in_our_words(tmp_path):
    gr = pytest.importorskip("gradio")
    from panolam.app.demo import photo_input

    with gr.Blocks():
        comp = photo_input(gr, label="Photo")
    (tmp_path / "notes.png").write_text("this is text, not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(gr.Error, match="notes.png is not an image file"):
        comp.preprocess(_upload(tmp_path / "notes.png"))
    with pytest.raises(gr.Error, match="empty.png is empty"):
        comp.preprocess(_upload(tmp_path / "empty.png"))
    # a transparent PNG reaches the pipeline as sent (the library would flatten it to RGB)
    from panolam.preprocess import save_png

    rgba = np.zeros((80, 80, 4), np.uint8)
    path = save_png(rgba, tmp_path / "clear.png")
    assert comp.preprocess(_upload(path)) == str(path)


def test_app_refuses_a_fully_transparent_png_like_the_cli(tmp_path, capsys):
    gr = pytest.importorskip("gradio")
    from panolam.app.demo import DemoRunner, DemoSettings
    from panolam.preprocess import save_png

    path = save_png(np.zeros((80, 80, 4), np.uint8), tmp_path / "clear.png")
    runner = DemoRunner(DemoSettings(out_root=tmp_path / "runs"), reconstructor=FakeReconstructor())
    with pytest.raises(gr.Error, match="clear.png: the image is fully transparent"):
        runner.run(str(path))
    one_line_error(capsys, main(["preprocess", str(path), "-o", str(tmp_path / "p")]), "fully transparent")


def test_app_shows_our_errors_in_our_words(tmp_path):
    gr = pytest.importorskip("gradio")
    from panolam.app.demo import DemoRunner, DemoSettings
    from panolam.preprocess.framing import NoHeadError

    class Refusing(FakeReconstructor):
        def reconstruct(self, photo, preprocess: bool = True, size: int = 512, force: bool = False):
            raise NoHeadError("no face found, so this may not be a photo of a head")

    runner = DemoRunner(DemoSettings(out_root=tmp_path / "runs"), reconstructor=Refusing())
    with pytest.raises(gr.Error, match="may not be a photo of a head"):
        runner.run(str(_photo(tmp_path)))


def test_app_refuses_oversized_uploads(tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    from _browser import free_port

    import panolam.app.demo as demo

    monkeypatch.setattr(demo, "MAX_UPLOAD", "1kb")
    with gr.Blocks() as page:
        demo.photo_input(gr, label="Photo")
    url = demo.launch(page, port=free_port(), block=False)
    try:
        import httpx

        big = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", b"\x89PNG" + bytes(4000))}, timeout=30)
        small = httpx.post(f"{url}gradio_api/upload", files={"files": ("small.png", b"\x89PNG" + bytes(100))}, timeout=30)
        assert big.status_code == 413 and "maximum allowed size" in big.text
        assert small.status_code == 200
    finally:
        page.close()


# --- recovery -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_checkpoints(dataset, tmp_path_factory):
    from panolam.train import loop

    run = tmp_path_factory.mktemp("run") / "r"
    cfg = get_config("tiny", ["data.views_per_step=2", "train.steps=2", "train.checkpoint_every=1"])
    loop.train(cfg, dataset, str(run), progress=False)
    return cfg, run


def _copy_run(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


@pytest.mark.parametrize("damage", ["truncated", "empty-json", "legacy-empty-state-pt"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(two_checkpoints, dataset, tmp_path, capsys, damage):
    from panolam.train import loop

    cfg, run = two_checkpoints
    run = _copy_run(run, tmp_path / "r")
    newest = run / "checkpoints" / "step_00000002"
    if damage == "truncated":
        data = (newest / "state.safetensors").read_bytes()
        (newest / "state.safetensors").write_bytes(data[: len(data) // 3])
    elif damage == "empty-json":
        (newest / "state.json").write_text("")
    else:
        for f in ("state.json", "state.safetensors"):
            (newest / f).unlink()
        (newest / "state.pt").write_bytes(b"")
    trainer = loop.Trainer(cfg, dataset, str(run), progress=False)
    assert trainer.resume() and trainer.step == 1
    err = capsys.readouterr().err
    assert "step_00000002" in err and "resumed from the newest intact one" in err and "step_00000001" in err


def test_stale_staging_folders_are_removed(two_checkpoints, dataset, tmp_path):
    from panolam.train import loop

    cfg, run = two_checkpoints
    run = _copy_run(run, tmp_path / "r")
    stale = run / "checkpoints" / ".step_00000003.tmp-abc123"
    (stale / "model").mkdir(parents=True)
    (stale / "model" / "model.safetensors").write_bytes(b"half")
    trainer = loop.Trainer(cfg, dataset, str(run), progress=False)
    assert trainer.resume() and trainer.step == 2
    assert not stale.exists()


def test_synth_with_invalid_arguments_does_not_block_the_corrected_rerun(tmp_path):
    from _train_fixtures import BlobHeads

    from panolam.data.manifest import load_manifest
    from panolam.data.synth import SynthSettings, generate_dataset

    root = tmp_path / "ds"
    with pytest.raises(PanoLAMError, match="seed"):
        generate_dataset(root, BlobHeads(), SynthSettings(views=8, size=16, seed=-5), 1, progress=False)
    with pytest.raises(ValueError, match="at least 8 views"):
        generate_dataset(root, BlobHeads(), SynthSettings(views=2, size=16), 1, progress=False)
    # a header left by an earlier run that wrote no shard (old versions wrote it before checking) does not block either
    generate_dataset(root, BlobHeads(), SynthSettings(views=9, size=16, seed=3), 0, progress=False)
    generate_dataset(root, BlobHeads(), SynthSettings(views=8, size=16, seed=0), 1, progress=False)
    m = load_manifest(root)
    assert m.header["seed"] == 0 and m.header["views"] == 8 and m.counts()["train"] == 1


def _label_worker(root: str, start: int, n: int) -> None:
    from panolam.data.labels import set_label

    for i in range(start, start + n):
        set_label(root, "shared", f"s{i:04d}", "reject")


def test_two_processes_writing_one_label_file_lose_nothing(tmp_path):
    import multiprocessing as mp

    from panolam.data.labels import read_labels

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_label_worker, args=(str(tmp_path), k * 40, 40)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(read_labels(tmp_path)) == 80


def test_legacy_state_pt_of_earlier_runs_still_resumes(tmp_path):
    """Runs started before the pickle-free format keep working: their state.pt (tensors, numbers and
    numpy's RNG array) loads with weights_only and the numpy allow-list."""
    import random

    from panolam.train.loop import rng_state
    from panolam.train.state_io import load_state

    gen = torch.Generator().manual_seed(3)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    random.seed(5)
    np.random.seed(5)
    old = {"step": 7, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
           "ranks": {0: {"rng": rng_state(gen), "data": {"epoch": 1, "consumed": 2}}}, "world_size": 1}
    (tmp_path / "step_00000007").mkdir()
    torch.save(old, tmp_path / "step_00000007" / "state.pt")
    got = load_state(tmp_path / "step_00000007")
    assert got["step"] == 7 and got["ranks"][0]["data"] == {"epoch": 1, "consumed": 2}
    assert got["ranks"][0]["rng"]["python"] == old["ranks"][0]["rng"]["python"]
    assert np.array_equal(got["ranks"][0]["rng"]["numpy"][1], old["ranks"][0]["rng"]["numpy"][1])
    assert torch.equal(got["optimizer"]["state"][0]["exp_avg"], old["optimizer"]["state"][0]["exp_avg"])


def test_new_state_round_trips_exactly(tmp_path):
    import random

    from panolam.train.loop import rng_state
    from panolam.train.state_io import load_state, save_state

    state = {"step": 3, "ranks": {0: {"rng": rng_state(torch.Generator().manual_seed(1)), "data": {"epoch": 0, "consumed": 4}}},
             "x": (1.0 / 3.0, float("inf"), None, [True, "s"]), "t": torch.arange(5, dtype=torch.float64) / 7}
    save_state(state, tmp_path)
    got = load_state(tmp_path)
    assert got["x"] == state["x"] and got["step"] == 3 and torch.equal(got["t"], state["t"])
    r0, g0 = got["ranks"][0]["rng"], state["ranks"][0]["rng"]
    assert r0["python"] == g0["python"] and torch.equal(r0["torch"], g0["torch"]) and torch.equal(r0["loop"], g0["loop"])
    assert r0["numpy"][0] == g0["numpy"][0] and np.array_equal(r0["numpy"][1], g0["numpy"][1]) and r0["numpy"][2:] == g0["numpy"][2:]
    random.setstate(r0["python"])  # restorable as is
    np.random.set_state(r0["numpy"])
