"""``panolam data {synth,gan,convert-gan,label,info}``: make a multi-view head dataset (procedural or from a
3D GAN checkpoint), convert a GAN checkpoint, label a dataset, summarise it."""

from __future__ import annotations

import argparse
import json

from panolam.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="make, label and inspect multi-view head datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    s = dsub.add_parser("synth", help="generate (or resume) a procedural multi-view dataset")
    s.add_argument("--out", required=True, help="dataset directory")
    s.add_argument("--set", dest="camera_set", choices=("360", "front"), default="360", help="camera law (paper App. E)")
    s.add_argument("--subjects", type=int, required=True, help="training subjects")
    s.add_argument("--test-subjects", type=int, default=0, help="held-out subjects (disjoint seed range)")
    s.add_argument("--views", type=int, default=32)
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0, help="base seed of the training subjects")
    s.add_argument("--shard", default="0/1", metavar="I/N", help="this process writes shard group I of N")
    s.add_argument("--subjects-per-shard", type=int, default=64)
    s.add_argument("--generator", default="procedural", help="registered generator plug-in")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=run_synth)

    g = dsub.add_parser("gan", help="sample a multi-view dataset from a 3D GAN checkpoint you own (EG3D family)")
    g.add_argument("--generator", default="eg3d", help="GAN plug-in: eg3d, panohead, spherehead, an entry point name or module:Class")
    g.add_argument("--checkpoint", required=True, help="official .pkl (read without running its code) or a converted .safetensors")
    g.add_argument("--out", required=True, help="dataset directory")
    g.add_argument("--set", dest="camera_set", choices=("360", "front"), default="front", help="camera law (paper App. E)")
    g.add_argument("--subjects", type=int, required=True, help="training subjects")
    g.add_argument("--test-subjects", type=int, default=0, help="held-out subjects (disjoint seed range)")
    g.add_argument("--truncation", type=float, default=0.7, metavar="PSI", help="truncation psi toward w_avg (1 = none)")
    g.add_argument("--truncation-cutoff", type=int, default=None, help="truncate only the first N ws")
    g.add_argument("--views", type=int, default=32)
    g.add_argument("--size", type=int, default=512)
    g.add_argument("--render-resolution", type=int, default=None, help="volume-render resolution (default: the checkpoint's, else 128)")
    g.add_argument("--alpha-threshold", type=float, default=0.0, help="matte: alpha -> clamp((alpha-t)/(1-2t)); 0 keeps the soft alpha")
    g.add_argument("--teacher-planes", action=argparse.BooleanOptionalAction, default=None,
                   help="store each subject's planes in extras/teacher_planes (default: only for spherehead, the paper's teacher)")
    g.add_argument("--batch", type=int, default=4, help="views rendered at once")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    g.add_argument("--seed", type=int, default=0, help="base seed of the training subjects")
    g.add_argument("--shard", default="0/1", metavar="I/N", help="this process writes shard group I of N")
    g.add_argument("--subjects-per-shard", type=int, default=64)
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=run_gan)

    cg = dsub.add_parser("convert-gan", help="convert an official EG3D-family .pkl to safetensors (no code in it is run)")
    cg.add_argument("pkl", help="official training snapshot (.pkl)")
    cg.add_argument("-o", "--out", required=True, help="output .safetensors")
    cg.add_argument("--network", default="G_ema", help="which network of the snapshot (default G_ema)")
    cg.set_defaults(func=run_convert_gan)

    lab = dsub.add_parser("label", help="open the labelling web page (accept/reject subjects)")
    lab.add_argument("root", help="dataset directory")
    lab.add_argument("--port", type=int, default=7861)
    lab.add_argument("--host", default="127.0.0.1")
    lab.add_argument("--labeller", default="default", help="your name; decisions go to labels/<name>.json")
    lab.set_defaults(func=run_label)

    info = dsub.add_parser("info", help="print counts, splits and labels of a dataset")
    info.add_argument("root", help="dataset directory")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--verify", action="store_true", help="read every sample of every shard (slow) instead of only checking each tar's end")
    info.set_defaults(func=run_info)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def run_synth(args: argparse.Namespace) -> int:
    from panolam.data.generators import get_generator
    from panolam.data.synth import SynthSettings, generate_dataset

    if args.subjects < 0 or args.test_subjects < 0:
        raise UserError("--subjects and --test-subjects must be >= 0")
    i, n = _parse_shard(args.shard)
    from panolam.errors import check_output_dir

    check_output_dir(args.out, "--out")
    settings = SynthSettings(camera_set=args.camera_set, views=args.views, size=args.size, seed=args.seed, subjects_per_shard=args.subjects_per_shard)
    result = generate_dataset(args.out, get_generator(args.generator), settings, args.subjects, args.test_subjects, i, n, progress=not args.no_progress)
    print(f"{args.out}: wrote {result['written']} subjects, {result['skipped']} already done (shard group {i}/{n})")
    return 0


