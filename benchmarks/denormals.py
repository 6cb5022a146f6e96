"""What denormal floats cost a step, with and without botnet's flush to zero (``botnet.numerics``).

Two measurements, each case in its own process (the setting must be made before PyTorch starts its
threads), the cases interleaved over rounds:

- ``product``: the batched product of an attention map (8 x 1,024 x 1,024, as a BoT block's over a
  512-px input) with its values, once with every entry a normal float and once with half of them
  denormal (1e-40), as a trained layer's softmax leaves them.
- ``step`` (with ``--checkpoint RUN/last.pt`` of a detection run): training steps of that run's trained
  detector (its weights and optimizer state) against the same detector freshly initialised, on the
  same batches of its training data.

Usage: python benchmarks/denormals.py [--checkpoint RUN/last.pt] [--rounds 3] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.machine import cpu_flags  # noqa: E402


def product_ms(repeats: int = 5) -> dict[str, float]:
    import time

    import torch

    values = torch.rand(8, 1024, 64)
    normal = torch.rand(8, 1024, 1024)
    denormal = normal.clone()
    denormal[denormal < 0.5] = 1e-40
    out = {}
    for name, attention in (("normal", normal), ("denormal", denormal)):
        torch.bmm(attention, values)
        started = time.perf_counter()
        for _ in range(repeats):
            torch.bmm(attention, values)
        out[f"product_{name}_ms"] = (time.perf_counter() - started) / repeats * 1e3
    return out


def step_seconds(checkpoint: str, steps: int = 4) -> dict[str, float]:
    import time

    import torch

    from botnet.checkpoints import load_training_state
    from botnet.tasks.detection import Detection, _collate, _plain, _targets, build_detector
    from botnet.training import pipeline
    from botnet.training.engine import OPTIMIZERS
    from botnet.training.optim import param_groups

    state, spec = load_training_state(checkpoint), Detection()
    config = pipeline._config_from_state(spec, state, checkpoint)
    train_set, _ = spec.load_data(config, None)
    generator = torch.Generator().manual_seed(0)
    batches = [_collate([train_set[i] for i in torch.randint(len(train_set), (config.batch_size,), generator=generator).tolist()])
               for _ in range(steps + 1)]  # fmt: skip
    out = {}
    for name in ("fresh", "trained"):
        torch.manual_seed(0)
        model = build_detector(config.detector_settings(), len(train_set.category_ids) + 1).train()
        optimizer = OPTIMIZERS[config.optimizer](param_groups(model, config.weight_decay), config)
        if name == "trained":
            model.load_state_dict(state.model)
            optimizer.load_state_dict(state.optimizer)
        for k, (images, targets) in enumerate(batches):
            if k == 1:
                started = time.perf_counter()
            losses = model([_plain(im) for im in images], _targets(targets, torch.device("cpu"), config.with_masks))
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
        out[f"step_{name}_s"] = (time.perf_counter() - started) / steps
    return out


def _child(flush: bool, checkpoint: str | None) -> dict[str, float]:
    """One case in a fresh process: flush set (or not) before any parallel operation."""
    code = (
        "import json, sys; sys.path.insert(0, %r); import torch; torch.set_flush_denormal(%r); "
        "from benchmarks.denormals import product_ms, step_seconds; "
        "out = product_ms(); out.update(step_seconds(%r) if %r else {}); print(json.dumps(out))"
    ) % (os.path.dirname(HERE), flush, checkpoint, checkpoint)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=os.path.join(HERE, "denormals.json"))
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"kept": [], "flushed": []}
    for _ in range(args.rounds):
        for name, flush in (("kept", False), ("flushed", True)):
            runs[name].append(_child(flush, args.checkpoint))
            print(name, runs[name][-1], flush=True)
    medians = {name: {key: round(statistics.median(r[key] for r in rows), 3) for key in rows[0]} for name, rows in runs.items()}
    result = dict(cpu_flags=cpu_flags(), threads=os.cpu_count(), checkpoint=args.checkpoint, rounds=args.rounds,
                  median=medians, runs=runs)  # fmt: skip
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(medians, indent=1))


if __name__ == "__main__":
    main()
