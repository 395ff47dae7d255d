"""Dataset format, atomic/resumable generation, loader splits, labels, extras and determinism."""

import json
from pathlib import Path
import tarfile

import numpy as np
import pytest
import torch

from panolam.data.dataset import MultiViewDataset, collate, load_subject
from panolam.data.extras import read_extra, write_extra
from panolam.data.format import CorruptShardError
from panolam.data.generators import Subject
from panolam.data.labels import read_labels, set_label
from panolam.data.manifest import load_manifest
from panolam.data.synth import TEST_SEED_OFFSET, SynthSettings, generate_dataset, make_record
from panolam.geometry.cameras import Cameras


class DiscGenerator:
    """A cheap plug-in: a disc whose colour encodes the seed and brightness the camera yaw."""

    id = "disc"

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = 0, fail_after

    def subject(self, seed):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        rng = np.random.default_rng(seed)
        return Subject(seed, {"colour": rng.random(3).round(3).tolist()}, torch.tensor(rng.random(3), dtype=torch.float32),
                       extras={"teacher": np.full((2, 2), seed, dtype=np.float32)})

    def render(self, subject, cameras: Cameras):
        n, h, w = len(cameras), cameras.height, cameras.width
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        alpha = (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (h / 3) ** 2).float()[None, ..., None].expand(n, h, w, 1)
        shade = (0.5 + 0.5 * torch.cos(torch.atan2(cameras.centers[:, 0], cameras.centers[:, 2])))[:, None, None, None]
        return subject.payload * shade * alpha, alpha


