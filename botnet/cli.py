"""The ``botnet`` command (also ``python -m botnet``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from .errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    BotnetError,
    ConfigError,
    describe,
    first_line,
    from_worker,
    one_line,
)
from .numerics import flushed_denormals
from .training.settings import cli_labels

__all__ = ["main"]


def _cmd_list(args: argparse.Namespace) -> int:
    from .models import get_model_entry, list_models, list_pretrained

    names = list_pretrained() if args.pretrained else list_models()
    for name in (n for n in names if args.pattern in n):
        entry = get_model_entry(name)
        weights = f"  [ImageNet weights: {entry.pretrained.hub_id}, top-1 {entry.pretrained.top1}%]" if entry.pretrained else ""
        print(f"{name:<20} {entry.img_size:>4}px  {entry.description}{weights}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .models.convert import convert_weights

    meta = convert_weights(args.file or True, args.model, args.output)
    print(
        f"wrote {args.output}: {meta['model']} at {meta['img_size']}px, {meta['num_classes']} classes ({meta['dataset']}), "
        f"{meta.get('interpolation', 'bilinear')} resize, crop fraction {meta.get('crop_fraction', 0.875)}; "
        f"use it with botnet predict/eval --checkpoint, or botnet train --pretrained"
    )
    return 0


_LARGEST_INFO_SIZE = 16384


def _cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .models import create_model, get_model_entry, summarize

    entry = get_model_entry(args.model)
    img_size = tuple((args.img_size * 2)[:2]) if args.img_size else (entry.img_size, entry.img_size)
    with torch.device("meta"):  # shapes and FLOPs without allocating a byte: any size answers at once
        model = create_model(args.model, num_classes=args.num_classes)
    smallest = model.min_input_size
    if not smallest <= min(img_size) <= max(img_size) <= _LARGEST_INFO_SIZE:
        raise ConfigError(
            f"--img-size {' '.join(map(str, img_size))} is outside what {args.model} takes here: at least "
            f"{smallest} (it downsamples by {smallest}) and at most {_LARGEST_INFO_SIZE}"
        )
    summary = summarize(model, img_size)
    if args.json:
        print(
            json.dumps(
                dict(
                    model=args.model,
                    img_size=list(summary.img_size),
                    params=summary.params,
                    flops=summary.flops,
                    macs=summary.macs,
                    stages={name: list(shape) for name, shape in summary.stage_shapes},
                    paper_params_m=entry.paper_params_m,
                    paper_compute=entry.paper_compute,
                ),
                indent=2,
            )
        )
        return 0
    height, width = summary.img_size
    print(f"{args.model}: {entry.description}")
    print(f"  input        1 x {model.in_chans} x {height} x {width}")
    print(f"  parameters   {summary.params:,} ({summary.params / 1e6:.2f}M)")
    print(
        f"  compute      {summary.flops / 1e9:.2f} GFLOPs = {summary.macs / 1e9:.2f} G multiply-adds "
        f"(forward, one image; torch.utils.flop_counter, 2 FLOPs per multiply-add)"
    )
    if entry.paper_params_m or entry.paper_compute:
        paper = ", ".join(
            p for p in (entry.paper_params_m and f"{entry.paper_params_m}M params", entry.paper_compute) if p
        )
        print(f"  paper        {paper}")
    print("  stage outputs:")
    for stage, (name, shape) in zip(("c1 (stem)", "c2", "c3", "c4", "c5"), summary.stage_shapes):
        print(f"    {stage:<10} {name:<10} {' x '.join(map(str, shape))}")
    return 0


def _start_or_resume(args: argparse.Namespace, config_class, train) -> int:
    """A new run from the given flags, or ``--resume`` of a saved one (which takes no setting flags but
    ``--epochs``, to extend it)."""
    from .training.settings import given_settings

    given = given_settings(args, config_class)
    if args.resume:
        epochs = given.pop("epochs", None)
        if given:
            names = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ConfigError(f"--resume continues a run with its saved settings (only --epochs may change); drop {names}")
        train(resume=args.resume, epochs=epochs)
    else:
        train(config_class(**given))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .tasks import TrainConfig, train

    return _start_or_resume(args, TrainConfig, train)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .tasks import evaluate_checkpoint

    result, meta, source = evaluate_checkpoint(
        args.checkpoint, args.data, split=args.split, batch_size=args.batch_size, workers=args.workers
    )
    classes = meta["classes"]
    per_class = dict(zip(classes, (round(a, 4) for a in result.per_class_top1)))
    if args.json:
        report = dict(
            checkpoint=args.checkpoint, data=source, split=args.split, images=result.count, top1=round(result.top1, 4),
            top5=round(result.top5, 4), loss=round(result.loss, 6), per_class_top1=per_class,
            confusion=result.confusion.tolist(), classes=classes,
        )  # fmt: skip
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.checkpoint} on {source} ({result.count} images)")
    print(f"  top-1 {result.top1:.2f}%   top-5 {result.top5:.2f}%   loss {result.loss:.4f}")
    width = max(len(c) for c in classes)
    print("  per-class top-1:")
    for name, accuracy in per_class.items():
        print(f"    {name:<{width}}  {accuracy:6.2f}%")
    if len(classes) <= 30:
        print("  confusion matrix (rows true, columns predicted):")
        cell = max(len(str(int(result.confusion.max()))), 3)
        print("    " + " " * width + " " + " ".join(f"{c[:cell]:>{cell}}" for c in classes))
        for name, row in zip(classes, result.confusion.tolist()):
            print(f"    {name:<{width}} " + " ".join(f"{v:>{cell}}" for v in row))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .tasks import predict

    results = predict(args.checkpoint, args.images, top_k=args.top_k)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for item in results:
        ranked = ", ".join(f"{p['label']} {p['probability'] * 100:.1f}%" for p in item["predictions"])
        print(f"{item['image']}: {ranked}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_checkpoint

    result = export_checkpoint(
        args.checkpoint, format=args.format, output=args.output, opset=args.opset, static=args.static,
        check=args.check,
    )  # fmt: skip
    checked = (
        f"; checked in onnxruntime against PyTorch: max relative error {result['max_relative_error']:.1e}"
        if result["max_relative_error"] is not None
        else ("; checked against PyTorch" if args.format == "pt2" else "; not checked (--no-check)")
    )
    print(f"wrote {result['path']}: input {result['metadata']['input']}; outputs {', '.join(result['outputs'])}{checked}")
    if "note" in result["metadata"]:
        print(f"note: {result['metadata']['note']}")
    return 0


def _point(text: str) -> tuple[float, float]:
    try:
        y, x = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a query point is Y,X as fractions of the image, e.g. 0.5,0.5; got {text!r}")
    return y, x


def _cmd_attention(args: argparse.Namespace) -> int:
    from .explain import explain_checkpoint

    result = explain_checkpoint(args.checkpoint, args.image, args.output, args.points)
    layers = ", ".join(f"{name} ({h}x{w})" for name, (h, w) in result["layers"].items())
    print(f"wrote {result['maps']}: attention of {len(result['points'])} query points, per head, in {layers}")
    if result["position"]:
        print(f"wrote {result['position']}: each head's relative position logits by row and column offset")
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    """`botnet ablate` and `botnet detect ablate`: the task's config from the flags, fitted once for every run."""
    from .tasks import TASKS
    from .tasks.ablate import fit_study, run_study, study_folder
    from .training.settings import check_time_budget, given_settings

    check_time_budget(args.time_budget)
    config_class = TASKS[args.task].config_class
    base = fit_study(config_class(**given_settings(args, config_class)))
    output_dir = args.output_dir or study_folder(base, args.study)
    _print_study(run_study(base, args.study, args.seeds, output_dir), output_dir)
    return 0


