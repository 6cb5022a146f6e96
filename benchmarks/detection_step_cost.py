"""What a detection training image costs on this CPU, by its size and its number of objects: the
cost model the fitted defaults' size rule reads (STEP_COST in botnet/tasks/detection_defaults.py).

It times training steps (forward, backward, AdamW; 2 images a step, float32) of the fitted defaults'
detector for a crowded set (botnet_mini Mask R-CNN, FPN 64, box head 512, mask head 64, 512 RoIs an
image, 2,048 / 1,024 proposals, RoI-Align sampling 1) on random images of 0.1-0.8 megapixels with 2, 30
and 100 objects, their masks as BoxMasks crops, interleaved round by round. It then fits seconds per
image = a + b P + c P^2 + d K P (P megapixels, K objects; non-negative least squares): the P^2 is the
BoT block's attention over stride-16 tokens, K P the anchors matched to every object.

With ``--compare`` it times only torchvision's dense (N, H, W) mask targets and box IoU against the
crops and botnet's IoU, one lever at a time, interleaved.

On an AVX-512 CPU, ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` holds PyTorch's and oneDNN's kernels
to AVX2, as on a CPU without AVX-512 (``--json benchmarks/detection-step-cost-avx2.json``).

Usage: python benchmarks/detection_step_cost.py [--rounds 3] [--json benchmarks/detection-step-cost.json] [--compare]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torchvision
from scipy.optimize import nnls

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from botnet.data.box_masks import BoxMasks  # noqa: E402
from botnet.tasks.detection import DetectorSettings, build_detector  # noqa: E402

SIZES = ((256, 384), (384, 512), (480, 640), (576, 768), (672, 896), (768, 1024))
OBJECTS = (2, 30, 100)
SETTINGS = dict(detector="maskrcnn", backbone="botnet_mini", fpn_channels=64, anchor_sizes=[16, 32, 64, 128, 256],
                box_head_width=512, mask_head_width=64, proposals=[2048, 1024, 588, 294],
                box_batch_size_per_image=512, roi_sampling_ratio=1)  # fmt: skip


def batch(height: int, width: int, objects: int, generator: torch.Generator, crops: bool = True):
    images = [torch.rand(3, height, width, generator=generator) for _ in range(2)]
    targets = []
    for _ in range(2):
        corner = torch.rand(objects, 2, generator=generator) * torch.tensor([width - 60, height - 60])
        boxes = torch.cat([corner, corner + 8 + torch.rand(objects, 2, generator=generator) * 50], 1)
        masks = torch.zeros(objects, height, width, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[k, y1:y2, x1:x2] = 1
        masks = BoxMasks.from_dense(masks) if crops else masks
        targets.append(dict(boxes=boxes, labels=torch.ones(objects, dtype=torch.int64), masks=masks))
    return images, targets


def case(height: int, width: int, objects: int, rounds: int, crops: bool = True, torchvision_iou: bool = False):
    torch.manual_seed(0)
    model = build_detector(DetectorSettings(**SETTINGS, min_size=height, max_size=width), 2).train()
    if torchvision_iou:
        model.rpn.box_similarity = model.roi_heads.box_similarity = torchvision.ops.box_iou
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(height + objects)
    batches = [batch(height, width, objects, generator, crops) for _ in range(rounds + 1)]

    def step(k: int) -> float:
        started = time.perf_counter()
        loss = sum(model(*batches[k]).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    step(0)  # warm-up
    return step


VARIANTS = {  # (mask crops, torchvision's box IoU)
    "torchvision: dense masks, its box IoU": (False, True),
    "mask crops, torchvision's box IoU": (True, True),
    "botnet: mask crops, its box IoU": (True, False),
}


def compare(rounds: int) -> list[dict]:
    """torchvision's dense mask targets and box IoU against botnet's crops and IoU, one lever at a time,
    interleaved, at two sizes with 10 and 100 objects."""
    keys = [(h, w, k, name) for h, w in ((576, 768), (768, 1024)) for k in (10, 100) for name in VARIANTS]
    steps = {key: case(*key[:3], rounds, *VARIANTS[key[3]]) for key in keys}
    times = {key: [] for key in keys}
    for r in range(1, rounds + 1):
        for key in keys:
            times[key].append(steps[key](r))
    rows = [dict(height=h, width=w, objects=k, variant=name,
                 seconds_per_image=round(statistics.median(times[(h, w, k, name)]) / 2, 3)) for h, w, k, name in keys]  # fmt: skip
    for row in rows:
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=os.path.join(HERE, "detection-step-cost.json"))
    parser.add_argument("--compare", action="store_true", help="only torchvision's levers against botnet's (kept in the JSON)")
    args = parser.parse_args()
    if args.compare:
        kept = json.load(open(args.json)) if os.path.exists(args.json) else {}
        kept.pop("masks_compared", None)
        kept["compared"] = dict(command="python benchmarks/detection_step_cost.py --compare", rows=compare(args.rounds))
        with open(args.json, "w") as f:
            json.dump(kept, f, indent=1)
        return
    keys = [(h, w, k) for h, w in SIZES for k in OBJECTS]
    steps = {key: case(*key, args.rounds) for key in keys}
    times = {key: [] for key in keys}
    for r in range(1, args.rounds + 1):
        for key in keys:
            times[key].append(steps[key](r))
    rows = [dict(height=h, width=w, objects=k, megapixels=h * w / 1e6, seconds_per_image=statistics.median(times[(h, w, k)]) / 2)
            for h, w, k in keys]  # fmt: skip
    p = np.array([row["megapixels"] for row in rows])
    k = np.array([row["objects"] for row in rows], dtype=np.float64)
    t = np.array([row["seconds_per_image"] for row in rows])
    design = np.c_[np.ones_like(p), p, p**2, k * p]
    coefficients, _ = nnls(design, t)
    for row, predicted in zip(rows, design @ coefficients):
        row["predicted"] = round(float(predicted), 3)
        print(row, flush=True)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    result = dict(
        command="python benchmarks/detection_step_cost.py", cpu=platform.processor() or platform.machine(),
        cpu_flags=sorted({f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags.split()}),
        capability=torch.backends.cpu.get_cpu_capability(), onednn_max_isa=os.environ.get("ONEDNN_MAX_CPU_ISA"),
        threads=torch.get_num_threads(), torch=torch.__version__, settings=SETTINGS,
        model="seconds per image = a + b P + c P^2 + d K P", coefficients=dict(zip("abcd", np.round(coefficients, 4).tolist())),
        worst_relative_error=round(float(np.max(np.abs(design @ coefficients - t) / t)), 3), rows=rows,
    )  # fmt: skip
    print(result["coefficients"], result["worst_relative_error"])
    if os.path.exists(args.json) and "compared" in (kept := json.load(open(args.json))):
        result["compared"] = kept["compared"]  # --compare's rows stay
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