SETTINGS = SynthSettings(camera_set="360", views=8, size=32, seed=5, subjects_per_shard=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    generate_dataset(root, DiscGenerator(), SETTINGS, n_train=3, n_test=1, progress=False)
    return root


def _ds(root, **kw):
    kw.setdefault("views_per_step", 3)
    kw.setdefault("input_effects", False)
    return MultiViewDataset(root, **kw)


def test_manifest_layout_and_splits(dataset):
    m = load_manifest(dataset)
    assert m.counts() == {"train": 3, "test": 1}
    assert sorted(p.name for p in (dataset / "shards").glob("*.tar")) == ["test-00000.tar", "train-00000.tar", "train-00001.tar"]
    summary = json.loads((dataset / "manifest.json").read_text())
    assert summary["counts"] == {"train": 3, "test": 1} and summary["size"] == 32 and summary["format_version"] == 1
    train_seeds = {load_subject(dataset, s)["meta"]["seed"] for s in m.subjects("train")}
    test_seeds = {load_subject(dataset, s)["meta"]["seed"] for s in m.subjects("test")}
    assert train_seeds == {5, 6, 7} and test_seeds == {TEST_SEED_OFFSET + 5}


def test_round_trip_matches_generator(dataset):
    gen = DiscGenerator()
    rec, _ = make_record(gen, "train", 1, SETTINGS)
    got = load_subject(dataset, "train-000001")
    assert got["images"].shape == (8, 3, 32, 32) and got["masks"].shape == (8, 1, 32, 32)
    want = torch.from_numpy(rec.rgb).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(got["images"], want, atol=1e-6)
    # Stored background is white: outside the disc the image is exactly 1.
    assert torch.all(got["images"][:, :, 0, 0] == 1.0) and torch.all(got["masks"][:, :, 0, 0] == 0)
    cams = Cameras.from_eg3d_label(torch.from_numpy(rec.cameras), 32, 32)
    assert torch.allclose(got["world_to_cam"], cams.world_to_cam, atol=1e-5)
    assert torch.allclose(got["K"][:, 0, 2], torch.full((8,), 16.0))
    assert got["meta"]["camera_params"]["pitch"][:8] == [0.0] * 8
    assert torch.equal(got["teacher"], torch.full((2, 2), 6.0))


def test_loader_sample_shapes_and_background(dataset):
    samples = list(_ds(dataset, shuffle=False))
    assert [s["subject"] for s in samples] == ["train-000000", "train-000001", "train-000002"]
    s = samples[0]
    assert s["images"].shape == (3, 3, 32, 32) and s["masks"].shape == (3, 1, 32, 32)
    assert s["world_to_cam"].shape == (3, 4, 4) and s["K"].shape == (3, 3, 3)
    assert s["images"].min() >= 0 and s["images"].max() <= 1
    black = next(iter(_ds(dataset, shuffle=False, background=(0.0, 0.0, 0.0))))
    assert torch.all(black["images"][:, :, 0, 0] == 0)
    inside = s["masks"][:, 0] > 0.99
    assert torch.allclose(black["images"].permute(0, 2, 3, 1)[inside], s["images"].permute(0, 2, 3, 1)[inside], atol=1 / 255)
    batch = collate(samples[:2])
    assert batch["images"].shape == (2, 3, 3, 32, 32) and batch["subject"] == ["train-000000", "train-000001"]
    test = list(_ds(dataset, split="test"))
    assert [t["subject"] for t in test] == ["test-000000"]


def test_input_effects_only_on_input_copy(dataset):
    s = next(iter(_ds(dataset, shuffle=False, input_effects=True)))
    clean = next(iter(_ds(dataset, shuffle=False)))
    assert torch.equal(s["images"], clean["images"])
    assert s["input_image"].shape == (3, 32, 32)
    assert 0 < (s["input_image"] - s["images"][0]).abs().mean() < 0.2


def test_determinism_and_resume_position(dataset):
    a = [(s["subject"], s["view_indices"].tolist()) for s in _ds(dataset, seed=3)]
    b = [(s["subject"], s["view_indices"].tolist()) for s in _ds(dataset, seed=3)]
    assert a == b
    ds = _ds(dataset, seed=3)
    ds.set_position(0, 2)
    assert [(s["subject"], s["view_indices"].tolist()) for s in ds] == a[2:]
    ds.set_epoch(1)
    c = [(s["subject"], s["view_indices"].tolist()) for s in ds]
    assert sorted(x[0] for x in c) == sorted(x[0] for x in a) and c != a


def test_fixed_views_input_is_most_frontal(dataset):
    s1 = [s["view_indices"].tolist() for s in _ds(dataset, fixed_views=True, shuffle=False)]
    s2 = [s["view_indices"].tolist() for s in _ds(dataset, fixed_views=True, shuffle=False, seed=0, epoch=4)]
    assert s1 == s2 and all(v[0] == 0 for v in s1)  # view 0 of the 360 ring is yaw 0 (frontal)


def test_near_frontal_input_views_with_random_targets(dataset):
    from panolam.data.camera_laws import frontalness

    firsts, targets = set(), set()
    for epoch in range(6):
        for s in _ds(dataset, shuffle=False, epoch=epoch, input_max_angle=50.0):
            v = s["view_indices"].tolist()
            assert len(set(v)) == len(v) == 3
            assert float(frontalness(s["world_to_cam"][:1])[0]) >= np.cos(np.radians(50.0)) - 1e-6
            firsts.add(v[0])
            targets.update(v[1:])
    assert len(targets) > 3  # targets still cover the ring, not a fixed subset
    # 0 degrees: nothing qualifies exactly, so the most frontal view is the input.
    assert all(s["view_indices"][0] == 0 for s in _ds(dataset, shuffle=False, input_max_angle=0.0))
    with pytest.raises(ValueError, match="input_max_angle"):
        _ds(dataset, input_max_angle=200.0)


def test_rank_and_worker_split_covers_each_subject_once(dataset):
    everything = sorted(_ds(dataset).subjects())
    for world in (1, 2, 3, 5):
        for workers in (1, 2):
            seen = []
            for rank in range(world):
                ds = _ds(dataset, rank=rank, world_size=world, seed=1)
                for w in range(workers):
                    seen += [sub for _, sub in ds._assigned(rank, world, w, workers)]
            assert sorted(seen) == everything, (world, workers)
    loader = torch.utils.data.DataLoader(_ds(dataset, seed=1), batch_size=None, num_workers=2)
    assert sorted(s["subject"] for s in loader) == everything


def test_max_subjects_keeps_a_fixed_prefix_on_every_rank(dataset):
    assert sorted(_ds(dataset, max_subjects=2).subjects()) == ["train-000000", "train-000001"]
    for epoch in (0, 1):
        seen = []
        for rank in range(2):
            ds = _ds(dataset, max_subjects=2, rank=rank, world_size=2, seed=3, epoch=epoch)
            seen += [s["subject"] for s in ds]
        assert sorted(seen) == ["train-000000", "train-000001"]
    assert len(_ds(dataset, max_subjects=0).subjects()) == 3
    with pytest.raises(ValueError, match="has 3 usable subjects"):
        _ds(dataset, max_subjects=4)
    with pytest.raises(ValueError, match="max_subjects must be >= 0"):
        _ds(dataset, max_subjects=-1)


def test_rejected_subjects_are_skipped_latest_decision_wins(dataset, tmp_path):
    root = tmp_path / "copy"
    import shutil

    shutil.copytree(dataset, root)
    set_label(root, "alice", "train-000001", "reject", when=10.0)
    set_label(root, "bob", "train-000001", "accept", when=5.0)  # older: alice wins
    set_label(root, "bob", "train-000002", "accept", when=6.0)
    assert read_labels(root) == {"train-000001": "reject", "train-000002": "accept"}
    assert [s["subject"] for s in _ds(root, shuffle=False)] == ["train-000000", "train-000002"]
    assert len(_ds(root, labels=False).subjects()) == 3
    set_label(root, "bob", "train-000001", "clear", when=11.0)
    assert [s["subject"] for s in _ds(root, shuffle=False)] == ["train-000000", "train-000001", "train-000002"]
    with pytest.raises(ValueError, match="decision"):
        set_label(root, "bob", "train-000001", "maybe")
    with pytest.raises(ValueError, match="labeller"):
        set_label(root, "../x", "train-000001", "reject")


def test_extras_round_trip(tmp_path, dataset):
    arr = np.arange(6, dtype=np.float16).reshape(2, 3)
    write_extra(tmp_path, "planes", "train-000004", arr)
    assert np.array_equal(read_extra(tmp_path, "planes", "train-000004"), arr)
    assert read_extra(tmp_path, "planes", "missing") is None
    assert not list((tmp_path / "extras" / "planes").glob("*.tmp"))
    with pytest.raises(ValueError, match="extra name"):
        write_extra(tmp_path, "a/b", "x", arr)


def test_interrupted_generation_resumes(tmp_path):
    root = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(root, DiscGenerator(fail_after=3), SETTINGS, n_train=5, n_test=0, progress=False)
    # Shard 0 (2 subjects) completed; shard 1 died mid-way and left nothing the loader reads.
    assert [p.name for p in (root / "shards").glob("*.tar")] == ["train-00000.tar"]
    assert load_manifest(root).counts()["train"] == 2
    assert [s["subject"] for s in _ds(root, shuffle=False)] == ["train-000000", "train-000001"]
    # A hard kill leaves the shard's temporary file and a stale manifest summary: both must be harmless.
    (root / "shards" / ".train-00001.tmp.tar").write_bytes(b"half a shard")
    gen = DiscGenerator()
    out = generate_dataset(root, gen, SETTINGS, n_train=5, n_test=0, progress=False)
    assert out == {"written": 3, "skipped": 2} and gen.calls == 3
    assert not list((root / "shards").glob("*tmp*"))
    assert [s["subject"] for s in _ds(root, shuffle=False)] == [f"train-{i:06d}" for i in range(5)]
    fresh = tmp_path / "fresh"
    generate_dataset(fresh, DiscGenerator(), SETTINGS, n_train=5, progress=False)
    for name in ("train-00000.tar", "train-00001.tar", "train-00002.tar"):
        assert (fresh / "shards" / name).read_bytes() == (root / "shards" / name).read_bytes()


def test_resume_with_other_settings_is_refused(tmp_path):
    generate_dataset(tmp_path, DiscGenerator(), SETTINGS, n_train=1, progress=False)
    other = SynthSettings(camera_set="front", views=8, size=32, seed=5, subjects_per_shard=2)
    with pytest.raises(ValueError, match="camera_set"):
        generate_dataset(tmp_path, DiscGenerator(), other, n_train=1, progress=False)


def test_shard_groups_write_disjoint_shards_and_merge(tmp_path):
    for i in range(3):
        generate_dataset(tmp_path, DiscGenerator(), SETTINGS, n_train=5, n_test=1, shard_index=i, num_shards=3, progress=False)
    m = load_manifest(tmp_path)
    assert m.counts() == {"train": 5, "test": 1} and len(m.shards) == 4


def test_corrupt_shard_error_names_file(tmp_path, dataset):
    import shutil

    root = tmp_path / "c"
    shutil.copytree(dataset, root)
    shard = root / "shards" / "train-00000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptShardError, match="train-00000.tar"):
        list(_ds(root, shuffle=False))
    with tarfile.open(shard.with_name("x.tar"), "w"):
        pass
    shard.write_bytes(shard.with_name("x.tar").read_bytes())  # a valid but empty tar
    with pytest.raises(CorruptShardError, match="train-00000.tar.*record lists 2"):
        list(_ds(root, shuffle=False))
    shard.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CorruptShardError, match="train-00000.tar"):
        load_subject(root, "train-000000")