def _print_study(rows: list[dict], output_dir: str) -> None:
    width = max(len(r["variant"]) for r in rows)
    for r in rows:
        metrics = "  ".join(
            f"{key[: -len('_mean')].replace('_', ' ')} {r[key]:6.2f} +- {r[key[:-5] + '_std']:.2f} ({r[key[:-5] + '_runs']})"
            for key in r
            if key.endswith("_mean")
        )
        print(
            f"{r['variant']:<{width}}  {metrics}  {r['params'] / 1e6:.2f}M params  {r['gflops']:.3f} GFLOPs  "
            f"{r['train_images_per_second']:.0f} img/s"
        )
    print(f"wrote {os.path.join(output_dir, 'study.csv')} and study.png; run the same command again to add nothing "
          f"but what is missing (a stopped study continues)")  # fmt: skip


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from . import bench

    limit = 4 * (os.cpu_count() or 1)
    if args.threads is not None and not 1 <= args.threads <= limit:
        raise ConfigError(f"--threads must be between 1 and {limit} on this machine, got {args.threads}")
    if args.repeats < 1 or args.warmup < 0:
        raise ConfigError(f"--repeats must be at least 1 and --warmup at least 0, got {args.repeats} and {args.warmup}")
    if args.plot and "resolution" not in args.suite:
        raise ConfigError("--plot draws the resolution suite: add --suite resolution")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    settings = bench.BenchSettings(
        device=args.device, channels_last=args.channels_last, bf16=args.bf16, compile=args.compile,
        repeats=args.repeats, warmup=args.warmup, memory=args.memory,
    )  # fmt: skip
    print(f"# {bench.machine_description(settings)}; settings {settings}")
    cases = [case for suite in args.suite for case in bench.SUITES[suite]()]
    results = bench.run_suite(cases, settings)
    bench.write_outputs(results, settings, args.json, args.csv)
    if args.plot:
        bench.plot_resolution(results, args.plot, bench.machine_description(settings))
    return 0


