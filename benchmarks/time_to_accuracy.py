"""Held-out accuracy against wall time for default runs, before and after a change, on four sets:

- ``digits``: the bundled digits (``botnet train``, the demo);
- ``scans``: a folder of 8,000 + 2,000 grey 28-px digit scans (benchmarks/tta_sets.py);
- ``photos``: the photo-like folder of 32-px colour images (6 classes, 4,200 + 900);
- ``detect``: the detection demo (``botnet detect train``, Mask R-CNN on generated shapes).

Each case is one default command, run one after another on a quiet machine, timed from the start of
its process to its end (image checks not cached). The curve: each epoch's held-out metric at the time its epoch ended (the
run's own per-epoch seconds, with everything else, start-up included, counted before the first epoch).

Usage:
  python benchmarks/time_to_accuracy.py run LABEL [--code DIR] [--work DIR] [--cases digits scans ...]
      runs the cases with this checkout (or the package at DIR, e.g. a worktree of the previous commit)
  python benchmarks/time_to_accuracy.py report [--work DIR] [--output NAME]
      benchmarks/NAME.json (a row per case and label; default time-to-accuracy) and benchmarks/NAME.png

Each row names the CPU's vector flags and the kernels PyTorch was held to (``ATEN_CPU_CAPABILITY``):
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` before ``run`` measures an AVX-512 machine as an
AVX2-only one would run (PyTorch's and oneDNN's kernels held to AVX2).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = {  # the command's arguments, the metric, the accuracy whose first reaching is timed
    "digits": (["train"], "val_top1", 99.0),
    "scans": (["train", "--data", "{work}/sets/scans"], "val_top1", 98.5),
    "photos": (["train", "--data", "{work}/sets/photos"], "val_top1", 95.0),
    "detect": (["detect", "train"], "bbox_AP", 50.0),
}


def write_sets(work: str) -> None:
    sys.path.insert(0, HERE)
    from tta_sets import write_digit_scans, write_photos

    for name, write in (("scans", write_digit_scans), ("photos", write_photos)):
        if not os.path.isdir(os.path.join(work, "sets", name)):
            write(os.path.join(work, "sets", name))


def run(label: str, cases: list[str], work: str, code: str | None) -> None:
    write_sets(work)
    env = dict(os.environ, BOTNET_CACHE_DIR="")  # every run checks its images, as a first run on a folder does
    if code:
        env["PYTHONPATH"] = os.path.abspath(code)
    for case in cases:
        out = os.path.join(work, label, case)
        if os.path.exists(os.path.join(out, "summary.json")):
            continue
        argv = [a.format(work=work) for a in CASES[case][0]]
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "botnet", *argv, "--output-dir", out], check=True, env=env, cwd=code or None)
        with open(os.path.join(out, "process_seconds.txt"), "w") as f:
            f.write(f"{time.perf_counter() - started:.1f}\n")
        with open(os.path.join(out, "cpu.json"), "w") as f:
            json.dump(cpu(), f)


def cpu() -> dict:
    """The CPU's vector flags that PyTorch's kernels use, and the kernels it was held to."""
    from machine import cpu_flags  # this folder's (the script's own)

    return dict(flags=cpu_flags().split(), kernels=os.environ.get("ATEN_CPU_CAPABILITY", "default"), cores=os.cpu_count())


def curve(out: str, metric: str) -> tuple[list[tuple[float, float]], float]:
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(out, "process_seconds.txt")) as f:
        total = float(f.read())
    elapsed = total - sum(float(r["seconds"]) for r in rows)  # start-up, planning, writing: all counted first
    points = []
    for row in rows:
        elapsed += float(row["seconds"])
        if row.get(metric):
            points.append((round(elapsed, 1), float(row[metric])))
    return points, total


def report(work: str, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    labels = sorted(d for d in os.listdir(work) if d != "sets" and os.path.isdir(os.path.join(work, d)))
    figure, axes = plt.subplots(1, len(CASES), figsize=(4.2 * len(CASES), 3.4))
    for axis, (case, (argv, metric, target)) in zip(axes, CASES.items()):
        for label in labels:
            out = os.path.join(work, label, case)
            if not os.path.exists(os.path.join(out, "summary.json")):
                continue
            points, total = curve(out, metric)
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
            reached = next((t for t, value in points if value >= target), None)
            cpu_file = os.path.join(out, "cpu.json")
            rows.append(dict(
                case=case, label=label, command="botnet " + " ".join(argv).replace("{work}", "WORK"),
                cpu=json.load(open(cpu_file)) if os.path.exists(cpu_file) else None, steps=summary.get("steps"),
                epochs=summary["epochs"], final=points[-1][1], metric=metric, seconds=total,
                run_wall_seconds=summary["wall_seconds"], target=target, seconds_to_target=reached,
                amp=(summary.get("plan") or {}).get("amp"), curve=points,
            ))  # fmt: skip
            axis.plot([t for t, _ in points], [v for _, v in points], marker="o", ms=3, label=f"{label} ({total:.0f} s)")
        axis.axhline(target, color="grey", lw=0.5, ls="--")
        axis.set(title=case, xlabel="seconds from the start of the process", ylabel=metric)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(HERE, f"{name}.png"), dpi=110)
    with open(os.path.join(HERE, f"{name}.json"), "w") as f:
        json.dump(rows, f, indent=1)
    for r in rows:
        to = f"{r['seconds_to_target']:.0f} s" if r["seconds_to_target"] is not None else "never"
        print(f"{r['case']:<7} {r['label']:<7} {r['metric']} {r['final']:6.2f} after {r['epochs']:>2} epochs, "
              f"{r['seconds']:6.1f} s; {r['target']:g} reached at {to}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("run", "report"))
    parser.add_argument("label", nargs="?", default="after")
    parser.add_argument("--work", default="runs/time-to-accuracy")
    parser.add_argument("--code", help="run the botnet package found at this folder (e.g. the previous commit's)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--output", default="time-to-accuracy", help="report: the name of the .json and .png written")
    args = parser.parse_args()
    if args.action == "run":
        run(args.label, args.cases, os.path.abspath(args.work), args.code)
    else:
        report(args.work, args.output)


if __name__ == "__main__":
    main()
