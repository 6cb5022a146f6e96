"""Where a detection training step's time goes on this CPU: ``torch.profiler`` over steps of the bundled
demo (``botnet detect train``: Mask R-CNN on a botnet_mini FPN, the "small" recipe, generated shapes at
128-176 px, 4 images a step, float32, AdamW), by operator (self time, forward and backward) and by module
(forward only: the backward's operators carry their own names, ``...Backward0``).

With ``--compare`` it times whole steps of that detector with torchvision's ``MultiScaleRoIAlign`` and with
botnet's (``botnet.detection.roi_align``), and the two poolers alone (forward and backward) at the demo's
sizes and at 1024 px, interleaved round by round.

On an AVX-512 CPU, ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` holds PyTorch's and oneDNN's kernels
to AVX2, as on a CPU without AVX-512.

Usage: python benchmarks/detection_profile.py [--steps 20] [--top 25] [--json FILE] [--compare [--rounds 5]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torchvision
from torch.autograd.profiler import record_function

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from botnet.data.coco import CocoDetection  # noqa: E402
from botnet.data.shapes import ShapesSpec, write_shapes_dataset  # noqa: E402
from botnet.detection.roi_align import MultiScaleRoIAlign  # noqa: E402
from botnet.tasks.detection import DetectConfig, _collate, _targets, build_detector, train_transforms  # noqa: E402
from machine import cpu_flags  # noqa: E402  (this folder: the script's own)

# The detector's parts a step runs through, in order (torchvision's attribute names).
MODULES = ("transform", "backbone.body", "backbone.fpn", "rpn", "roi_heads.box_roi_pool", "roi_heads.box_head",
           "roi_heads.box_predictor", "roi_heads.mask_roi_pool", "roi_heads.mask_head", "roi_heads.mask_predictor")  # fmt: skip


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


def demo(steps: int):
    """The demo's config, detector-building settings and ``steps`` batches of its generated images."""
    root = tempfile.mkdtemp(prefix="botnet-profile-")
    config = DetectConfig(output_dir=os.path.join(root, "run")).resolve(1)
    write_shapes_dataset(os.path.join(root, "data"), ShapesSpec(train_images=config.batch_size * steps, val_images=4))
    data = os.path.join(root, "data", "train")
    dataset = CocoDetection(os.path.join(data, "images"), os.path.join(data, "annotations.json"),
                            transforms=train_transforms(config), with_masks=True, mask_crops=True)  # fmt: skip
    batches = [_collate([dataset[i] for i in range(k, k + config.batch_size)]) for k in range(0, len(dataset), config.batch_size)]
    return config, len(dataset.category_ids) + 1, batches


def train_step(model, optimizer, batch) -> None:
    images, targets = batch
    losses = model(list(images), _targets(targets, torch.device("cpu"), True))
    sum(losses.values()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def poolers(ratio: int) -> dict[str, tuple]:
    names = ["0", "1", "2", "3"]
    return {
        "torchvision": (torchvision.ops.MultiScaleRoIAlign(names, 7, ratio), torchvision.ops.MultiScaleRoIAlign(names, 14, ratio)),
        "botnet": (MultiScaleRoIAlign(names, 7, ratio), MultiScaleRoIAlign(names, 14, ratio)),
    }


def pooler_inputs(height: int, width: int, channels: int, images: int, rois: int, generator: torch.Generator):
    features = {str(k): torch.randn(images, channels, height >> (k + 2), width >> (k + 2), generator=generator,
                                    requires_grad=True) for k in range(4)}  # fmt: skip
    boxes = []
    for _ in range(images):
        corner = torch.rand(rois, 2, generator=generator) * torch.tensor([width * 0.9, height * 0.9])
        boxes.append(torch.cat([corner, corner + 4 + torch.rand(rois, 2, generator=generator) * width / 4], 1))
    return features, boxes, [(height, width)] * images


def compare(rounds: int) -> dict:
    """Seconds a step (and a pooler call) takes with each RoI-Align, median over rounds, interleaved."""
    config, num_classes, batches = demo(6 * rounds + 2)
    models = {}
    for name, (box, mask) in poolers(config.roi_sampling_ratio).items():
        torch.manual_seed(0)
        model = build_detector(config.detector_settings(), num_classes, box_roi_pool=box, mask_roi_pool=mask).train()
        models[name] = (model, torch.optim.AdamW(model.parameters(), lr=config.lr, fused=True))
    generator = torch.Generator().manual_seed(0)
    cases = {"demo step (4 images, 128-176 px)": None,
             "pooling, demo (4 x 64 ch, 128 x 176 px, 64 RoIs an image)": pooler_inputs(128, 176, 64, 4, 64, generator),
             "pooling, 2 x 64 ch, 768 x 1024 px, 512 RoIs an image": pooler_inputs(768, 1024, 64, 2, 512, generator)}  # fmt: skip
    pools = poolers(config.roi_sampling_ratio)
    times: dict[str, dict[str, list[float]]] = {case: {name: [] for name in models} for case in cases}
    for round_ in range(rounds + 1):  # the first round warms up
        steps = batches[:2] if round_ == 0 else batches[2 + 6 * (round_ - 1) : 2 + 6 * round_]
        for case, inputs in cases.items():
            for name in models:
                started = time.perf_counter()
                if inputs is None:
                    for batch in steps:
                        train_step(*models[name], batch)
                    count = len(steps)
                else:
                    count = 3
                    for _ in range(count):
                        for pooler in pools[name]:
                            pooler(*inputs).sum().backward()
                if round_:
                    times[case][name].append((time.perf_counter() - started) / count)
    return {case: {name: round(statistics.median(t), 5) for name, t in by_name.items()} for case, by_name in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    head = dict(cpu=cpu_flags(), threads=torch.get_num_threads(), torch=torch.__version__,
                kernels=os.environ.get("ATEN_CPU_CAPABILITY", "default"))  # fmt: skip
    if args.compare:
        result = dict(head, rounds=args.rounds, seconds=compare(args.rounds))
        print(f"{head['cpu']} ({head['kernels']} kernels), {head['threads']} threads")
        for case, by_name in result["seconds"].items():
            ratio = by_name["torchvision"] / by_name["botnet"]
            print(f"  {case:60s} torchvision {by_name['torchvision']:.4f} s, botnet {by_name['botnet']:.4f} s: {ratio:.2f}x")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        return
    config, num_classes, batches = demo(args.steps + args.warmup)
    model = build_detector(config.detector_settings(), num_classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    label_modules(model)

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
        head, steps=args.steps, seconds_per_step=round(seconds, 4),
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