def _cmd_detect_train(args: argparse.Namespace) -> int:
    from .tasks.detection import DetectConfig, train_detector

    return _start_or_resume(args, DetectConfig, train_detector)


def _cmd_detect_eval(args: argparse.Namespace) -> int:
    from .detection import COCO_STATS
    from .detection.metrics import per_class_table
    from .tasks.detection import evaluate_detector_checkpoint, write_evaluation_plots

    evaluation, meta, dataset = evaluate_detector_checkpoint(
        args.checkpoint, args.images, args.annotations, data=args.data, data_format=args.data_format, split=args.split,
        batch_size=args.batch_size, skip_bad=args.skip_bad,
    )  # fmt: skip
    metrics = evaluation.metrics
    plots = write_evaluation_plots(evaluation, args.output_dir) if args.output_dir else []
    if args.json:
        report = dict(
            checkpoint=args.checkpoint, annotations=dataset.ann_file, images=len(dataset), **metrics,
            **evaluation.as_dict(), plots=plots,
        )  # fmt: skip
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.checkpoint} on {dataset.ann_file} ({len(dataset)} images)")
    if dataset.skipped.total():
        print(f"  left out: {dataset.skipped.summary()}")
    print("  " + " " * 5 + "".join(f"{name:>8}" for name in COCO_STATS))
    for iou_type in ("bbox", "segm"):
        if f"{iou_type}_AP" in metrics:
            values = [metrics[f"{iou_type}_{name}"] for name in COCO_STATS]
            print(f"  {iou_type:<5}" + "".join(f"{v:8.2f}" if v >= 0 else f"{'-':>8}" for v in values))
    print("\n".join("  " + line for line in ["per class:", *per_class_table(evaluation.per_class)]))
    if plots:
        print(f"  precision-recall curves and confusion matrix: {', '.join(plots)}")
    return 0


