"""Dataset generation: subjects from a generator plug-in, cameras from the paper's laws, shards on disk.

Subjects are planned globally: split ``train`` has subjects 0..N-1 with seeds ``seed + i``, split
``test`` has subjects 0..M-1 with seeds ``TEST_SEED_OFFSET + seed + i`` — a disjoint range, so
held-out subjects never share a seed with training ones. Shard ``k`` of a split holds subjects
``[k·S, (k+1)·S)``; process ``i`` of ``n`` (``--shard i/n``) writes the shards with ``k % n == i``
(numbered over both splits), so processes on different machines write disjoint files. A shard
whose tar and completion record exist is skipped, which makes a killed run resumable; a shard's
content depends only on its subjects' seeds, so resuming or re-splitting gives identical data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from panolam.data.camera_laws import CAMERA_SETS, sample_cameras
from panolam.data.extras import write_extra
from panolam.data.format import SPLITS, SubjectRecord
from panolam.data.generators import Generator
from panolam.data.manifest import ShardInfo, completed_shards, init_manifest, refresh_manifest, shard_name, write_shard_record
from panolam.data.shards import write_shard
from panolam.errors import PanoLAMError

TEST_SEED_OFFSET = 1_000_000_000


def subject_seed(split: str, index: int, base_seed: int = 0) -> int:
    seed = base_seed + index
    if seed >= TEST_SEED_OFFSET or seed < 0:
        raise PanoLAMError(f"training seeds must lie in [0, {TEST_SEED_OFFSET}); got seed {base_seed} + subject {index}")
    return seed if split == "train" else TEST_SEED_OFFSET + seed


def subject_id(split: str, index: int) -> str:
    return f"{split}-{index:06d}"


def derive_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed for a named random stream of one subject."""
    digest = hashlib.blake2b(f"{seed}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclasses.dataclass
class SynthSettings:
    camera_set: str = "360"
    views: int = 32
    size: int = 256
    seed: int = 0
    subjects_per_shard: int = 64
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.camera_set not in CAMERA_SETS:
            raise ValueError(f"unknown camera set {self.camera_set!r}; choose one of {', '.join(CAMERA_SETS)}")
        if self.views < 1 or self.size < 8 or self.subjects_per_shard < 1:
            raise ValueError(f"need views >= 1, size >= 8, subjects_per_shard >= 1 (got {self.views}, {self.size}, {self.subjects_per_shard})")


@dataclasses.dataclass
class ShardPlan:
    split: str
    index: int
    subjects: list[int]  # subject indices within the split

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)


def plan_shards(n_train: int, n_test: int, per_shard: int) -> list[ShardPlan]:
    plans = []
    for split, n in (("train", n_train), ("test", n_test)):
        for k, start in enumerate(range(0, n, per_shard)):
            plans.append(ShardPlan(split, k, list(range(start, min(n, start + per_shard)))))
    return plans


def my_shards(plans: Sequence[ShardPlan], shard_index: int = 0, num_shards: int = 1) -> list[ShardPlan]:
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise PanoLAMError(f"--shard {shard_index}/{num_shards}: need 0 <= i < n")
    return [p for j, p in enumerate(plans) if j % num_shards == shard_index]


def make_record(generator: Generator, split: str, index: int, settings: SynthSettings) -> tuple[SubjectRecord, dict]:
    """Generate and render one subject; returns the record and the generator's extra arrays."""
    seed = subject_seed(split, index, settings.seed)
    subj = generator.subject(seed)
    law = sample_cameras(settings.camera_set, settings.views, torch.Generator().manual_seed(derive_seed(seed, "cameras")))
    cams = law.cameras(settings.size)
    with torch.no_grad():
        premult, alpha = generator.render(subj, cams)
    bg = torch.tensor(settings.background, dtype=torch.float32)
    rgb = (premult.cpu().float() + (1 - alpha.cpu().float()) * bg).clamp(0, 1)
    to_u8 = lambda t: (t * 255 + 0.5).to(torch.uint8).numpy()  # noqa: E731
    meta = {
        "subject": subject_id(split, index), "generator": generator.id, "seed": seed, "split": split,
        "camera_set": settings.camera_set, "views": settings.views, "size": settings.size,
        "background": list(settings.background), "attributes": subj.attributes,
        "camera_params": {k: [round(float(x), 4) for x in getattr(law, k)] for k in ("yaw", "pitch", "radius", "fov")},
    }
    rec = SubjectRecord(meta["subject"], to_u8(rgb), to_u8(alpha.cpu().float()[..., 0].clamp(0, 1)), cams.to_eg3d_label().numpy().astype(np.float32), meta)
    return rec, subj.extras


