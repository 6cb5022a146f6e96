"""Where a detection training step's time goes on this CPU: ``torch.profiler`` over steps of the bundled
demo (``botnet detect train``: Mask R-CNN on a botnet_mini FPN, the "small" recipe, generated shapes at
128-176 px, 4 images a step, float32, AdamW), by operator (self time, forward and backward) and by module
(forward only: the backward's operators carry their own names, ``...Backward0``).

On an AVX-512 CPU, ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` holds PyTorch's and oneDNN's kernels
to AVX2, as on a CPU without AVX-512.

Usage: python benchmarks/detection_profile.py [--steps 20] [--top 25] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch
from torch.autograd.profiler import record_function

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from botnet.data.coco import CocoDetection  # noqa: E402
from botnet.data.shapes import ShapesSpec, write_shapes_dataset  # noqa: E402
from botnet.tasks.detection import DetectConfig, _collate, _targets, build_detector, train_transforms  # noqa: E402

# The detector's parts a step runs through, in order (torchvision's attribute names).
MODULES = ("transform", "backbone.body", "backbone.fpn", "rpn", "roi_heads.box_roi_pool", "roi_heads.box_head",
           "roi_heads.box_predictor", "roi_heads.mask_roi_pool", "roi_heads.mask_head", "roi_heads.mask_predictor")  # fmt: skip


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor()
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags)


def label_modules(model: torch.nn.Module) -> None:
    """Each of MODULES' forward as a named range in the profile."""
    for name in MODULES:
        module = model.get_submodule(name)
        ranges: list = []

        def enter(_module, _inputs, name=name, ranges=ranges):
            ranges.append(record_function(f"module::{name}").__enter__())

        def leave(_module, _inputs, _output, ranges=ranges):
            ranges.pop().__exit__(None, None, None)

        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.manual_seed(0)
    root = tempfile.mkdtemp(prefix="botnet-profile-")
    config = DetectConfig(output_dir=os.path.join(root, "run")).resolve(1)
    write_shapes_dataset(os.path.join(root, "data"), ShapesSpec(train_images=4 * (args.steps + args.warmup), val_images=4))
    data = os.path.join(root, "data", "train")
    dataset = CocoDetection(os.path.join(data, "images"), os.path.join(data, "annotations.json"),
                            transforms=train_transforms(config), with_masks=True, mask_crops=True)  # fmt: skip
    model = build_detector(config.detector_settings(), len(dataset.category_ids) + 1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    label_modules(model)
    batches = [_collate([dataset[i] for i in range(k, k + config.batch_size)]) for k in range(0, len(dataset), config.batch_size)]

    def step(batch) -> None:
        images, targets = batch
        with record_function("step::forward"):
            losses = model(list(images), _targets(targets, torch.device("cpu"), True))
        with record_function("step::backward"):
            sum(losses.values()).backward()
        with record_function("step::optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    for batch in batches[: args.warmup]:
        step(batch)
    started = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for batch in batches[args.warmup :]:
            step(batch)
    seconds = (time.perf_counter() - started) / args.steps
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6 / args.steps
    ops = sorted((e for e in events if not e.key.startswith(("module::", "step::"))), key=lambda e: -e.self_cpu_time_total)
    result = dict(
        cpu=cpu_flags(), threads=torch.get_num_threads(), torch=torch.__version__,
        kernels=os.environ.get("ATEN_CPU_CAPABILITY", "default"), steps=args.steps, seconds_per_step=round(seconds, 4),
        ranges={e.key: round(e.cpu_time_total / 1e6 / args.steps, 4) for e in events if e.key.startswith(("module::", "step::"))},
        operators=[dict(op=e.key, seconds=round(e.self_cpu_time_total / 1e6 / args.steps, 4),
                        share=round(e.self_cpu_time_total / 1e6 / args.steps / total, 4), calls=e.count // args.steps)
                   for e in ops[: args.top]],
    )  # fmt: skip
    print(f"{result['cpu']} ({result['kernels']} kernels), {result['threads']} threads: {seconds:.3f} s a step")
    for key, value in sorted(result["ranges"].items(), key=lambda kv: -kv[1]):
        print(f"  {key:40s} {value:.4f} s")
    for row in result["operators"]:
        print(f"  {row['op']:55s} {row['seconds']:.4f} s  {100 * row['share']:5.1f}%  x{row['calls']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
