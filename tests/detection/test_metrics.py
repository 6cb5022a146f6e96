"""Per-class AP against pycocotools run on each class alone, and the confusion matrix against counts by hand."""

from __future__ import annotations

import random

import pytest

from botnet.detection.metrics import coco_metrics, detection_confusion, evaluate_coco, per_class_table

CATEGORIES = [dict(id=0, name="cat"), dict(id=3, name="dog"), dict(id=5, name="bird"), dict(id=8, name="unused")]


def _box_set(seed: int) -> tuple[dict, list[dict]]:
    """Ground truth on 6 images (3 classes with objects, one without) and noisy detections: shifted boxes,
    wrong classes, misses and false alarms, with random scores."""
    rng = random.Random(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, 7):
        images.append(dict(id=image_id, width=200, height=150))
        for _ in range(rng.randint(1, 5)):
            category = rng.choice([0, 3, 5])
            x, y, w, h = rng.uniform(0, 150), rng.uniform(0, 100), rng.uniform(10, 50), rng.uniform(10, 50)
            annotations.append(
                dict(id=len(annotations) + 1, image_id=image_id, category_id=category, bbox=[x, y, w, h],
                     area=w * h, iscrowd=0)
            )  # fmt: skip
            if rng.random() < 0.8:  # found, a little off, sometimes as another class
                found = category if rng.random() < 0.8 else rng.choice([0, 3, 5, 8])
                box = [x + rng.uniform(-4, 4), y + rng.uniform(-4, 4), w * rng.uniform(0.8, 1.2), h * rng.uniform(0.8, 1.2)]
                results.append(dict(image_id=image_id, category_id=found, bbox=box, score=rng.random()))
        for _ in range(rng.randint(0, 2)):  # false alarms
            box = [rng.uniform(0, 150), rng.uniform(0, 100), rng.uniform(10, 40), rng.uniform(10, 40)]
            results.append(dict(image_id=image_id, category_id=rng.choice([0, 3, 5]), bbox=box, score=rng.random()))
    return dict(images=images, annotations=annotations, categories=CATEGORIES), results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_class_scores_as_pycocotools_scores_it_alone(seed):
    """A class's AP and AP50 equal pycocotools' overall AP on that class's objects and detections alone;
    category id 0 is a class like any other, and a class without objects has no score."""
    gt, results = _box_set(seed)
    evaluation = evaluate_coco(gt, results, ("bbox",))
    assert evaluation.classes == ["cat", "dog", "bird", "unused"]
    for category in CATEGORIES:
        row = evaluation.per_class[category["name"]]
        objects = [a for a in gt["annotations"] if a["category_id"] == category["id"]]
        assert row["objects"] == len(objects)
        if not objects:
            assert row["bbox_AP"] is None and row["bbox_AP50"] is None
            continue
        alone = dict(gt, annotations=objects, categories=[category])
        expected = coco_metrics(alone, [r for r in results if r["category_id"] == category["id"]], ("bbox",))
        assert row["bbox_AP"] == pytest.approx(expected["bbox_AP"], abs=1e-9)
        assert row["bbox_AP50"] == pytest.approx(expected["bbox_AP50"], abs=1e-9)
        assert len(evaluation.pr_curves["bbox"][category["name"]]) == 101
    scored = [row["bbox_AP"] for row in evaluation.per_class.values() if row["objects"]]
    assert evaluation.metrics["bbox_AP"] == pytest.approx(sum(scored) / len(scored))


def test_precision_recall_curve_of_a_perfect_and_of_a_half_found_class():
    gt, _ = _box_set(0)
    cats = [a for a in gt["annotations"] if a["category_id"] == 0]
    perfect = [dict(image_id=a["image_id"], category_id=0, bbox=a["bbox"], score=0.9) for a in cats]
    curve = evaluate_coco(gt, perfect, ("bbox",)).pr_curves["bbox"]["cat"]
    assert curve == [1.0] * 101
    half = perfect[: len(perfect) // 2]
    curve = evaluate_coco(gt, half, ("bbox",)).pr_curves["bbox"]["cat"]
    reached = len(half) / len(cats)
    assert all(p == 1.0 for i, p in enumerate(curve) if i / 100 <= reached + 1e-9)
    assert all(p == 0.0 for i, p in enumerate(curve) if i / 100 > reached + 1e-9)


def _annotation(i: int, category: int, box: list[float], crowd: int = 0) -> dict:
    return dict(id=i, image_id=1, category_id=category, bbox=box, area=box[2] * box[3], iscrowd=crowd)


def test_confusion_pairs_by_overlap_and_counts_misses_and_false_alarms():
    """By hand: on one image, a cat found as a cat, a dog found as a cat, a cat missed, a bird detected where
    nothing is, a second detection of the found cat (its object already taken), a detection below the score
    threshold and one overlapping too little (IoU 0.08), and a crowd region, which counts nowhere, nor does a
    detection of it."""
    gt = dict(
        images=[dict(id=1, width=300, height=300)],
        annotations=[
            _annotation(1, 0, [10, 10, 40, 40]),  # cat A
            _annotation(2, 3, [100, 10, 40, 40]),  # dog B
            _annotation(3, 0, [200, 200, 40, 40]),  # cat C, missed
            _annotation(4, 5, [10, 200, 60, 60], crowd=1),
        ],
        categories=CATEGORIES,
    )
    found = [
        dict(image_id=1, category_id=0, bbox=[11, 11, 40, 40], score=0.9),  # A as cat
        dict(image_id=1, category_id=0, bbox=[101, 10, 40, 40], score=0.8),  # B as cat
        dict(image_id=1, category_id=0, bbox=[10, 12, 40, 40], score=0.7),  # A again
        dict(image_id=1, category_id=5, bbox=[250, 10, 30, 30], score=0.6),  # nothing there
        dict(image_id=1, category_id=3, bbox=[200, 200, 40, 40], score=0.3),  # C, but below 0.5
        dict(image_id=1, category_id=0, bbox=[225, 225, 40, 40], score=0.95),  # C, IoU 0.08
        dict(image_id=1, category_id=5, bbox=[10, 200, 60, 60], score=0.9),  # the crowd region
    ]
    counts = detection_confusion(gt, found, [0, 3, 5, 8])
    # rows: true cat, dog, bird, unused, background; columns: predicted, in the same order
    expected = [[1, 0, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [2, 0, 1, 0, 0]]
    assert counts == expected
    assert detection_confusion(gt, [], [0, 3, 5, 8])[0] == [0, 0, 0, 0, 2]


def test_nothing_detected_scores_zero_for_classes_with_objects():
    gt, _ = _box_set(1)
    evaluation = evaluate_coco(gt, [], ("bbox",))
    assert {name: row["bbox_AP"] for name, row in evaluation.per_class.items()} == {
        "cat": 0.0, "dog": 0.0, "bird": 0.0, "unused": None,
    }  # fmt: skip
    assert evaluation.metrics["bbox_AP"] == 0.0
    lines = per_class_table(evaluation.per_class)
    assert lines[0].split() == ["class", "objects", "box", "AP", "AP50"]
    assert lines[-1].split() == ["unused", "0", "-", "-"]
