"""The training loader: a streaming, deterministic, resumable multi-view dataset over the shards.

:class:`MultiViewDataset` streams the shards of one split and yields, per subject, ``images``
(N_v, 3, H, W) in [0, 1] composited on the stored (or a requested) background, ``masks``
(N_v, 1, H, W), ``world_to_cam`` (N_v, 4, 4), ``K`` (N_v, 3, 3) pixel intrinsics, ``view_indices``
(N_v,), ``subject`` and every sidecar extra present; with ``input_effects`` also ``input_image``
(3, H, W): view 0 with photographic effects (feed this to the encoder; targets stay clean). View 0
is the input view: random (the paper), random among views within ``input_max_angle`` degrees of
the face direction, or with ``fixed_views=True`` the stored view closest to frontal.

Work is split over distributed ranks and DataLoader workers: by shard when there are at least as
many shards as rank×worker slots, otherwise by subject position. Everything random (shard order,
a small shuffle buffer, view choice, effects) derives from ``(seed, epoch, subject)``, so a run is
reproducible; ``set_position(epoch, start)`` skips the first ``start`` samples of this rank's
stream for an exact resume (DataLoader hands out worker samples round-robin, so each worker skips
its share). Rejected subjects (labelling tool) are dropped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from panolam.data.camera_laws import frontalness
from panolam.data.extras import extra_names, read_extra
from panolam.data.format import SPLITS, CorruptShardError, SubjectRecord, cameras_from_labels, decode_meta, decode_npy, decode_record
from panolam.data.labels import rejected
from panolam.data.manifest import Manifest, ShardInfo, load_manifest
from panolam.data.photo import photo_effects
from panolam.data.shards import iter_raw_samples


def _rng(*parts: Any) -> np.random.Generator:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def record_to_tensors(rec: SubjectRecord, size: int, background: Sequence[float] | None = None) -> dict[str, Any]:
    """Tensors of a decoded record, optionally recomposited onto another background."""
    rgb = torch.from_numpy(rec.rgb).permute(0, 3, 1, 2).float() / 255
    mask = torch.from_numpy(rec.mask)[:, None].float() / 255
    if background is not None:
        # Stored rgb = premultiplied + (1 - a)·bg_old, so swapping backgrounds is exact up to rounding.
        old = torch.tensor(rec.meta.get("background", [1.0, 1.0, 1.0]), dtype=torch.float32)[:, None, None]
        new = torch.tensor(list(background), dtype=torch.float32).expand(3)[:, None, None]
        rgb = (rgb + (1 - mask) * (new - old)).clamp(0, 1)
    cams = cameras_from_labels(rec.cameras, size)
    return {"images": rgb, "masks": mask, "world_to_cam": cams.world_to_cam, "K": cams.K, "subject": rec.subject}


def choose_views(n_views: int, n: int, labels: np.ndarray, fixed: bool, rng: np.random.Generator, subject: str, seed: int,
                 input_max_angle: float = 180.0) -> list[int]:
    """``n`` view indices, input first: random, or (fixed) most frontal input + deterministic targets.

    With ``input_max_angle`` < 180 the (random) input is drawn only among views whose camera lies
    within that angle of the face direction (the most frontal view if none does); targets stay random.
    """
    if n > n_views:
        raise ValueError(f"views_per_step={n} but subject {subject} has only {n_views} views")
    if not fixed and input_max_angle >= 180.0:
        return [int(i) for i in rng.permutation(n_views)[:n]]
    w2c = torch.linalg.inv(torch.from_numpy(labels[:, :16].reshape(-1, 4, 4).astype(np.float32)))
    front = frontalness(w2c)
    if fixed:
        first = int(torch.argmax(front))
        others = [i for i in _rng("fixed", seed, subject).permutation(n_views).tolist() if i != first]
        return [first] + others[: n - 1]
    near = torch.nonzero(front >= float(np.cos(np.radians(input_max_angle)))).flatten().tolist() or [int(torch.argmax(front))]
    first = int(near[int(rng.integers(len(near)))])
    others = [int(i) for i in rng.permutation(n_views) if i != first]
    return [first] + others[: n - 1]


class MultiViewDataset(IterableDataset):
    """Streams subjects of ``split`` from the dataset at ``root`` (see module doc)."""

    def __init__(self, root: str | Path, split: str = "train", views_per_step: int = 6, fixed_views: bool = False,
                 seed: int = 0, labels: bool = True, shuffle: bool = True, shuffle_buffer: int = 8,
                 rank: int | None = None, world_size: int | None = None, epoch: int = 0, start: int = 0,
                 background: Sequence[float] | None = None, input_effects: bool = True, extras: bool = True,
                 max_subjects: int = 0, input_max_angle: float = 180.0) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split {split!r} must be one of {', '.join(SPLITS)}")
        self.root, self.split = Path(root), split
        self.manifest: Manifest = load_manifest(self.root)
        self.views_per_step, self.fixed_views, self.seed = views_per_step, fixed_views, seed
        if not 0.0 <= input_max_angle <= 180.0:
            raise ValueError(f"input_max_angle must be in [0, 180] degrees, got {input_max_angle}")
        self.input_max_angle = input_max_angle
        self.shuffle, self.shuffle_buffer = shuffle, max(1, shuffle_buffer)
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = epoch, start
        self.background, self.input_effects, self.use_extras = background, input_effects, extras
        self.excluded = rejected(self.root) if labels else set()
        if max_subjects < 0:
            raise ValueError(f"max_subjects must be >= 0 (0 = all), got {max_subjects}")
        if max_subjects:
            # Keep the first N usable subjects in manifest order: the same subset on every rank and run.
            usable = [s for s in self.manifest.subjects(split) if s not in self.excluded]
            if max_subjects > len(usable):
                raise ValueError(f"max_subjects={max_subjects} but split {split!r} of {self.root} has {len(usable)} usable subjects")
            self.excluded |= set(usable[max_subjects:])
        if views_per_step > int(self.manifest.header["views"]):
            raise ValueError(f"views_per_step={views_per_step} exceeds the {self.manifest.header['views']} views stored in {self.root}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0

    def set_position(self, epoch: int, start: int) -> None:
        """Resume: the next iteration begins at sample ``start`` (per rank) of epoch ``epoch``."""
        self.epoch, self.start = epoch, start

    def subjects(self) -> list[str]:
        """Subjects of this split the loader yields (all ranks/workers together), unordered."""
        return [s for s in self.manifest.subjects(self.split) if s not in self.excluded]

    def __len__(self) -> int:
        rank, world = _dist_rank_world(self.rank, self.world_size)
        return len(self._assigned(rank, world, 0, 1))

    def _ordered_shards(self) -> list[ShardInfo]:
        shards = self.manifest.shards_of(self.split)
        if self.shuffle:
            order = _rng("shards", self.seed, self.epoch).permutation(len(shards))
            shards = [shards[i] for i in order]
        return shards

    def _assigned(self, rank: int, world: int, worker: int, workers: int) -> list[tuple[ShardInfo, str]]:
        """(shard, subject) pairs of one worker slot, in stream order, rejected subjects removed."""
        shards = self._ordered_shards()
        slots, slot = world * workers, rank * workers + worker
        if len(shards) >= slots:
            pairs = [(s, sub) for s in shards[slot::slots] for sub in s.subjects]
        else:
            flat = [(s, sub) for s in shards for sub in s.subjects]
            pairs = flat[slot::slots]
        return [(s, sub) for s, sub in pairs if sub not in self.excluded]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = _dist_rank_world(self.rank, self.world_size)
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        wanted = self._assigned(rank, world, worker, workers)
        skip = max(0, -(-(self.start - worker) // workers))
        names = extra_names(self.root) if self.use_extras else []
        for k, raw in enumerate(self._shuffled(self._raw(wanted))):
            if k < skip:
                continue
            yield self._decode(raw, names)

    def _raw(self, wanted: list[tuple[ShardInfo, str]]) -> Iterator[tuple[dict[str, bytes], str]]:
        by_shard: dict[str, tuple[ShardInfo, set[str]]] = {}
        for shard, sub in wanted:
            by_shard.setdefault(shard.name, (shard, set()))[1].add(sub)
        for shard, subs in by_shard.values():
            path = self.manifest.shard_path(shard)
            seen = 0
            for raw in iter_raw_samples(path):
                seen += 1
                if raw["__key__"] in subs:
                    yield raw, str(path)
            if seen != len(shard.subjects):
                raise CorruptShardError(f"{path}: holds {seen} samples but its record lists {len(shard.subjects)}; the shard is damaged — delete it and its .json to regenerate")

    def _shuffled(self, items: Iterator[tuple[dict[str, bytes], str]]) -> Iterator[tuple[dict[str, bytes], str]]:
        if not self.shuffle or self.shuffle_buffer <= 1:
            yield from items
            return
        rng = _rng("buffer", self.seed, self.epoch)
        buf: list = []
        for item in items:
            buf.append(item)
            if len(buf) >= self.shuffle_buffer:
                yield buf.pop(int(rng.integers(len(buf))))
        while buf:
            yield buf.pop(int(rng.integers(len(buf))))

    def _decode(self, item: tuple[dict[str, bytes], str], names: list[str]) -> dict[str, Any]:
        raw, where = item
        meta = decode_meta(raw, where)
        sub = raw["__key__"]
        labels = decode_npy(raw.get("cameras.npy", b""), f"{where} [{sub}.cameras.npy]")
        rng = _rng("views", self.seed, self.epoch, sub)
        views = choose_views(len(labels), self.views_per_step, labels, self.fixed_views, rng, sub, self.seed, self.input_max_angle)
        rec = decode_record(raw, where, views)
        out = record_to_tensors(rec, int(meta["size"]), self.background)
        out["view_indices"] = torch.tensor(views, dtype=torch.long)
        if self.input_effects:
            out["input_image"] = photo_effects(out["images"][0], _rng("photo", self.seed, self.epoch, sub))
        for name in names:
            arr = read_extra(self.root, name, sub)
            if arr is not None:
                out[name] = torch.from_numpy(arr)
        return out


def load_subject(root: str | Path, subject_id: str, views: Sequence[int] | None = None,
                 background: Sequence[float] | None = None) -> dict[str, Any]:
    """Every (or the listed) view of one subject, plus ``meta`` and extras (map-style access for evaluation)."""
    manifest = load_manifest(root)
    shard = manifest.find_subject(subject_id)
    path = manifest.shard_path(shard)
    for raw in iter_raw_samples(path):
        if raw["__key__"] == subject_id:
            rec = decode_record(raw, str(path), views)
            out = record_to_tensors(rec, manifest.size, background)
            out["meta"] = rec.meta
            for name in extra_names(root):
                arr = read_extra(root, name, subject_id)
                if arr is not None:
                    out[name] = torch.from_numpy(arr)
            return out
    raise CorruptShardError(f"{path}: its record lists subject {subject_id!r} but the shard does not contain it")


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors of equal shape along a new batch dim; other values become lists."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        if all(isinstance(v, torch.Tensor) for v in vals) and len({tuple(v.shape) for v in vals}) == 1:
            out[key] = torch.stack(vals)
        else:
            out[key] = vals
    return out
