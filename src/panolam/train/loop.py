"""The training engine: one code path for single-process CPU/GPU and multi-process DDP via Accelerate.

Launch lines (every process runs the same command; each streams its own share of the shards)::

    panolam train --config default --data data/synth360 --out runs/a          # one process
    accelerate launch --num_processes 8 -m panolam.cli.train --config paper   # one node, 8 GPUs
    torchrun --nproc_per_node 8 --nnodes 2 --rdzv_endpoint HOST:29500 -m panolam.cli.train --config paper

Several datasets (``--data D1 --data D2``, e.g. EG3D Front + SphereHead 360) are interleaved by
:class:`MixedStream`: one dataset per batch, in proportion to their subject counts; a term whose
inputs a dataset lacks (e.g. teacher planes) is skipped for its batches.

Per step: the input view (``input_image``, else view 0) is resized to the encoder size, the model
runs under autocast (bf16 where the GPU has it, ``mixed_precision="auto"``), the loss of
:mod:`panolam.train.losses` is backpropagated, gradients clipped, AdamW steps and the cosine
schedule (linear warm-up) advances. A non-finite loss stops the run naming the step and subjects.
Checkpoints (every ``checkpoint_every`` steps, at the end and on Ctrl-C) are directories
``OUT/checkpoints/step_XXXXXXXX/`` holding ``model/`` (safetensors, :func:`save_model`) and
``state.safetensors`` + ``state.json`` (optimiser, scheduler, step, each rank's data position and
RNG states: torch, CUDA, numpy, python, the loop's generator; no pickle, see
:mod:`panolam.train.state_io`), written to a temporary directory and renamed into place;
``OUT/checkpoints/latest`` names the newest and is replaced atomically. ``--resume`` restores all
of it, so a killed and resumed run reproduces an uninterrupted one; a damaged newest checkpoint is
skipped (with a message) for the newest intact one, and staging folders left by a killed save
(``.step_*.tmp-*``) are removed. Rank 0 writes TensorBoard logs
(``OUT/logs``: losses, lr, throughput, sample renders) and shows a tqdm bar.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from panolam.config import PanoLAMConfig
from panolam.data.dataset import MultiViewDataset, collate
from panolam.errors import PanoLAMError
from panolam.atomic import atomic_write_bytes, staging_dir
from panolam.model.checkpoint import CheckpointError, load_weights_into, save_model
from panolam.model.panolam import PanoLAM
from panolam.model.pixel_aligned import CAMERA_HEADS  # what train.trainable=pose_head trains (and heads freezes)
from panolam.model.triplane_decoder import TriplaneRenderer, renderer_from_state
from panolam.train.gan_teacher import SphereHeadDecoder, resolve_kind, spherehead_decoder
from panolam.train.losses import PanoLAMLoss, batch_input_camera, pose_only_loss
from panolam.train.state_io import STATE_JSON, TrainStateError, has_state, load_state, save_state

CKPT_DIR, LATEST, STATE_NAME = "checkpoints", "latest", STATE_JSON
TRAINABLE = ("all", "pose_head", "heads")  # train.trainable
INPUT_CAMERAS = ("true", "estimated")  # train.input_camera
STAGING_GLOB = ".step_*.tmp-*"


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN/Inf; the message names the step and the batch's subjects."""


