"""What a user would pick instead: Ultralytics YOLOv8n-seg trained from scratch for the same minutes as our
fitted defaults, on the same splits of the hard detection sets, scored by the same COCO evaluation.

- The sets are the ones benchmarks/detection_defaults.py writes (COCO files, RLE masks) in its WORK_DIR.
  Each is laid out as YOLO reads it: the images linked, one label file per image holding each object's
  class and outline, made from its RLE mask as Ultralytics' own COCO converter makes it.
- YOLOv8n-seg is built from its yaml (no pretrained weights can be fetched here, and ours start from
  scratch too) and trained with Ultralytics' defaults (640 px, batch 16, its augmentation; ``--batch``
  changes the batch, kept apart in the results) on the CPU for
  the whole-process time of the fitted case of benchmarks/detection-defaults.json, spent on training
  alone (``time=``: Ultralytics fits its epochs and schedule to it; no validation during training).
- Its last weights predict every held-out image (confidence 0.001, up to 300 detections, masks at the
  image's size); boxes and masks are scored by pycocotools' COCOeval against the same annotations.json
  that scores ours.

A benchmark, not a dependency: run it in an environment of its own, on a quiet machine, e.g.
    python3 -m venv /tmp/yv && /tmp/yv/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics pycocotools
    /tmp/yv/bin/python benchmarks/yolo_compare.py /tmp/botnet-detection-defaults --only photos mixed
Results go to benchmarks/yolo-compare.json (sets not run keep their earlier results), each beside our
fitted case's metrics.
"""

import argparse
import json
import os
import platform
import sys
import time

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

HERE = os.path.dirname(os.path.abspath(__file__))
OURS = {"photos": "photos-fitted", "mixed": "mixed-fitted", "small-objects": "small-objects-fitted"}
METRICS = ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50")


def outline(rle: dict) -> list[float] | None:
    """The mask as Ultralytics' own ``convert_coco`` lays out an RLE mask: its outer contours (holes are
    lost), several joined into one outline by ``merge_multi_segment``; x1 y1 x2 y2 ... relative to the image
    (None: no contour of 3 points)."""
    from ultralytics.data.converter import merge_multi_segment

    mask = np.ascontiguousarray(mask_utils.decode(rle))
    contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    polygons = [c.reshape(-1).tolist() for c in contours if len(c) >= 3]
    if not polygons:
        return None
    points = np.concatenate(merge_multi_segment(polygons), axis=0) if len(polygons) > 1 else np.array(polygons[0])
    height, width = mask.shape
    return (points.reshape(-1, 2) / [width, height]).clip(0, 1).reshape(-1).tolist()


def write_yolo_split(source: str, target: str, split: str) -> tuple[list[int], list[str]]:
    """``source``/``split`` (COCO) as YOLO's images/``split`` and labels/``split``; returns the category ids in
    class order and the class names."""
    coco = COCO(os.path.join(source, split, "annotations.json"))
    category_ids = sorted(coco.getCatIds())
    names = [coco.loadCats(i)[0]["name"] for i in category_ids]
    images, labels = os.path.join(target, "images", split), os.path.join(target, "labels", split)
    os.makedirs(images, exist_ok=True)
    os.makedirs(labels, exist_ok=True)
    for image in coco.loadImgs(coco.getImgIds()):
        link = os.path.join(images, image["file_name"])
        if not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(source, split, "images", image["file_name"])), link)
        lines = []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"], iscrowd=False)):
            rle = coco.annToRLE(ann)
            points = outline(rle)
            if points is not None:
                lines.append(" ".join([str(category_ids.index(ann["category_id"]))] + [f"{v:.6f}" for v in points]))
        with open(os.path.join(labels, os.path.splitext(image["file_name"])[0] + ".txt"), "w") as f:
            f.write("\n".join(lines) + ("\n" if lines else ""))
    return category_ids, names