def test_bad_arguments(dataset, tmp_path):
    with pytest.raises(ValueError, match="views_per_step"):
        MultiViewDataset(dataset, views_per_step=9)
    with pytest.raises(ValueError, match="split"):
        MultiViewDataset(dataset, split="val")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        MultiViewDataset(tmp_path)
    with pytest.raises(KeyError, match="nobody"):
        load_subject(dataset, "nobody")


def test_label_session_filters_steps_and_sheets(dataset, tmp_path):
    import shutil

    from panolam.data.label_app import LabelSession, _sheet_views

    root = tmp_path / "lab"
    shutil.copytree(dataset, root)
    s = LabelSession(root, "carol", page_size=2)
    assert s.filtered("all") == ["train-000000", "train-000001", "train-000002", "test-000000"]
    s.decide("train-000001", "reject")
    assert s.filtered("rejected") == ["train-000001"]
    assert s.filtered("unlabelled") == ["train-000000", "train-000002", "test-000000"]
    assert s.step("unlabelled", "train-000001", 1) == "train-000002"
    assert s.step("unlabelled", "train-000001", -1) == "train-000000"
    assert "1 rejected" in s.counts_text() and "25% labelled" in s.counts_text()
    items, page, pages = s.page("all", 5)
    assert (page, pages) == (1, 2) and [c for _, c in items] == ["train-000002 · unlabelled", "test-000000 · unlabelled"]
    assert all(Path(p).is_file() for p, _ in items)
    labels = load_subject(root, "train-000000")["meta"]["camera_params"]
    assert labels["yaw"][:4] == [0.0, 45.0, 90.0, 135.0]
    cams = np.concatenate([Cameras.orbit(labels["yaw"], labels["pitch"], 2.7, 18.83, 32).to_eg3d_label().numpy()])
    assert _sheet_views(cams) == [0, 2, 4, 6]  # front, left (+90), back (180), right (-90) of the equator ring
    with pytest.raises(ValueError, match="labeller"):
        LabelSession(root, "no spaces please")