def lr_lambda(warmup: int, total: int):
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def resolve_mixed_precision(mode: str) -> str:
    """Accelerate's precision for ``mode``: "auto" = bf16 on a bf16-capable GPU, else fp32 ("no")."""
    if mode == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if mode not in ("no", "fp16", "bf16"):
        raise ValueError(f"train.mixed_precision must be auto, no, fp16 or bf16, got {mode!r}")
    return mode


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(), "loop": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    gen.set_state(state["loop"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    pointer = Path(out_dir) / CKPT_DIR / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not has_state(path):
        raise FileNotFoundError(f"{pointer} names {path}, which has no {STATE_NAME}; the checkpoint directory is damaged")
    return path


def checkpoint_candidates(out_dir: str | Path) -> list[Path]:
    """Checkpoints to try on resume, newest first: the one ``latest`` names, then every ``step_*`` by step."""
    ckdir = Path(out_dir) / CKPT_DIR
    steps = sorted((p for p in ckdir.glob("step_*") if p.is_dir()), reverse=True) if ckdir.is_dir() else []
    pointer = ckdir / LATEST
    named = ckdir / pointer.read_text().strip() if pointer.is_file() else None
    if named is not None and named in steps:
        steps.remove(named)
        steps.insert(0, named)
    return steps


def remove_stale_staging(ckdir: str | Path) -> list[Path]:
    """Delete staging folders a killed save left behind (only the writing process calls this)."""
    ckdir = Path(ckdir)
    stale = [p for p in ckdir.glob(STAGING_GLOB) if p.is_dir()] if ckdir.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


class DataStream:
    """Endless batches over epochs, remembering (epoch, samples consumed this epoch) for exact resume."""

    def __init__(self, dataset: MultiViewDataset, batch_size: int, workers: int, seed: int) -> None:
        self.dataset, self.batch_size, self.workers, self.seed = dataset, batch_size, workers, seed
        self.epoch, self.consumed = 0, 0
        self._it: Iterator | None = None

    def _loader(self) -> Iterator:
        self.dataset.set_position(self.epoch, self.consumed)
        # An explicit generator keeps worker seeding off the global RNG (which resume restores).
        gen = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        return iter(DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.workers, collate_fn=collate,
                               generator=gen, persistent_workers=False))

    def next(self) -> dict[str, Any]:
        for _ in range(2):
            if self._it is None:
                self._it = self._loader()
            try:
                batch = next(self._it)
                self.consumed += len(batch["subject"])
                return batch
            except StopIteration:
                self.epoch, self.consumed, self._it = self.epoch + 1, 0, None
        raise RuntimeError(f"the training split of {self.dataset.root} yields no subjects for this rank")

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def restore(self, pos: dict[str, int]) -> None:
        self.epoch, self.consumed, self._it = int(pos["epoch"]), int(pos["consumed"]), None


class MixedStream:
    """Batches from several datasets (``--data D1 --data D2``), one dataset per batch.

    Mixing rule: proportional interleave by size — each step draws from the dataset whose share of
    the batches drawn so far lags most behind its share of all training subjects (ties: the one
    given first), so a 48K-subject Front set and a 117K-subject 360 set are seen in a 48:117 ratio,
    evenly spread, deterministically (exact resume: the counts are part of the position). Each
    dataset runs its own epochs; batches never mix datasets, whose image sizes may differ.
    """

    def __init__(self, streams: list[DataStream], sizes: list[int]) -> None:
        if len(streams) != len(sizes) or not streams or min(sizes) < 1:
            raise ValueError(f"need one or more non-empty datasets, got sizes {sizes}")
        self.streams, self.sizes = streams, sizes
        self.taken = [0] * len(streams)

    def next(self) -> dict[str, Any]:
        total = sum(self.sizes)
        i = min(range(len(self.streams)), key=lambda k: ((self.taken[k] + 1) * total / self.sizes[k], k))
        self.taken[i] += 1
        batch = self.streams[i].next()
        batch["dataset_index"] = i
        return batch

    def position(self) -> dict[str, Any]:
        return {"taken": list(self.taken), "streams": [s.position() for s in self.streams]}

    def restore(self, pos: dict[str, Any]) -> None:
        if len(pos.get("streams", [])) != len(self.streams):
            raise ValueError(f"checkpoint was written for {len(pos.get('streams', []))} datasets, this run has {len(self.streams)}")
        self.taken = [int(t) for t in pos["taken"]]
        for s, p in zip(self.streams, pos["streams"]):
            s.restore(p)


def build_st_renderer(cfg: PanoLAMConfig, roots: Sequence[str | os.PathLike] = ()) -> TriplaneRenderer | SphereHeadDecoder | None:
    """The frozen decoder of L_rgb^ST for ``train.st_decoder_kind`` (train/gan_teacher.py): SphereHead's
    from ``train.st_decoder_checkpoint``, or our fitted one from ``train.st_decoder`` (None when unset).
    ``roots`` are the training datasets ("auto" looks for one made by SphereHead)."""
    t = cfg.train
    kind = resolve_kind(t.st_decoder_kind, t.st_decoder_checkpoint, roots)
    if kind == "spherehead":
        if not t.st_decoder_checkpoint:
            raise ValueError("train.st_decoder_kind=spherehead needs train.st_decoder_checkpoint (the SphereHead .pkl/.safetensors)")
        return spherehead_decoder(t.st_decoder_checkpoint, roots, background=cfg.data.background, superres=t.st_superres)
    if not t.st_decoder:
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(t.st_decoder)
    if not path.is_file():
        raise FileNotFoundError(f"train.st_decoder: no decoder file at {path} (write one with `panolam teacher fit`)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:  # a pickle (.pt) or a damaged file
        raise PanoLAMError(f"train.st_decoder={path}: not a readable safetensors file ({exc}); pickled .pt/.pth decoders are "
                           "refused for safety, write one with `panolam teacher fit`") from exc
    return renderer_from_state(state, box_warp=cfg.model.box_warp, ray_start=t.st_ray_start, ray_end=t.st_ray_end,
                               samples_coarse=t.st_samples_coarse, samples_fine=t.st_samples_fine, background=cfg.data.background)


def encoder_input(batch: dict[str, Any], size: int, device: torch.device) -> torch.Tensor:
    img = batch["input_image"] if isinstance(batch.get("input_image"), torch.Tensor) else batch["images"][:, 0]
    img = img.to(device).float()
    if img.shape[-2:] != (size, size):
        img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return img


def model_inputs(batch: dict[str, Any], cfg: PanoLAMConfig, device: torch.device,
                 generator: torch.Generator | None = None) -> dict[str, Any]:
    """Keyword arguments of the network for a batch: the encoder image, and for a pixel-aligned network
    the input view's matte and its camera: the true one perturbed by ``train.input_camera_noise_deg``,
    or None (the network's own estimate) with ``train.input_camera="estimated"``."""
    from panolam.model.pixel_aligned import perturb_camera

    images = encoder_input(batch, cfg.model.image_size, device)
    if not cfg.model.pixel_aligned:
        return {"images": images}
    masks = batch["masks"][:, 0].to(device).float()
    if cfg.train.input_camera == "estimated":
        return {"images": images, "camera": None, "masks": masks}
    cam = perturb_camera(batch_input_camera(batch), cfg.train.input_camera_noise_deg, generator).to(device)
    return {"images": images, "camera": cam, "masks": masks}


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def resolve_init_weights(spec: str) -> Path:
    """``train.init_weights`` as a model directory: "shipped" is the default model in the package."""
    from panolam.pipeline import DEFAULT_CHECKPOINT, resolve_checkpoint

    try:
        return resolve_checkpoint(DEFAULT_CHECKPOINT if spec == "shipped" else spec)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"train.init_weights={spec}: {exc}") from exc


class Trainer:
    """Holds the run's objects; :meth:`fit` trains until ``train.steps`` (or ``stop_after`` more steps)."""

    def __init__(self, cfg: PanoLAMConfig, data_root: str | list[str] | None = None, out_dir: str | None = None, progress: bool = True) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.cfg = cfg
        self.out = Path(out_dir or cfg.train.out_dir)
        self.data_root = data_root or cfg.data.root
        # cpu=True without CUDA lets Accelerate pick gloo DDP when launched with several processes.
        self.accel = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=resolve_mixed_precision(cfg.train.mixed_precision),
                                 kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.rank, self.world = self.accel.process_index, self.accel.num_processes
        self.progress = progress and self.accel.is_main_process
        t = cfg.train
        # Same seed on every rank for identical initial weights; per-rank streams after that.
        torch.manual_seed(t.seed)
        self.model = PanoLAM(cfg.model)
        if t.init_weights:
            meta = load_weights_into(self.model, resolve_init_weights(t.init_weights), allow_missing=True)
            if meta.get("missing_keys") and self.rank == 0:
                print(f"train.init_weights: {len(meta['missing_keys'])} parameters are new or rebuilt in this network and keep "
                      f"their initialisation ({', '.join(sorted({k.split('.')[0] for k in meta['missing_keys']}))})")
        # DDP cannot broadcast sparse buffers (the densification matrix); they are derived identically on every rank.
        sparse = [n for n, b in self.model.named_buffers(remove_duplicate=False) if b.is_sparse]  # aliases too
        if sparse:
            torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.model, sparse)
        np.random.seed(t.seed + self.rank)
        random.seed(t.seed + self.rank)
        torch.manual_seed(t.seed + 7919 * self.rank)
        self.gen = torch.Generator().manual_seed(t.seed + 104729 * self.rank)
        if t.trainable not in TRAINABLE:
            raise ValueError(f"train.trainable must be one of {TRAINABLE}, got {t.trainable!r}")
        if t.input_camera not in INPUT_CAMERAS:
            raise ValueError(f"train.input_camera must be one of {INPUT_CAMERAS}, got {t.input_camera!r}")
        self.pose_only = t.trainable == "pose_head"
        if self.pose_only:
            if not cfg.model.pixel_aligned:
                raise ValueError("train.trainable=pose_head needs a network with a pose head (model.pixel_aligned=true)")
            for name, p in self.model.named_parameters():
                p.requires_grad_(name.startswith(CAMERA_HEADS))
        elif t.trainable == "heads":  # the image tokens stay exactly as they were: a pose head trained on them stays valid
            for name, p in self.model.named_parameters():
                if name.startswith(("encoder.", *CAMERA_HEADS)):
                    p.requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        # The scheduler is not passed to accelerate.prepare: that wrapper steps it once per process.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(t.warmup_steps, t.steps))
        self.model, self.optimizer = self.accel.prepare(self.model, self.optimizer)
        roots = [self.data_root] if isinstance(self.data_root, (str, os.PathLike)) else list(self.data_root)
        self.loss_fn = PanoLAMLoss(t, build_st_renderer(cfg, roots), background=cfg.data.background).to(self.accel.device)
        datasets = [MultiViewDataset(root, "train", views_per_step=cfg.data.views_per_step, fixed_views=cfg.data.fixed_views,
                                     seed=t.seed, rank=self.rank, world_size=self.world, background=[cfg.data.background] * 3,
                                     shuffle_buffer=cfg.data.shuffle_buffer, input_effects=cfg.data.input_effects,
                                     max_subjects=cfg.data.train_subjects, input_max_angle=cfg.data.input_max_angle) for root in roots]
        streams = [DataStream(ds, t.batch_size, cfg.data.num_workers, t.seed + self.rank + 7919 * i) for i, ds in enumerate(datasets)]
        # One dataset keeps the plain stream (and its checkpoint format); several are interleaved by size.
        self.data = streams[0] if len(streams) == 1 else MixedStream(streams, [len(ds.subjects()) for ds in datasets])
        self.step = 0
        self.writer = None

    # --- checkpoints ------------------------------------------------------------------------

    def save(self) -> Path | None:
        """Write ``step_XXXXXXXX`` atomically (all ranks take part; rank 0 writes)."""
        from accelerate.utils import gather_object

        mine = {"rank": self.rank, "rng": rng_state(self.gen), "data": self.data.position()}
        every = gather_object([mine]) if self.world > 1 else [mine]
        target = None
        if self.accel.is_main_process:
            ckdir = self.out / CKPT_DIR
            ckdir.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(ckdir)
            name = f"step_{self.step:08d}"
            target = ckdir / name
            tmp = staging_dir(ckdir, f".{name}.tmp-")
            try:
                save_model(tmp / "model", self.accel.unwrap_model(self.model), self.cfg, extra={"step": self.step})
                state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                         "ranks": {int(e["rank"]): {"rng": e["rng"], "data": e["data"]} for e in every}, "world_size": self.world}
                save_state(state, tmp)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            atomic_write_bytes(ckdir / LATEST, name.encode())
        self.accel.wait_for_everyone()
        return target

    def resume(self) -> bool:
        """Restore the newest intact checkpoint under OUT (saying which damaged ones were skipped); False when there is none."""
        ckdir = self.out / CKPT_DIR
        if self.accel.is_main_process:
            remove_stale_staging(ckdir)
        candidates = checkpoint_candidates(self.out)
        if not candidates:
            if (ckdir / LATEST).is_file():
                raise TrainStateError(f"{ckdir / LATEST} names a checkpoint but no step_* folder is left under {ckdir}; "
                                      "delete the run folder's checkpoints/ to start again or restore the folders")
            return False
        skipped: list[str] = []
        for path in candidates:
            try:
                self._restore(path)
            except (TrainStateError, CheckpointError, FileNotFoundError, KeyError, TypeError) as exc:
                skipped.append(f"{path.name} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
                continue
            if skipped and self.accel.is_main_process:
                print(f"resume: skipped damaged checkpoint(s) {'; '.join(skipped)}; resumed from the newest intact one, "
                      f"{path} (step {self.step})", file=sys.stderr, flush=True)
            return True
        raise TrainStateError(f"no intact checkpoint under {ckdir} to resume from: {'; '.join(skipped)}")

    def _restore(self, path: Path) -> None:
        state = load_state(path)
        for key in ("step", "optimizer", "scheduler", "ranks", "world_size"):
            if key not in state:
                raise TrainStateError(f"{path}: training state lacks {key!r}")
        if state["world_size"] != self.world:
            raise PanoLAMError(f"{path} was written by {state['world_size']} processes; resume it with the same number (have {self.world})")
        # Goes through the checkpoint loader: a frozen pretrained encoder is not in the file.
        load_weights_into(self.accel.unwrap_model(self.model), path / "model")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        mine = state["ranks"][self.rank]
        self.data.restore(mine["data"])
        set_rng_state(mine["rng"], self.gen)

    # --- one step ---------------------------------------------------------------------------

    def train_step(self, batch: dict[str, Any]):
        batch = _to_device(batch, self.accel.device)
        self.model.train()
        with self.accel.autocast():
            if self.pose_only:
                out = self.model(encoder_input(batch, self.cfg.model.image_size, self.accel.device), pose_only=True)
            else:
                out = self.model(**model_inputs(batch, self.cfg, self.accel.device, self.gen))
        result = pose_only_loss(out, batch) if self.pose_only else self.loss_fn(out, batch)
        if not torch.isfinite(result.total):
            raise NonFiniteLoss(f"non-finite loss {result.total.item()} at step {self.step} (rank {self.rank}) for subjects "
                                f"{list(batch['subject'])}; terms: { {k: float(v) for k, v in result.terms.items()} }")
        self.accel.backward(result.total)
        if self.cfg.train.grad_clip > 0:
            self.accel.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return result, batch

    def _log(self, result, batch, seconds: float) -> None:
        t = self.cfg.train
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "logs"))
        if self.step % t.log_every == 0:
            for k, v in result.terms.items():
                self.writer.add_scalar(f"loss/{k}", float(v), self.step)
            for k in result.absent:
                self.writer.add_scalar(f"absent/{k}", 1.0, self.step)
            self.writer.add_scalar("lr", self.scheduler.get_last_lr()[0], self.step)
            self.writer.add_scalar("throughput/samples_per_s", len(batch["subject"]) * self.world / max(seconds, 1e-9), self.step)
        if t.sample_every > 0 and self.step % t.sample_every == 0 and result.renders:
            self.writer.add_image("samples/target_dense_coarse_triplane", sample_grid(result, batch, t.render_size), self.step)

    def fit(self, stop_after: int | None = None, time_limit_s: float | None = None, save_at_end: bool = True) -> dict[str, float]:
        """Train to ``train.steps``; ``stop_after`` ends (with a checkpoint) after that many steps of this call,
        ``time_limit_s`` before the first step that would start that many seconds after the call began (all
        processes stop at the same step). ``save_at_end=False`` skips the closing checkpoint (a call whose
        steps are being timed, ``scripts/gpu_train.py``); Ctrl-C and ``checkpoint_every`` still save."""
        from tqdm.auto import tqdm

        t = self.cfg.train
        if time_limit_s is not None and time_limit_s <= 0:
            raise ValueError(f"time limit must be positive, got {time_limit_s} s")
        end = t.steps if stop_after is None else min(t.steps, self.step + stop_after)
        start = self._clock()
        bar = tqdm(total=t.steps, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        last: dict[str, float] = {}
        try:
            while self.step < end and not self._out_of_time(start, time_limit_s):
                tic = time.perf_counter()
                batch = self.data.next()
                result, batch = self.train_step(batch)
                self.step += 1
                last = {k: float(v) for k, v in result.terms.items()}
                if self.accel.is_main_process:
                    self._log(result, batch, time.perf_counter() - tic)
                    bar.set_postfix(loss=f"{last['total']:.4f}")
                bar.update(1)
                if t.checkpoint_every > 0 and self.step % t.checkpoint_every == 0 and self.step < end:
                    self.save()
        except KeyboardInterrupt:
            bar.close()
            if self.world == 1:  # other ranks may be gone: only a lone process can save safely here
                self.save()
            raise
        bar.close()
        if save_at_end:
            self.save()
        if self.writer is not None:
            self.writer.flush()
        return last

    _clock = staticmethod(time.perf_counter)  # the time limit's clock (a test replaces it)

    def set_total_steps(self, steps: int) -> None:
        """Re-plan the run to end at ``steps``: the cosine schedule decays to 0 there from the current step's
        position on (a wall-clock budget measured after a few steps, ``scripts/gpu_train.py``). It is not part
        of the resumable state: ``--resume`` plans from the ``train.steps`` it is given."""
        if steps <= self.step:
            raise ValueError(f"total steps must be past the current step {self.step}, got {steps}")
        self.cfg.train.steps = steps
        self.scheduler.lr_lambdas[0] = lr_lambda(self.cfg.train.warmup_steps, steps)

    def _out_of_time(self, start: float, limit_s: float | None) -> bool:
        """Whether ``limit_s`` seconds have passed since ``start``: rank 0's clock decides for every process."""
        if limit_s is None:
            return False
        over = torch.tensor([float(self._clock() - start >= limit_s)], device=self.accel.device)
        if self.world > 1:
            from accelerate.utils import broadcast

            over = broadcast(over, from_process=0)
        return bool(over.item())


def sample_grid(result, batch: dict[str, Any], size: int) -> torch.Tensor:
    """(3, rows·size, views·size) image: targets, then each available render, for the first subject."""
    target = F.interpolate(batch["images"][0].float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    rows = [target.permute(0, 2, 3, 1)]
    rows += [result.renders[k][0] for k in ("dense", "coarse", "triplane") if k in result.renders]
    grid = torch.cat([torch.cat(list(r.clamp(0, 1).cpu()), dim=1) for r in rows], dim=0)  # (rows·H, N·W, 3)
    return grid.permute(2, 0, 1)


def train(cfg: PanoLAMConfig, data_root: str | list[str] | None = None, out_dir: str | None = None, resume: bool = False,
          stop_after: int | None = None, progress: bool = True, time_limit_s: float | None = None) -> dict[str, float]:
    """Build a :class:`Trainer`, optionally resume, and train; returns the last step's loss terms."""
    if time_limit_s is not None and time_limit_s <= 0:
        raise ValueError(f"time limit must be positive, got {time_limit_s} s")
    trainer = Trainer(cfg, data_root, out_dir, progress)
    if resume and not trainer.resume() and trainer.accel.is_main_process:
        print(f"no checkpoint under {trainer.out / CKPT_DIR}; starting from step 0")
    return trainer.fit(stop_after, time_limit_s)