def _cmd_detect_predict(args: argparse.Namespace) -> int:
    from .tasks.detection import predict_detections

    results = predict_detections(
        args.checkpoint, args.images, output_dir=args.output_dir, score_threshold=args.score_threshold
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for item in results:
        found = ", ".join(f"{d['label']} {d['score']:.2f}" for d in item["detections"]) or "nothing"
        drawing = f" -> {item['drawing']}" if "drawing" in item else ""
        print(f"{item['image']}: {found}{drawing}")
    return 0


def _cmd_detect_make_data(args: argparse.Namespace) -> int:
    from .data.shapes import ShapesSpec, write_shapes_dataset

    counts = {k: v for k, v in (("train_images", args.train_images), ("val_images", args.val_images)) if v is not None}
    spec = dataclasses.replace(ShapesSpec(seed=args.seed), **counts)
    if spec.train_images < 1 or spec.val_images < 1:
        raise ConfigError("--train-images and --val-images must be at least 1")
    if os.path.exists(os.path.join(args.root, "train", "annotations.json")):
        raise ConfigError(f"{args.root} already holds a dataset; choose another folder")
    splits = write_shapes_dataset(args.root, spec)
    for split, (image_dir, ann_file) in splits.items():
        print(f"{split}: {image_dir} + {ann_file}")
    return 0


def _cmd_detect_convert(args: argparse.Namespace) -> int:
    from .data.formats import find_layout, write_coco

    splits = find_layout(args.root, data_format=args.data_format)
    for line in splits.report:
        print(line)
    for split in splits:  # every check a training run makes, before anything is written
        split.dataset(with_masks=False, skip_bad=False)
    write_coco(splits, args.output)
    masks = "with masks" if splits.has_masks() else "boxes only: train it with --detector fasterrcnn"
    names = ",".join(split.name for split in splits)
    print(f"wrote {args.output}/{{{names}}}/annotations.json and images/ from the {splits.format} data in "
          f"{args.root} ({len(splits.classes)} classes, {masks})")  # fmt: skip
    return 0


def _cmd_make_data(args: argparse.Namespace) -> int:
    from .data.shapes import PhotoSpec, write_shapes_folder

    if args.train_per_class < 1 or args.val_per_class < 1:
        raise ConfigError("--train-per-class and --val-per-class must be at least 1")
    if not 8 <= args.size <= 1024:
        raise ConfigError(f"--size must be from 8 to 1024 pixels, got {args.size}")
    if os.path.exists(os.path.join(args.root, "train")):
        raise ConfigError(f"{args.root} already holds a train/ folder; choose another folder")
    spec = PhotoSpec(args.train_per_class, args.val_per_class, args.size, args.seed)
    counts = write_shapes_folder(args.root, spec)
    print(f"wrote {counts['train']} training and {counts['val']} held-out images to {args.root}; "
          f"train with `botnet train --data {args.root}`")  # fmt: skip
    return 0


def _add_detect_parser(commands) -> None:
    from .data.formats import FORMATS
    from .tasks.detection import DETECT_RECIPES, DetectConfig
    from .training.settings import add_flags

    detect = commands.add_parser(
        "detect",
        help="object detection and instance segmentation (Faster / Mask R-CNN with a BoTNet FPN backbone)",
        description="Train, evaluate and run torchvision Faster / Mask R-CNN with BoTNet FPN backbones on "
        "COCO-format data (an image folder and an instances JSON per split).",
    )
    sub = detect.add_subparsers(dest="detect_command", required=True, metavar="SUBCOMMAND")
    _with_debug_flag(sub)

    p = sub.add_parser(
        "train",
        help="train a detector (default: Mask R-CNN, mini BoTNet, on generated shapes)",
        description="Train a detector. Without data a synthetic shapes dataset is generated into the run folder. "
        "Unset options take the recipe's values.",
    )
    add_flags(p, DetectConfig, DETECT_RECIPES)
    p.add_argument("--resume", metavar="RUN/last.pt", help="continue an interrupted run")
    p.set_defaults(func=_cmd_detect_train)

    p = sub.add_parser("eval", help="COCO box and mask AP of a trained detector, overall and per class")
    p.add_argument("--checkpoint", required=True, help="RUN/model.safetensors or RUN/last.pt")
    p.add_argument("--images", help="image folder (default: the run's held-out split)")
    p.add_argument("--annotations", help="instances JSON (default: the run's held-out split)")
    p.add_argument("--data", metavar="ROOT", help="instead: a dataset in any layout `detect train` reads")
    p.add_argument("--data-format", choices=FORMATS, help="the labels to read where ROOT holds several formats")
    p.add_argument("--split", choices=("val", "test"), default="val",
                   help="the split to score: val (the run's held-out images) or the export's test split")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--skip-bad", action="store_true", help="leave out bad images and annotations (counted)")
    p.add_argument("--output-dir", help="write pr_curves.png (precision-recall per class) and confusion.png there")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(func=_cmd_detect_eval)

    p = sub.add_parser("predict", help="detect objects in images; draw them with --output-dir")
    p.add_argument("--checkpoint", required=True, help="RUN/model.safetensors or RUN/last.pt")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--output-dir", help="write IMAGE.png with masks, boxes, names and scores drawn on")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(func=_cmd_detect_predict)

    p = sub.add_parser(
        "ablate",
        help="the paper's ablations on a detector's backbone, several seeds each; study.csv and study.png",
        description="Like `botnet ablate`, for detection: each variant of the backbone trained with --seeds seeds "
        "as an ordinary detection run (box and mask AP). Without --data, on the synthetic shapes.",
    )
    _add_study_flags(p, "runs/ablate-detect-DATA-BACKBONE-STUDY")
    add_flags(p, DetectConfig, DETECT_RECIPES, only=("data", "data_format", "detector", "backbone", "recipe"))
    p.set_defaults(func=_cmd_ablate, task="detection")

    p = sub.add_parser(
        "convert",
        help="write Pascal VOC, YOLO or LabelMe annotations as COCO files (checked first)",
        description="Read DIR as `detect train --data DIR` does (COCO, Pascal VOC XML, YOLO txt, LabelMe JSON, in "
        "any folder layout; a val split held out where there is none), check it as a training run would, and write "
        "OUT/SPLIT/annotations.json with OUT/SPLIT/images/ (links to the images) for train, val and test.",
    )
    p.add_argument("root", metavar="DIR")
    p.add_argument("--data-format", choices=FORMATS, help="the labels to read where DIR holds several formats")
    p.add_argument("--to", choices=["coco"], default="coco", help="the format to write (coco)")
    p.add_argument("output", metavar="OUT")
    p.set_defaults(func=_cmd_detect_convert)

    p = sub.add_parser("make-data", help="write the synthetic shapes dataset (COCO format) to a folder")
    p.add_argument("root", metavar="DIR")
    p.add_argument("--train-images", type=int, help="default: as `botnet detect train` generates")
    p.add_argument("--val-images", type=int, help="default: as `botnet detect train` generates")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_detect_make_data)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error (argparse prints the whole usage first)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