def run_gan(args: argparse.Namespace) -> int:
    from panolam.data.generators import get_generator
    from panolam.data.synth import SynthSettings, generate_dataset

    if args.subjects < 0 or args.test_subjects < 0:
        raise UserError("--subjects and --test-subjects must be >= 0")
    i, n = _parse_shard(args.shard)
    settings = SynthSettings(camera_set=args.camera_set, views=args.views, size=args.size, seed=args.seed, subjects_per_shard=args.subjects_per_shard)
    gen = get_generator(args.generator, checkpoint=args.checkpoint, truncation=args.truncation, truncation_cutoff=args.truncation_cutoff,
                        device=args.device, neural_rendering_resolution=args.render_resolution, alpha_threshold=args.alpha_threshold,
                        store_planes=args.teacher_planes, batch=args.batch)
    result = generate_dataset(args.out, gen, settings, args.subjects, args.test_subjects, i, n, progress=not args.no_progress)
    print(f"{args.out}: wrote {result['written']} subjects, {result['skipped']} already done (shard group {i}/{n})")
    return 0


def run_convert_gan(args: argparse.Namespace) -> int:
    from panolam.data.gan.pickle_io import UnsafePickleError, load_official_pickle, save_converted

    if not args.out.endswith(".safetensors"):
        raise UserError(f"-o {args.out!r}: the output must end in .safetensors")
    try:
        ckpt = load_official_pickle(args.pkl, args.network)
    except UnsafePickleError as e:
        raise UserError(str(e)) from None
    save_converted(ckpt, args.out)
    n = sum(v.numel() for v in ckpt.state_dict.values())
    print(f"{args.out}: {ckpt.class_name}, {len(ckpt.state_dict)} tensors ({n:,} values), constructor kwargs in the metadata")
    return 0


def run_label(args: argparse.Namespace) -> int:
    from panolam.data.label_app import launch

    launch(args.root, labeller=args.labeller, host=args.host, port=args.port)
    return 0


def run_info(args: argparse.Namespace) -> int:
    import sys

    from panolam.data.labels import read_labels
    from panolam.data.manifest import load_manifest
    from panolam.data.shards import tar_end_looks_complete, verify_shard

    m = load_manifest(args.root)
    damaged = []
    for shard in m.shards:
        path = m.shard_path(shard)
        problem = verify_shard(path, shard.subjects) if args.verify else (
            None if tar_end_looks_complete(path) else f"{path}: truncated (the tar does not end where a finished shard ends)")
        if problem:
            damaged.append(problem)
    labels = read_labels(args.root)
    counts = m.counts()
    label_counts = {split: {"accepted": 0, "rejected": 0, "unlabelled": 0} for split in counts}
    for split in counts:
        for s in m.subjects(split):
            key = {"accept": "accepted", "reject": "rejected"}.get(labels.get(s, ""), "unlabelled")
            label_counts[split][key] += 1
    h = m.header
    if args.json:
        print(json.dumps({"header": h, "counts": counts, "labels": label_counts, "shards": len(m.shards) - len(damaged),
                          "damaged": damaged, "verified": bool(args.verify)}, indent=1))
        return 1 if damaged else 0
    print(f"{m.root}: format v{h['format_version']}, generator {h['generator']}, camera set {h['camera_set']}, "
          f"{h['views']} views at {h['size']}x{h['size']}, {len(m.shards) - len(damaged)} complete shards"
          + (" (every sample read)" if args.verify else ""))
    for split, c in counts.items():
        lc = label_counts[split]
        planned = h.get("planned", {}).get(split, c)
        print(f"  {split}: {c}/{planned} subjects, {lc['accepted']} accepted, {lc['rejected']} rejected, {lc['unlabelled']} unlabelled")
    for problem in damaged:
        print(f"damaged shard: {problem}; delete it and its .json record and rerun `panolam data synth` with the same settings",
              file=sys.stderr)
    return 1 if damaged else 0
