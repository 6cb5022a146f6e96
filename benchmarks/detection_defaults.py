"""Detection defaults fitted to the data against the previous defaults (the small recipe whatever the
data: 128-176 px, anchors 8-128 px, 5 epochs) and against hand-set flags, on the two hard sets of
benchmarks/detection_sets.py:

- photos: real photographs scikit-image ships (coins, Hubble galaxies, tissue nuclei), segmented
  classically, as 48 + 16 mosaics of 650-1400 px with 6-160 px objects, up to 100 an image;
- small-objects: the generated shapes at 1024 px high with 10-30 px objects;
- mixed: the generated shapes (one class, 24-160 px) on 1280x400 strips, 1920x1080 frames and 1024x768 photos in one
  folder, 48 + 16 images.

Each case is one `botnet detect train` command, run one after another on a quiet machine; the
results go to benchmarks/detection-defaults.json (cases not run keep their earlier results).
Under ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 (an AVX-512 CPU's kernels held to AVX2) a case's
result is kept as NAME-avx2.
Usage: python benchmarks/detection_defaults.py [WORK_DIR] [--only NAME ...]
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.detection_sets import write_mixed_aspect, write_photo_instances, write_small_objects  # noqa: E402

PREVIOUS = ["--recipe", "small"]  # a recipe given by name is not fitted: the previous defaults
HAND_SET = PREVIOUS + ["--min-size", "384", "--max-size", "768", "--anchor-sizes", "16", "32", "64", "128", "256",
                       "--time-budget", "10"]  # fmt: skip (with --amp too, this stopped on a NaN box loss at epoch 4)
CASES = {
    "photos-before": ("photos", PREVIOUS),
    "photos-fitted": ("photos", []),
    "photos-hand-set": ("photos", HAND_SET),
    "small-objects-before": ("small-objects", PREVIOUS),
    "small-objects-fitted": ("small-objects", []),  # tiles since they were built
    "small-objects-whole-images": ("small-objects", ["--min-size", "640", "--max-size", "960"]),  # the pair fitted before
    "small-objects-tiles-448": ("small-objects", ["--tiles", "448", "56", "--min-size", "512"]),  # 1.14x, not 1.88x
    # mixed aspect ratios, the same 8 minutes each: the previous size rule (max_size from the widest aspect
    # ratio, which capped min_size at 320 here; its anchors as it chose them), the rule now, the hand-set flags
    "mixed-widest-aspect": ("mixed", ["--min-size", "320", "--max-size", "1024", "--anchor-sizes", "9", "16", "28", "51",
                                      "91", "--time-budget", "8"]),
    "mixed-fitted": ("mixed", ["--time-budget", "8"]),
    "mixed-hand-set": ("mixed", HAND_SET[2:-2] + ["--time-budget", "8"]),
    # the fitted sizes with the previous anchor rule (spread over the objects' 5th-95th percentile only)
    "mixed-fitted-spread-anchors": ("mixed", ["--anchor-sizes", "16", "25", "40", "63", "100", "--time-budget", "8"]),
}
SETS = {"photos": lambda root: write_photo_instances(root),
        "small-objects": lambda root: write_small_objects(root, height=1024),
        "mixed": lambda root: write_mixed_aspect(root)}  # fmt: skip
KEPT = ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50", "epochs", "wall_seconds")


def record(name: str, argv: list[str], run_dir: str, seconds: float) -> dict:
    """A case's result: its command, headline metrics, the fitted settings and the wall time."""
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    fitted = summary.get("fitted_defaults") or {}
    return dict(
        case=name, command="botnet detect train " + " ".join(argv), process_seconds=round(seconds, 1),
        **{key: summary.get(key) for key in KEPT},
        settings={key: config.get(key) for key in ("min_size", "max_size", "anchor_sizes", "batch_size", "detector", "tiles")},
        fitted={c["setting"]: c["value"] for c in fitted.get("choices", [])},
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", nargs="?", default="/tmp/botnet-detection-defaults")
    parser.add_argument("--only", nargs="+", choices=tuple(CASES))
    args = parser.parse_args()
    out = os.path.join(HERE, "detection-defaults.json")
    kept = json.load(open(out)) if os.path.exists(out) else []
    held = os.environ.get("ATEN_CPU_CAPABILITY")  # kernels held to narrower instructions: results kept apart
    replaced = [f"{name}-{held}" if held else name for name in args.only or CASES]
    results = [result for result in kept if result["case"] not in replaced]
    for name in args.only or CASES:
        data, flags = CASES[name]
        root = os.path.join(args.work, data)
        if not os.path.exists(os.path.join(root, "stats.json")):
            SETS[data](root)
        argv = ["--data", root, *flags]
        case = f"{name}-{held}" if held else name
        run_dir = os.path.join(args.work, "runs", case)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "botnet", "detect", "train", *argv, "--output-dir", run_dir], check=True)
        results.append(record(case, argv, run_dir, time.perf_counter() - started))
        if held:
            results[-1]["environment"] = f"ATEN_CPU_CAPABILITY={held} ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA')}"
        print(json.dumps(results[-1]), flush=True)
    order = list(CASES)
    results.sort(key=lambda result: order.index(result["case"]) if result["case"] in order else len(order))
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
