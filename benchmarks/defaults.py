"""The fitted defaults against the previous ones (botnet_tiny at 24 px, the small recipe's 15 epochs,
random-resized crops and flips on colour for every folder), on three sets:

- the bundled digits (`botnet train`);
- the same 1,797 digits written as a folder of grey 8x8 PNGs (a folder of scans);
- a generated photo-like folder (`botnet make-data`: 6 shape classes, 700 + 150 colour 32x32 images each).

Each case is one `botnet train` command, run one after another; the results go to
benchmarks/defaults.json. Usage: python benchmarks/defaults.py [WORK_DIR]
"""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from botnet.data.digits import digits_splits
from botnet.data.shapes import PhotoSpec, write_shapes_folder

HERE = os.path.dirname(os.path.abspath(__file__))
PREVIOUS = ["--model", "botnet_tiny", "--img-size", "24", "--epochs", "15"]
PREVIOUS_FOLDER = PREVIOUS + ["--in-chans", "3", "--augment", "crop", "--hflip"]


def write_digit_folder(root: str) -> None:
    """The bundled digits' own train / held-out split as grey PNGs, ROOT/{train,val}/DIGIT/*.png."""
    for split, dataset in zip(("train", "val"), digits_splits()):
        for index in range(len(dataset)):
            image, label = dataset[index]
            folder = os.path.join(root, split, str(label))
            os.makedirs(folder, exist_ok=True)
            pixels = np.asarray(image).reshape(8, 8).astype(np.uint8)
            Image.fromarray(pixels, "L").save(os.path.join(folder, f"{index:04d}.png"))


def run(name: str, argv: list[str], work: str) -> dict:
    out = os.path.join(work, name)
    if not os.path.exists(os.path.join(out, "summary.json")):
        subprocess.run([sys.executable, "-m", "botnet", "train", *argv, "--output-dir", out], check=True)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    keys = ("model", "model_overrides", "img_size", "in_chans", "augment", "hflip", "epochs")
    return dict(
        case=name,
        command="botnet train " + " ".join(argv),
        settings={k: config[k] for k in keys},
        top1=summary["val_top1"],
        wall_seconds=summary["wall_seconds"],
        fitted=summary["fitted_defaults"],
    )


def main(work: str) -> None:
    digits, photos = os.path.join(work, "digit-scans"), os.path.join(work, "photos")
    if not os.path.isdir(digits):
        write_digit_folder(digits)
    if not os.path.isdir(photos):
        write_shapes_folder(photos, PhotoSpec())
    cases = [
        ("digits (bundled): previous = fitted", []),
        ("digit scans folder: previous", ["--data", digits, *PREVIOUS_FOLDER]),
        ("digit scans folder: fitted", ["--data", digits]),
        ("photo-like folder: previous", ["--data", photos, *PREVIOUS_FOLDER]),
        ("photo-like folder: fitted", ["--data", photos]),
    ]
    results = [run(name.replace(" ", "_").replace(":", "").replace("(", "").replace(")", ""), argv, work)
               for name, argv in cases]  # fmt: skip
    for (name, _), result in zip(cases, results):
        result["case"] = name
        print(f"{name:<40} top-1 {result['top1']:6.2f}%  {result['wall_seconds']:7.1f} s  {result['settings']}")
    with open(os.path.join(HERE, "defaults.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/defaults")