class _HeightWidth(argparse.Action):
    """``--img-size H [W]``: one or two numbers."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if len(values) > 2:
            parser.error(f"{option_string} takes H or H W, got {len(values)} numbers")
        setattr(namespace, self.dest, values)


def _with_debug_flag(subparsers) -> None:
    """Let ``--debug`` follow any (sub)command too, not only ``botnet`` itself."""
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    add_parser = subparsers.add_parser

    def add_parser_with_debug(*args, **kwargs):
        kwargs["parents"] = [*kwargs.get("parents", []), debug]
        return add_parser(*args, **kwargs)

    subparsers.add_parser = add_parser_with_debug


def _add_study_flags(p: argparse.ArgumentParser, default_dir: str) -> None:
    """The flags `botnet ablate` and `botnet detect ablate` share."""
    from .tasks.ablate import STUDIES

    p.add_argument("--study", required=True, choices=list(STUDIES))
    p.add_argument("--seeds", type=int, default=3, help="runs per variant, seeds 0..N-1 (default 3)")
    p.add_argument("--epochs", type=int)
    p.add_argument(
        "--time-budget", type=float, metavar="MINUTES",
        help="instead of --epochs: the whole study's time, shared equally by its runs (each variant plans its "
        "epochs on its first seed; its other seeds train as many)",
    )  # fmt: skip
    p.add_argument("--output-dir", help=f"the study folder (default {default_dir})")


def build_parser() -> argparse.ArgumentParser:
    from .tasks import RECIPES, TrainConfig
    from .training.settings import add_flags

    parser = _Parser(
        prog="botnet",
        description="Bottleneck Transformers (BoTNet) for PyTorch.",
        epilog="Exit status: 0 done, 1 a run that failed mid-way (its last.pt resumes it) or an internal error, "
        "2 bad flags, data or files (nothing was trained), 130 interrupted by Ctrl-C (once training has started, "
        "after saving a resumable last.pt).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors (in any position)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _with_debug_flag(commands)

    p = commands.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="", help="only names containing this")
    p.add_argument("--pretrained", action="store_true", help="only models with published ImageNet weights")
    p.set_defaults(func=_cmd_list)

    p = commands.add_parser(
        "convert",
        help="a timm checkpoint to a botnet .safetensors with its metadata (classes, normalisation)",
        description="Convert the weights of a registered model (timm's checkpoint: .safetensors, .pth or .bin) "
        "into botnet's format. Without FILE, the model's published weights are taken from the Hugging Face Hub "
        "(needs huggingface_hub; its cache works offline).",
    )
    p.add_argument("file", nargs="?", metavar="FILE", help="the weights file (default: the published weights)")
    p.add_argument("--model", required=True, help="the model the weights are for (`botnet list --pretrained`)")
    p.add_argument("--output", required=True, metavar="OUT.safetensors")
    p.set_defaults(func=_cmd_convert)

    p = commands.add_parser("info", help="parameters, FLOPs and stage output shapes of a model")
    p.add_argument("model", help="a name from `botnet list`")
    p.add_argument(
        "--img-size", type=int, nargs="+", action=_HeightWidth, metavar=("H", "W"),
        help="input height [and width]; default the model's",
    )  # fmt: skip
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(func=_cmd_info)

    p = commands.add_parser(
        "train",
        help="train an image classifier (default: a tiny BoTNet on the bundled digits)",
        description="Train a classifier. Unset options take the recipe's values; without --data the bundled "
        "digits are used, without --model the tiny CPU-sized BoTNet. Runs under torchrun for several processes.",
    )
    add_flags(p, TrainConfig, RECIPES)
    p.add_argument("--resume", metavar="RUN/last.pt", help="continue an interrupted run")
    p.set_defaults(func=_cmd_train)

    p = commands.add_parser("eval", help="top-1, top-5, per-class accuracy and confusion matrix of a trained model")
    p.add_argument("--checkpoint", required=True, help="RUN/model.safetensors or RUN/last.pt")
    p.add_argument(
        "--data",
        help="image folder (DIR in a layout `botnet train` reads, or DIR/val with CLASS/* scored whole), or 'digits'; "
        "default the run's, on the images it held out",
    )
    p.add_argument(
        "--split", choices=("val", "test"), default="val",
        help="val (default): the val split, or the images the run held out; test: the data's test/ folder",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(func=_cmd_eval)

    p = commands.add_parser(
        "bench", help="speed and memory side by side: MHSA and the pretrained models vs timm, BoTNet-50 vs ResNet-50"
    )
    suites = ["mhsa", "models", "pretrained", "resolution", "large", "gpu", "gpu-mhsa", "deploy"]  # bench.SUITES, named here to keep startup light
    p.add_argument("--suite", nargs="+", choices=suites, default=["mhsa", "models"])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timed calls per case (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile every case")
    p.add_argument("--memory", action="store_true", help="also measure peak memory (a fresh process per case)")
    p.add_argument("--json", help="write results as JSON")
    p.add_argument("--csv", help="write results as CSV")
    p.add_argument("--plot", help="PNG of throughput against resolution (needs --suite resolution)")
    p.set_defaults(func=_cmd_bench)

    p = commands.add_parser(
        "make-data",
        help="write a generated photo-like image folder (DIR/train/CLASS, DIR/val/CLASS) for `botnet train --data`",
        description="Colour images of six shape classes on textured, cluttered backgrounds with smaller shapes "
        "of other classes around them, shrunk from 4x (soft edges, as in a downscaled photo); colour says "
        "nothing about the class. The same settings always give the same files.",
    )
    p.add_argument("root", metavar="DIR")
    p.add_argument("--train-per-class", type=int, default=700)
    p.add_argument("--val-per-class", type=int, default=150)
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_make_data)

    _add_detect_parser(commands)

    p = commands.add_parser(
        "ablate",
        help="train every variant of one of the paper's ablations with several seeds; study.csv and study.png",
        description="Position encodings (relative, relative_only, absolute, none, the other scale_position), "
        "placement of the BoT blocks (c5, c4 + c5, none = the ResNet), heads (1, 2, 4, 8) or the baseline (BoTNet "
        "against its ResNet), each variant trained with --seeds seeds as an ordinary run folder. Run the same "
        "command again to continue a stopped study.",
    )
    _add_study_flags(p, "runs/ablate-DATA-MODEL-STUDY")
    add_flags(p, TrainConfig, RECIPES, only=("data", "model", "img_size", "batch_size", "recipe"))
    p.set_defaults(func=_cmd_ablate, task="classification")

    p = commands.add_parser(
        "export",
        help="a trained model as ONNX or a torch.export program, at any input size",
        description="Export a trained classifier (or a detector's BoTNet + FPN) with symbolic batch, height and "
        "width. The file is checked against PyTorch at two sizes (onnxruntime for ONNX) before it is written.",
    )
    p.add_argument("--checkpoint", required=True, help="RUN/model.safetensors or RUN/last.pt (a classifier or a detector)")
    p.add_argument("--format", choices=("onnx", "pt2"), default="onnx", help="onnx (default) or pt2 (torch.export.save)")
    p.add_argument("--output", help="the file to write (default: the checkpoint's path with .onnx or .pt2)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: botnet.export.DEFAULT_OPSET, 18)")
    p.add_argument("--static", type=int, nargs=2, metavar=("H", "W"), help="fix the height and width (batch stays free)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="run the ONNX file in onnxruntime beside PyTorch before writing it (default: on)")  # fmt: skip
    p.set_defaults(func=_cmd_export)

    p = commands.add_parser(
        "attention",
        help="draw each BoT block's attention maps and relative position logits for one image",
        description="Attention of a few query points over the image, per head and BoT block (maps at the size "
        "each block attends at), and each head's relative position logits by offset, from a trained classifier "
        "or a detector's backbone.",
    )
    p.add_argument("--checkpoint", required=True, help="RUN/model.safetensors or RUN/last.pt")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--points", type=_point, nargs="+", metavar="Y,X",
                   help="query points as fractions of the image height and width (default: 0.5,0.5 0.25,0.25)")  # fmt: skip
    p.add_argument("--output", default="attention.png", help="the picture (default attention.png); the position "
                   "logits go to the same name with _position")  # fmt: skip
    p.set_defaults(func=_cmd_attention)

    p = commands.add_parser("predict", help="top-k classes of images")
    p.add_argument("--checkpoint", required=True, help="RUN/model.safetensors or RUN/last.pt")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(func=_cmd_predict)
    return parser


def _command_name(args: argparse.Namespace) -> str:
    sub = getattr(args, "detect_command", None)
    return f"botnet {args.command}" + (f" {sub}" if sub else "")


def _tolerate_unencodable_output() -> None:
    """File names need not be valid UTF-8 (or the terminal's encoding); print them escaped, never crash on them."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a closed or detached stream
                pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (see the parser's epilog). Expected problems print one line;
    anything else prints one line that asks for ``--debug``, which shows the traceback."""
    with flushed_denormals():  # before PyTorch's threads start, so they all flush
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    _tolerate_unencodable_output()
    logging.raiseExceptions = False  # a log file on a full disk: the run's own error says so, once
    parser = build_parser()
    args = parser.parse_args(argv)
    command = _command_name(args)
    try:
        with cli_labels():  # errors name settings by their flags
            return args.func(args)
    except KeyboardInterrupt as error:
        if args.debug:
            traceback.print_exc()
        print(f"{command}: {one_line(str(error)) or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our output went away (`botnet list | head -1`)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as error:
        if args.debug:
            traceback.print_exc()
        message = describe(error)
        if message is None:
            error = from_worker(error)  # a worker's error: its own message, not "Caught X in DataLoader worker"
            detail = one_line(first_line(error)[:300])
            name = type(error).__name__ if detail == type(error).__name__ else f"{type(error).__name__}: {detail}"
            print(
                f"{command}: internal error: {name} "
                f"(this is a bug: run with --debug for the traceback, and please report it)",
                file=sys.stderr,
            )
            return EXIT_FAILED
        print(f"{command}: error: {one_line(message)}", file=sys.stderr)
        return error.exit_code if isinstance(error, BotnetError) else EXIT_BAD_INPUT
