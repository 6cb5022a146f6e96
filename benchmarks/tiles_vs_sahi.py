"""botnet's tile windows (``botnet.detection.tiles.tile_windows``) against SAHI's slicing, the reference they
follow: ``get_slice_bboxes`` of sahi's ``slicing.py``, over a grid of image sizes, tile sizes and overlaps.

sahi is not a dependency (its package imports OpenCV and Shapely); the function is read from its source
file alone, e.g. a wheel unpacked: ``pip download --no-deps sahi && unzip sahi-*.whl -d sahi-src``.

Usage: python benchmarks/tiles_vs_sahi.py sahi-src/sahi/slicing.py [--output benchmarks/tiles-vs-sahi.json]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from botnet.detection.tiles import tile_windows  # noqa: E402

TILES = ((128, 32), (272, 34), (320, 64), (500, 100))  # (size, overlap px): overlaps a whole share of the size


def sahi_slicer(path: str):
    """``get_slice_bboxes`` compiled from sahi's source file, without importing the rest of the module."""
    with open(path) as f:
        tree = ast.parse(f.read())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "get_slice_bboxes")
    namespace: dict = {}
    exec(compile(ast.fix_missing_locations(ast.Module(body=[function], type_ignores=[])), path, "exec"), {}, namespace)
    return namespace["get_slice_bboxes"]


def _version(slicing_py: str) -> str:
    """The version in the unpacked wheel's METADATA beside the sahi package, or "(version unknown)"."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(slicing_py)))
    for name in sorted(os.listdir(root)):
        if name.startswith("sahi-") and name.endswith(".dist-info"):
            with open(os.path.join(root, name, "METADATA")) as f:
                return next((line.split(":", 1)[1].strip() for line in f if line.startswith("Version:")), "(version unknown)")
    return "(version unknown)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("slicing_py")
    parser.add_argument("--output", default=os.path.join(HERE, "tiles-vs-sahi.json"))
    args = parser.parse_args()
    slicer = sahi_slicer(args.slicing_py)
    cases, differ = 0, []
    for height in range(50, 1200, 37):
        for width in range(60, 1500, 53):
            for size, overlap in TILES:
                ratio = overlap / size
                theirs = sorted(tuple(box) for box in slicer(height, width, size, size, False, ratio, ratio))
                cases += 1
                if theirs != sorted(tile_windows(height, width, size, overlap)):
                    differ.append(dict(height=height, width=width, size=size, overlap=overlap))
    result = dict(reference=f"sahi {_version(args.slicing_py)}, get_slice_bboxes", cases=cases, differ=len(differ),
                  examples=differ[:10])  # fmt: skip
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{cases - len(differ)} of {cases} image and tile sizes give sahi's windows")


if __name__ == "__main__":
    main()