def generate_dataset(root: str | Path, generator: Generator, settings: SynthSettings, n_train: int, n_test: int = 0,
                     shard_index: int = 0, num_shards: int = 1, progress: bool = True) -> dict[str, int]:
    """Write (or resume) this process's shards; returns counts of subjects written and skipped."""
    root = Path(root)
    # Check every argument before anything is written: a bad run must leave nothing that blocks the corrected one.
    if n_train < 0 or n_test < 0:
        raise PanoLAMError(f"subject counts must be >= 0 (got {n_train} train, {n_test} test)")
    my_shards([], shard_index, num_shards)
    sample_cameras(settings.camera_set, settings.views, torch.Generator().manual_seed(0))  # e.g. too few views for the set
    for split, n in (("train", n_train), ("test", n_test)):
        for i in {0, n - 1} if n else ():
            subject_seed(split, i, settings.seed)
    header = {"generator": generator.id, "camera_set": settings.camera_set, "views": settings.views, "size": settings.size,
              "background": list(settings.background), "seed": settings.seed, "subjects_per_shard": settings.subjects_per_shard,
              "test_seed_offset": TEST_SEED_OFFSET, "planned": {"train": n_train, "test": n_test}}
    config = getattr(generator, "config", None)
    if config is not None:  # e.g. a GAN's checkpoint, truncation, renderer settings
        header["generator_config"] = json.loads(json.dumps(config))
    init_manifest(root, header)
    # A shard counts as done only if it holds exactly the planned subjects: growing a dataset
    # (more --subjects) regenerates its last, partly filled shard instead of skipping it.
    done_subjects = {s.name: list(s.subjects) for s in completed_shards(root)}
    plans = my_shards(plan_shards(n_train, n_test, settings.subjects_per_shard), shard_index, num_shards)
    is_done = lambda p: done_subjects.get(p.name) == [subject_id(p.split, i) for i in p.subjects]  # noqa: E731
    todo = [p for p in plans if not is_done(p)]
    skipped = sum(len(p.subjects) for p in plans if is_done(p))
    bar = _progress(sum(len(p.subjects) for p in plans), skipped, progress, generator.id)
    written = 0
    for plan in todo:
        extras: list[tuple[str, str, np.ndarray]] = []
        write_shard(root / "shards" / plan.name, _records(generator, plan, settings, extras, bar))
        for name, sid, arr in extras:
            write_extra(root, name, sid, arr)
        write_shard_record(root, ShardInfo(plan.name, plan.split, plan.index, [subject_id(plan.split, i) for i in plan.subjects]))
        refresh_manifest(root)
        written += len(plan.subjects)
    if bar is not None:
        bar.close()
    return {"written": written, "skipped": skipped}


def _records(generator: Generator, plan: ShardPlan, settings: SynthSettings, extras: list, bar) -> Iterator[SubjectRecord]:
    for i in plan.subjects:
        rec, sub_extras = make_record(generator, plan.split, i, settings)
        extras.extend((name, rec.subject, np.asarray(arr)) for name, arr in sub_extras.items())
        if bar is not None:
            bar.update(1)
        yield rec


def _progress(total: int, initial: int, enabled: bool, desc: str = "synth"):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="subject", desc=desc, dynamic_ncols=True)


__all__ = ["SPLITS", "SynthSettings", "generate_dataset", "subject_seed", "subject_id", "plan_shards", "my_shards", "make_record", "derive_seed", "TEST_SEED_OFFSET"]
