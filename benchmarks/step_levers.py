"""Each lever of a classification training step, measured side by side on this machine.

For a case (a model, an input size, channels, a batch) it times, interleaved round by round so that a
busy machine slows every variant alike:

- the model alone (forward, backward and optimizer step on a batch held in memory), with AdamW's
  for-loop, foreach and fused implementations, in float32 and in bfloat16 autocast, with channels_last
  inputs or not, and (``--compile``, second case) under ``torch.compile``, its compile time apart;
- the loader alone (a folder's images augmented and batched): the previous pipeline (every step per
  image in torchvision, read from disk) and the two-half one (decoded once and kept in memory; per
  image a crop or resize, per batch the warp, flips and normalisation), in the main process and in
  two worker processes.

Usage: python benchmarks/step_levers.py [--folder DIR ...] [--rounds 5] [--json benchmarks/step-levers.json]
(``--folder``: image folders to time the loader on, e.g. those benchmarks/tta_sets.py writes.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from botnet import create_model

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = {  # the defaults' models at the sizes they are fitted to
    "digits demo: botnet_tiny 24 px grey, batch 64": ("botnet_tiny", 24, 1, 64),
    "28-px scans: botnet_tiny 32 px grey, batch 64": ("botnet_tiny", 32, 1, 64),
    "32-px photos: botnet_tiny 32 px colour, batch 64": ("botnet_tiny", 32, 3, 64),
}


def model_variants(name: str, size: int, chans: int, batch: int, compiled: bool = False) -> dict:
    torch.manual_seed(0)
    images = torch.randn(batch, chans, size, size)
    labels = torch.randint(0, 10, (batch,))

    def variant(impl: str, amp: bool, channels_last: bool = True, compiled: bool = False):
        model = create_model(name, num_classes=10, in_chans=chans, img_size=size).train()
        forward = torch.compile(model) if compiled else model
        flags = {"loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}[impl]
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **flags)
        x = images.contiguous(memory_format=torch.channels_last) if channels_last else images

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = torch.nn.functional.cross_entropy(forward(x).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    return {
        "float32, AdamW for-loop": variant("loop", False),
        "float32, AdamW foreach": variant("foreach", False),
        "float32, AdamW fused": variant("fused", False),
        "float32, AdamW fused, contiguous inputs": variant("fused", False, channels_last=False),
        "bfloat16, AdamW fused": variant("fused", True),
        **({"float32, AdamW fused, torch.compile": variant("fused", False, compiled=True)} if compiled else {}),
    }


def _per_image_torchvision(size: int, mean, std, crop: bool) -> v2.Compose:
    """The previous pipeline: every step per image, in torchvision."""
    if crop:
        geometry = [v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize((size, size), antialias=True), v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))]
    return v2.Compose([v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def loader_variants(folder: str, size: int, chans: int, batch: int) -> dict:
    """A batch of the folder's training images, augmented: per image in torchvision (the previous pipeline,
    read from disk), or in two halves (per image: crop or resize; per batch: warp, flip, normalise)."""
    from botnet.data import load_classification_data

    crop = chans == 3

    def variant(two_halves: bool, in_memory: bool, workers: int):
        data = load_classification_data(folder, size, in_chans=chans, augment="crop" if crop else "jitter")
        if not in_memory:
            data.train.decoded = None
        augment = data.train.transform
        if not two_halves:
            data.train.transform = _per_image_torchvision(size, data.mean, data.std, crop)
        loader = DataLoader(data.train, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                            persistent_workers=workers > 0)  # fmt: skip
        batches = iter(())

        def step():
            nonlocal batches
            try:
                images, _ = next(batches)
            except StopIteration:
                batches = iter(loader)
                images, _ = next(batches)
            if two_halves:
                augment.batch(*images)

        return step

    return {
        "per image in torchvision, from disk, 0 workers": variant(False, False, 0),
        "two halves, in memory, 0 workers": variant(True, True, 0),
    }, {
        "per image in torchvision, from disk, 2 workers": variant(False, False, 2),
        "two halves, in memory, 2 workers": variant(True, True, 2),
    }


def interleaved(variants: dict, rounds: int, steps: int) -> dict[str, float]:
    """Median seconds of a step of each variant over ``rounds`` rounds of ``steps`` steps (after a warm-up)."""
    for step in variants.values():
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, step in variants.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", nargs="*", default=[], help="image folders (DIR/train/CLASS/*) to time the loader on; "
                        "a name with 'scan' in it is read grey and jittered, others in colour with crops")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also torch.compile the model of the second case")
    parser.add_argument("--json", default=os.path.join(HERE, "step-levers.json"))
    args = parser.parse_args()
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cases": {}}
    for index, (case, (name, size, chans, batch)) in enumerate(CASES.items()):
        compiled = args.compile and index == 1
        variants = model_variants(name, size, chans, batch, compiled)
        if compiled:  # the compile itself, timed apart: the first steps compile the graph
            start = time.perf_counter()
            variants["float32, AdamW fused, torch.compile"]()
            results["compile_seconds"] = round(time.perf_counter() - start, 1)
        seconds = interleaved(variants, args.rounds, steps=5)
        results["cases"][case] = {k: round(batch / v, 1) for k, v in seconds.items()}
        print(case, json.dumps(results["cases"][case]), file=sys.stderr)
    if args.folder:
        results["loader"] = {}
        for folder in args.folder:
            chans = 1 if "scan" in folder else 3
            # workers keep preparing batches while another variant is timed, so the variants with workers
            # are interleaved only with each other
            seconds = {k: v for variants in loader_variants(folder, 32, chans, 64) for k, v in interleaved(variants, args.rounds, steps=10).items()}
            name = os.path.basename(folder.rstrip("/"))
            results["loader"][name] = {k: round(64 / v, 1) for k, v in seconds.items()}
            print("loader", name, json.dumps(results["loader"][name]), file=sys.stderr)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
