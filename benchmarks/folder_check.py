"""How long a big image folder takes to be checked and to start training, and how much memory that takes.

Writes a folder of N small images (default 100,000 PNGs of 32 x 32, ten classes, 90% train / 10% val) unless
it is already there, then measures, each in a fresh process:

- the check alone, one file after another in one process and in parallel worker processes,
  without the cache;
- ``botnet train --data DIR`` from the start of the process to its first training step (the log line
  written as the epoch loop starts), first with an empty check cache (cold), then again (warm: every
  file's result is cached by size and modification time), with the process's peak resident memory;
  and ``botnet train`` on the bundled digits for reference (the cost of starting at all).

Usage: python benchmarks/folder_check.py [--images 100000] [--root /tmp/botnet-folder-100k]
                                         [--json benchmarks/folder-check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

CLASSES = 10


def write_folder(root: str, count: int) -> None:
    import numpy as np
    from PIL import Image

    marker = os.path.join(root, f".complete-{count}")
    if os.path.exists(marker):
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        split = "val" if (i // CLASSES) % 10 == 0 else "train"
        label = i % CLASSES
        folder = os.path.join(root, split, f"class{label}")
        if i < 2 * CLASSES * 10:
            os.makedirs(folder, exist_ok=True)
        pixels = np.full((32, 32, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        pixels[rng.integers(0, 24) :, rng.integers(0, 24) :] = rng.integers(0, 256, 3)  # a block per image
        Image.fromarray(pixels).save(os.path.join(folder, f"{i:06d}.png"))
    open(marker, "w").close()


PROBE = r"""
import json, sys, time, resource
started = time.perf_counter()
from botnet.data.folder import _list_split
from botnet.data.images import check_images
split_dir, workers = sys.argv[1], int(sys.argv[2])
_, files = _list_split(split_dir)
paths = [p for group in files.values() for p in group]
listed = time.perf_counter()
reasons = check_images(paths, folder=split_dir, workers=workers)
done = time.perf_counter()
print(json.dumps(dict(files=len(paths), bad=sum(r is not None for r in reasons.values()),
                      list_seconds=round(listed - started, 2), check_seconds=round(done - listed, 2))))
"""


def check_alone(split_dir: str, workers: int, env: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, split_dir, str(workers)], capture_output=True, text=True,
                            env={**env, "BOTNET_CACHE_DIR": ""}, check=True)  # fmt: skip
    return json.loads(result.stdout)


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def time_to_first_step(data: str | None, run_dir: str, env: dict) -> dict:
    """``botnet train --data DATA`` (no DATA: the bundled digits) until the epoch loop starts; then the
    process is stopped."""
    log = os.path.join(run_dir, "train.log")
    command = [sys.executable, "-m", "botnet", "train", "--epochs", "1", "--output-dir", run_dir]
    command += ["--data", data] if data else []
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"botnet train ended early: {process.stderr.read().decode()[-2000:]}")
            peak = max(peak, peak_rss_mb(process.pid))
            if os.path.exists(log):
                with open(log) as f:
                    if "training botnet_tiny" in f.read():
                        break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
    finally:
        process.kill()
        process.wait()
    return dict(seconds_to_first_step=round(seconds, 2), peak_rss_mb=round(peak, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "botnet-folder-100k"))
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    started = time.perf_counter()
    write_folder(args.root, args.images)
    print(f"folder of {args.images} images at {args.root} ({time.perf_counter() - started:.0f} s to write)")
    cache = tempfile.mkdtemp(prefix="botnet-check-cache-")
    env = {**os.environ, "BOTNET_CACHE_DIR": cache}
    train_dir = os.path.join(args.root, "train")
    results = dict(images=args.images, cpu_count=os.cpu_count())
    results["check_serial"] = check_alone(train_dir, 1, env)
    results["check_parallel"] = check_alone(train_dir, 0, env)
    print(f"check of train/ alone: serial {results['check_serial']}, parallel {results['check_parallel']}")
    runs = tempfile.mkdtemp(prefix="botnet-folder-runs-")
    results["train_digits_for_reference"] = time_to_first_step(None, os.path.join(runs, "digits"), env)
    results["train_cold_cache"] = time_to_first_step(args.root, os.path.join(runs, "cold"), env)
    results["train_warm_cache"] = time_to_first_step(args.root, os.path.join(runs, "warm"), env)
    print(
        f"botnet train to its first step: cold {results['train_cold_cache']}, warm {results['train_warm_cache']}; "
        f"the bundled digits for reference {results['train_digits_for_reference']}"
    )
    shutil.rmtree(runs, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
