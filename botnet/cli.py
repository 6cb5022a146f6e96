"""The ``botnet`` command (also ``python -m botnet``)."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence

__all__ = ["main"]


def _cmd_list(args: argparse.Namespace) -> int:
    from .models import get_model_entry, list_models

    for name in list_models(args.pattern):
        entry = get_model_entry(name)
        print(f"{name:<16} {entry.img_size:>4}px  {entry.description}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .models import create_model, get_model_entry, summarize

    entry = get_model_entry(args.model)
    img_size = tuple((args.img_size * 2)[:2]) if args.img_size else (entry.img_size, entry.img_size)
    model = create_model(args.model, num_classes=args.num_classes)
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
    for name, shape in summary.stage_shapes:
        stage = {"act1": "c1 (stem)", "layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}[name]
        print(f"    {stage:<10} {name:<7} {' x '.join(map(str, shape))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="botnet", description="Bottleneck Transformers (BoTNet) for PyTorch.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="", help="only names containing this")
    p.set_defaults(func=_cmd_list)

    p = commands.add_parser("info", help="parameters, FLOPs and stage output shapes of a model")
    p.add_argument("model", help="a name from `botnet list`")
    p.add_argument(
        "--img-size", type=int, nargs="+", metavar=("H", "W"), help="input height [and width]; default the model's"
    )
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "img_size", None) is not None and len(args.img_size) > 2:
        parser.error(f"--img-size takes H or H W, got {len(args.img_size)} numbers")
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        if args.debug:
            traceback.print_exc()
        else:
            print(f"botnet {args.command}: error: {error} (run with --debug for the traceback)", file=sys.stderr)
        return 2
