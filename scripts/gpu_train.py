"""Training on a lent GPU for a fixed wall-clock budget, and carrying the model back (issue 12).

    python scripts/gpu_train.py train --data D --out RUN --minutes M [--set SECTION.FIELD=VALUE ...]
    python scripts/gpu_train.py pack MODEL_DIR OUT_DIR        # pieces of at most 15 MiB each
    python scripts/gpu_train.py unpack OUT_DIR MODEL_DIR      # back to one model directory

``train`` builds the run, takes a few warm-up steps, times a few more, and re-plans the cosine schedule
(:meth:`Trainer.set_total_steps`) so that it decays to zero when the budget runs out; a time limit
stops it with a checkpoint should the steps slow down. ``pack``/``unpack`` exist because a device call
returns files of at most 16 MiB and the default model is 39 MB in float32: the tensors are split over
as many files as needed (three), bit for bit; ``--half`` stores float16 instead (two files, but colours
of the astronaut's head then move by up to 0.04). ``unpack`` loads the result to check it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MODEL_FILE, CONFIG_FILE = "model.safetensors", "panolam.json"
PIECE = "model-{:02d}.safetensors"


def train(args: argparse.Namespace) -> None:
    from panolam.config import get_config
    from panolam.train.loop import Trainer

    t0 = time.perf_counter()
    cfg = get_config(args.config, args.overrides)
    trainer = Trainer(cfg, args.data[0] if len(args.data) == 1 else args.data, args.out, progress=False)
    budget = 60 * args.minutes - (time.perf_counter() - t0)  # set-up counts against the budget
    tic = time.perf_counter()
    # First steps: allocations, kernel selection, data workers; then the timed ones. Neither call ends with a
    # checkpoint (its save would count as training time and shorten the planned schedule).
    trainer.fit(stop_after=args.warm_steps, save_at_end=False)
    tic2 = time.perf_counter()
    trainer.fit(stop_after=args.probe_steps, save_at_end=False)
    per_step = (time.perf_counter() - tic2) / args.probe_steps
    left = budget - (time.perf_counter() - tic) - args.margin_s
    total = trainer.step + max(1, int(left / per_step))
    print(f"gpu_train: {per_step:.3f} s/step (batch {cfg.train.batch_size}, {cfg.data.views_per_step} views, "
          f"{cfg.train.render_size}² renders); planning {total} steps in {left:.0f} s", flush=True)
    trainer.set_total_steps(total)
    terms = trainer.fit(time_limit_s=max(1.0, left + args.margin_s / 2))
    print(f"gpu_train: stopped at step {trainer.step} of {total} after {time.perf_counter() - t0:.0f} s; "
          + ", ".join(f"{k}={v:.4f}" for k, v in sorted(terms.items())), flush=True)


def pack(model_dir: Path, out_dir: Path, max_mib: float = 15.0, half: bool = False) -> list[Path]:
    """Pieces of ``model_dir``'s weights (float16 with ``half``), each at most ``max_mib`` MiB, plus its panolam.json."""
    state = load_file(str(model_dir / MODEL_FILE))
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = max_mib * 2**20
    pieces: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state):
        t = state[name].half() if half and state[name].is_floating_point() else state[name]
        n = t.numel() * t.element_size()
        if n > limit:
            raise ValueError(f"tensor {name} alone is {n / 2**20:.1f} MiB, over the {max_mib} MiB piece limit")
        if size + n > limit and pieces[-1]:
            pieces.append({})
            size = 0
        pieces[-1][name] = t.contiguous()
        size += n
    paths = []
    for i, piece in enumerate(pieces):
        paths.append(out_dir / PIECE.format(i))
        save_file(piece, str(paths[-1]), metadata={"pieces": str(len(pieces))})
    shutil.copyfile(model_dir / CONFIG_FILE, out_dir / CONFIG_FILE)
    return paths


def unpack(pack_dir: Path, model_dir: Path) -> Path:
    """The pieces of ``pack_dir`` as one float32 model directory (checked by loading it)."""
    from panolam.model.checkpoint import load_model

    paths = sorted(pack_dir.glob("model-*.safetensors"))
    if not paths:
        raise SystemExit(f"{pack_dir}: no model-NN.safetensors pieces (made by `gpu_train.py pack`)")
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for p in paths:
        with safe_open(str(p), framework="pt") as f:  # header and tensors from one open
            expected = (f.metadata() or {}).get("pieces")
            if expected is not None and int(expected) != len(paths):
                raise SystemExit(f"{pack_dir}: {len(paths)} pieces found, {p.name} says there are {expected}")
            for k in f.keys():
                v = f.get_tensor(k)
                state[k] = v.float() if v.is_floating_point() else v
    model_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(model_dir / MODEL_FILE))
    shutil.copyfile(pack_dir / CONFIG_FILE, model_dir / CONFIG_FILE)
    load_model(model_dir, device="cpu")  # fails loudly on a missing or misshapen tensor
    return model_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train for a wall-clock budget, the schedule fitted to it")
    t.add_argument("--data", action="append", required=True, metavar="DIR")
    t.add_argument("--out", required=True)
    t.add_argument("--minutes", type=float, required=True, help="wall-clock budget, set-up included")
    t.add_argument("--config", default="default")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    t.add_argument("--warm-steps", type=int, default=5)
    t.add_argument("--probe-steps", type=int, default=10)
    t.add_argument("--margin-s", type=float, default=20.0, help="seconds kept for the final checkpoint")
    k = sub.add_parser("pack", help="model directory -> pieces of at most --max-mib")
    k.add_argument("model_dir", type=Path)
    k.add_argument("out_dir", type=Path)
    k.add_argument("--max-mib", type=float, default=15.0)
    k.add_argument("--half", action="store_true", help="store float16 (half the size, not exact)")
    u = sub.add_parser("unpack", help="pieces -> float32 model directory")
    u.add_argument("pack_dir", type=Path)
    u.add_argument("model_dir", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "train":
        if args.minutes <= 0 or args.warm_steps < 1 or args.probe_steps < 1:
            p.error("--minutes must be positive and --warm-steps/--probe-steps at least 1")
        train(args)
    elif args.cmd == "pack":
        for path in pack(args.model_dir, args.out_dir, args.max_mib, args.half):
            print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
    else:
        print(unpack(args.pack_dir, args.model_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