def predictions(model, source: str, category_ids: list[int]) -> list[dict]:
    """COCO results (boxes and RLE masks) of the held-out images."""
    coco = COCO(os.path.join(source, "val", "annotations.json"))
    results = []
    for image in coco.loadImgs(coco.getImgIds()):
        path = os.path.join(source, "val", "images", image["file_name"])
        found = model.predict(path, conf=0.001, max_det=300, retina_masks=True, device="cpu", verbose=False)[0]
        if found.boxes is None or len(found.boxes) == 0:
            continue
        boxes = found.boxes.xyxy.numpy()
        masks = found.masks.data.numpy().astype(np.uint8) if found.masks is not None else None
        for k, (box, label, score) in enumerate(zip(boxes, found.boxes.cls.numpy(), found.boxes.conf.numpy())):
            x1, y1, x2, y2 = (float(v) for v in box)
            result = dict(image_id=image["id"], category_id=category_ids[int(label)], score=float(score),
                          bbox=[x1, y1, x2 - x1, y2 - y1])  # fmt: skip
            if masks is not None:
                rle = mask_utils.encode(np.asfortranarray(masks[k]))
                rle["counts"] = rle["counts"].decode("ascii")
                result["segmentation"] = rle
            results.append(result)
    return results


def score(source: str, results: list[dict]) -> dict[str, float]:
    """COCO box and mask AP / AP50 (percent) of ``results`` on the held-out annotations."""
    ground_truth = COCO(os.path.join(source, "val", "annotations.json"))
    scores = {}
    for iou_type, prefix in (("bbox", "bbox"), ("segm", "segm")):
        kept = [r for r in results if iou_type == "bbox" or "segmentation" in r]
        if not kept:
            scores.update({f"{prefix}_AP": 0.0, f"{prefix}_AP50": 0.0})
            continue
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(kept), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        scores.update({f"{prefix}_AP": round(100 * evaluator.stats[0], 1), f"{prefix}_AP50": round(100 * evaluator.stats[1], 1)})
    return scores


def run_set(name: str, work_dir: str, seconds: float, batch: int) -> dict:
    from ultralytics import YOLO

    source = os.path.join(work_dir, name)
    target = os.path.join(work_dir, "yolo", name)
    category_ids, names = write_yolo_split(source, target, "train")
    write_yolo_split(source, target, "val")
    data = os.path.join(target, "data.yaml")
    with open(data, "w") as f:
        json.dump(dict(path=target, train="images/train", val="images/val", names=dict(enumerate(names))), f)
    model = YOLO("yolov8n-seg.yaml")
    started = time.perf_counter()
    run = f"{name}-batch{batch}"
    model.train(data=data, time=seconds / 3600, epochs=1000, batch=batch, device="cpu", pretrained=False, val=False,
                plots=False, project=os.path.join(work_dir, "yolo", "runs"), name=run, exist_ok=True, verbose=False)  # fmt: skip
    trained = time.perf_counter() - started
    epochs = model.trainer.epoch + 1
    last = YOLO(os.path.join(work_dir, "yolo", "runs", run, "weights", "last.pt"))
    return dict(seconds=round(trained, 1), budget_seconds=round(seconds, 1), epochs=epochs,
                **score(source, predictions(last, source, category_ids)))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work_dir", help="benchmarks/detection_defaults.py's WORK_DIR (it holds the sets)")
    parser.add_argument("--only", nargs="+", choices=list(OURS), default=list(OURS))
    parser.add_argument("--seconds", type=float, help="a quick check: train this long, and keep no result")
    parser.add_argument("--batch", type=int, default=16, help="images a step (Ultralytics' default 16)")
    args = parser.parse_args()
    with open(os.path.join(HERE, "detection-defaults.json")) as f:
        ours = {case["case"]: case for case in json.load(f)}
    path = os.path.join(HERE, "yolo-compare.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    for name in args.only:
        if not os.path.isfile(os.path.join(args.work_dir, name, "val", "annotations.json")):
            sys.exit(f"no {name} set in {args.work_dir}: make it with python benchmarks/detection_defaults.py {args.work_dir}")
        case = ours[OURS[name]]
        yolo = run_set(name, args.work_dir, args.seconds or case["process_seconds"], args.batch)
        if args.seconds:
            print(name, json.dumps(yolo))
            continue
        key = "yolov8n_seg" if args.batch == 16 else f"yolov8n_seg_batch{args.batch}"
        results[name] = {
            **results.get(name, {}), key: yolo,
            "ours": {k: case[k] for k in (*METRICS, "process_seconds", "epochs")}, "ours_case": OURS[name],
            "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"{torch.backends.cpu.get_cpu_capability()} kernels",
        }  # fmt: skip
        print(name, json.dumps(results[name]), flush=True)
        with open(path, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
