"""`botnet detect`: the default run on generated shapes, resume, eval, predict, bad data, the CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import botnet.tasks.detection as detection
from botnet.checkpoints import load_training_state
from botnet.cli import main
from botnet.data.coco import CocoDetection
from botnet.data.shapes import SHAPE_CLASSES, ShapesSpec, write_shapes_dataset
from botnet.errors import CheckpointError, RunInterrupted
from botnet.tasks.classification import TrainingDiverged
from botnet.tasks.detection import (
    DetectConfig,
    evaluate_detector_checkpoint,
    load_detector,
    predict_detections,
    train_detector,
)
from botnet.training import engine
from botnet.training import plan as planning

# A few images and epochs: enough to exercise every file a run writes, in seconds.
TINY = dict(shapes_train_images=8, shapes_val_images=4, epochs=2, batch_size=4, eval_every=1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("detect") / "run")
    summary = train_detector(DetectConfig(**TINY, output_dir=run_dir))
    return run_dir, summary


def test_shapes_dataset_is_deterministic_and_valid(tmp_path):
    spec = ShapesSpec(train_images=6, val_images=3, seed=5)
    first = write_shapes_dataset(str(tmp_path / "a"), spec)
    second = write_shapes_dataset(str(tmp_path / "b"), spec)
    for split in ("train", "val"):
        with open(first[split][1]) as f1, open(second[split][1]) as f2:
            assert json.load(f1)["annotations"] == json.load(f2)["annotations"]
        name = sorted(os.listdir(first[split][0]))[0]
        a = np.asarray(Image.open(os.path.join(first[split][0], name)))
        b = np.asarray(Image.open(os.path.join(second[split][0], name)))
        assert (a == b).all()
    data = CocoDetection(*first["train"])
    assert data.classes == list(SHAPE_CLASSES) and not data.skipped.total()
    image, target = data[0]
    assert image.shape[1] == spec.height and spec.min_width <= image.shape[2] <= spec.max_width
    assert len(target["boxes"]) >= 1
    # Boxes are the tight boxes of the visible masks.
    for box, mask in zip(target["boxes"], target["masks"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    sizes = [a["area"] for a in json.load(open(first["train"][1]))["annotations"]]
    assert min(sizes) < 32**2 < max(sizes)  # small and larger objects


def test_default_run_writes_every_file(tiny_run):
    run_dir, summary = tiny_run
    for name in (
        "config.json",
        "metrics.csv",
        "summary.json",
        "model.safetensors",
        "last.pt",
        "predictions.png",
        "pr_curves.png",
        "confusion.png",
        "train.log",
    ):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    for key in (
        "bbox_AP",
        "bbox_AP50",
        "bbox_AP75",
        "bbox_APs",
        "bbox_APm",
        "bbox_APl",
        "segm_AP",
        "segm_AP50",
        "segm_APl",
    ):
        assert key in summary and -100.0 <= summary[key] <= 100.0
    assert summary["backbone"] == "botnet_mini" and summary["detector"] == "maskrcnn"
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["loss_mask"]) > 0 and r["bbox_AP"] != "" for r in rows)
    assert Image.open(os.path.join(run_dir, "predictions.png")).size[0] > 300
    with open(os.path.join(run_dir, "summary.json")) as f:
        assert json.load(f)["segm_AP"] == summary["segm_AP"]


def test_the_summary_scores_each_class_and_counts_every_object_once(tiny_run):
    """Per-class AP and AP50 for boxes and masks (the overall AP is their mean over the classes with objects),
    and a confusion matrix whose rows count each held-out object exactly once (found, confused or missed)."""
    run_dir, summary = tiny_run
    per_class = summary["per_class"]
    assert list(per_class) == summary["classes"] == list(SHAPE_CLASSES)
    with open(load_detector(os.path.join(run_dir, "model.safetensors"))[1]["val_annotations"]) as f:
        annotations = json.load(f)
    names = {c["id"]: c["name"] for c in annotations["categories"]}
    objects = {name: sum(names[a["category_id"]] == name for a in annotations["annotations"]) for name in per_class}
    assert {name: row["objects"] for name, row in per_class.items()} == objects
    for kind in ("bbox", "segm"):
        scored = [row[f"{kind}_AP"] for row in per_class.values() if row["objects"]]
        assert summary[f"{kind}_AP"] == pytest.approx(sum(scored) / len(scored), abs=1e-3)
    confusion = summary["confusion"]
    assert confusion["labels"] == [*SHAPE_CLASSES, "background"]
    counts = confusion["counts"]
    assert [sum(row) for row in counts[:-1]] == [objects[name] for name in SHAPE_CLASSES]
    assert counts[-1][-1] == 0
    with open(os.path.join(run_dir, "train.log")) as f:
        table = f.read().split("done: ")[1].splitlines()[1:]  # the lines after the last one's headline
    assert "class" in table[0] and "objects" in table[0] and "mask AP" in table[0]
    assert [line.split()[-6] for line in table[1:]] == list(SHAPE_CLASSES)


def test_eval_of_the_saved_model_reproduces_the_summary(tiny_run):
    run_dir, summary = tiny_run
    evaluation, meta, dataset = evaluate_detector_checkpoint(os.path.join(run_dir, "model.safetensors"))
    metrics = evaluation.metrics
    assert meta["classes"] == list(SHAPE_CLASSES)
    assert len(dataset) == TINY["shapes_val_images"]
    for key in ("bbox_AP", "bbox_AP50", "segm_AP"):
        assert metrics[key] == pytest.approx(summary[key], abs=1e-3)


def test_resume_equals_an_uninterrupted_run(tmp_path, tiny_run, monkeypatch):
    """Interrupt a run after epoch 1, resume it: the weights equal the uninterrupted run's, bit for bit."""
    run_dir, _ = tiny_run
    first = str(tmp_path / "first")
    config = DetectConfig(**TINY, output_dir=first)
    original = engine.save_training_state

    def stop_after_first(path, state):
        original(path, state)
        if state.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "save_training_state", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        train_detector(config)
    monkeypatch.undo()
    state_one = load_training_state(os.path.join(first, "last.pt"))
    assert state_one.epoch == 1
    train_detector(resume=os.path.join(first, "last.pt"))
    resumed = load_training_state(os.path.join(first, "last.pt")).model
    uninterrupted = load_training_state(os.path.join(run_dir, "last.pt")).model
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key


def test_ctrl_c_mid_epoch_resumes_to_the_same_weights(tmp_path, tiny_run, monkeypatch, capsys):
    """Ctrl-C during the first epoch's first step: the step finishes, last.pt is saved mid-epoch, and
    resuming it ends with exactly the uninterrupted run's weights."""
    run_dir, _ = tiny_run
    first = tmp_path / "first"
    real_agree, calls = engine._agree, []

    def ctrl_c_in_first_step(*args):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)
        return real_agree(*args)

    monkeypatch.setattr(engine, "_agree", ctrl_c_in_first_step)
    with pytest.raises(RunInterrupted, match=r"interrupted at epoch 1, step 1 of 2; .*detect train --resume"):
        train_detector(DetectConfig(**TINY, output_dir=str(first)))
    monkeypatch.undo()
    state = load_training_state(str(first / "last.pt"))
    assert (state.epoch, state.step) == (0, 1) and not (first / "metrics.csv").exists()
    assert main(["detect", "train", "--resume", str(first / "last.pt")]) == 0
    resumed = load_training_state(str(first / "last.pt")).model
    uninterrupted = load_training_state(os.path.join(run_dir, "last.pt")).model
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key


def test_resuming_the_other_tasks_checkpoint_is_one_line(tiny_run, capsys):
    run_dir, _ = tiny_run
    assert main(["train", "--resume", os.path.join(run_dir, "last.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "detection run's checkpoint; resume it with `botnet detect train`" in err


def test_fewer_images_than_a_batch_train_with_a_smaller_batch(tmp_path):
    summary = train_detector(
        DetectConfig(shapes_train_images=3, shapes_val_images=1, epochs=1, output_dir=str(tmp_path / "run"))
    )  # the small recipe's batch is 4
    assert summary["batch_size"] == 3
    with open(tmp_path / "run" / "config.json") as f:
        config = json.load(f)
    assert config["batch_size"] == 3 and config["lr"] == pytest.approx(1.5e-3 * 3 / 4)  # lr scaled with the batch


def test_predict_draws_and_reports(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    images_dir = os.path.join(run_dir, "data", "val", "images")
    images = [os.path.join(images_dir, n) for n in sorted(os.listdir(images_dir))[:2]]
    grey = str(tmp_path / "grey.jpg")
    Image.fromarray((np.random.default_rng(0).random((90, 140)) * 255).astype(np.uint8)).save(grey)
    out = str(tmp_path / "drawn")
    results = predict_detections(
        os.path.join(run_dir, "model.safetensors"), images + [grey], output_dir=out, score_threshold=0.0
    )
    assert len(results) == 3
    for item in results:
        assert os.path.isfile(item["drawing"])
        for det in item["detections"]:
            assert det["label"] in SHAPE_CLASSES and 0.0 <= det["score"] <= 1.0 and len(det["box"]) == 4
    assert Image.open(results[2]["drawing"]).size[1] >= 90


def test_checkpoints_of_the_other_task_are_refused(tiny_run):
    run_dir, _ = tiny_run
    from botnet.tasks.classification import load_model

    with pytest.raises(CheckpointError, match="detection model, not a classification one; use `botnet detect eval`"):
        load_model(os.path.join(run_dir, "model.safetensors"))
    with pytest.raises(FileNotFoundError):
        load_detector(os.path.join(run_dir, "missing.safetensors"))


def test_backbone_weights_train_with_frozen_norms_and_reload(tmp_path):
    """--backbone-weights: ResNet parts from a state dict file, frozen BN; the saved model rebuilds the same way."""
    from torchvision.ops import FrozenBatchNorm2d

    from botnet.models import create_model

    source = create_model("botnet_mini", num_classes=0)
    weights = str(tmp_path / "mini.pt")
    torch.save(source.state_dict(), weights)
    run = str(tmp_path / "run")
    train_detector(DetectConfig(**{**TINY, "epochs": 1}, backbone_weights=weights, output_dir=run))
    model, meta = load_detector(os.path.join(run, "model.safetensors"))
    body = model.backbone.body
    assert isinstance(body.bn1, FrozenBatchNorm2d) and meta["settings"]["frozen_batch_norm"]
    # Three trainable stages (c3..c5): the stem and c2 keep the file's weights, c4 starts from them and trains.
    torch.testing.assert_close(body.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(body.layer1[0].conv2.weight, source.layer1[0].conv2.weight)
    assert not torch.equal(body.layer3[0].conv2.weight, source.layer3[0].conv2.weight)
    assert not torch.equal(body.layer4[0].mhsa.qkv.weight, source.layer4[0].mhsa.qkv.weight)  # BoT blocks train
    assert (body.layer3[0].conv2.weight - source.layer3[0].conv2.weight).abs().max() < 0.1


def test_nan_loss_stops_with_the_part_and_the_checkpoint_named(tmp_path, monkeypatch):
    """A loss part that becomes NaN stops the run, naming the part, the step and what was kept."""
    real_loss, calls = detection._Detection.loss, []

    def nan_mask_loss_at_step_3(task, *args):
        total, parts, images = real_loss(task, *args)
        calls.append(1)
        if len(calls) == 3:  # epoch 2, step 1 (two steps per epoch)
            parts = {**parts, "loss_mask": torch.tensor(float("nan"))}
            total = sum(parts.values())
        return total, parts, images

    monkeypatch.setattr(detection._Detection, "loss", nan_mask_loss_at_step_3)
    monkeypatch.setattr(planning, "time_steps", lambda *args, amps, **kwargs: planning.StepTimes(0.0, (0.1,) * len(amps), 2))
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"loss_mask=nan at epoch 2, step 1.*last good checkpoint is kept in .*last\.pt"):
        train_detector(DetectConfig(**TINY, output_dir=str(run)))
    assert load_training_state(str(run / "last.pt")).epoch == 1


def _broken_copy(tmp_path, change) -> str:
    root = str(tmp_path / "data")
    write_shapes_dataset(root, ShapesSpec(train_images=6, val_images=2))
    ann_file = os.path.join(root, "train", "annotations.json")
    with open(ann_file) as f:
        data = json.load(f)
    change(data, root)
    with open(ann_file, "w") as f:
        json.dump(data, f)
    return root


def test_cli_bad_data_is_one_line_and_skip_bad_counts(tmp_path, capsys):
    def break_things(data, root):
        data["annotations"][0]["bbox"] = [3, 3, 0, 5]  # degenerate
        os.remove(os.path.join(root, "train", "images", data["images"][-1]["file_name"]))

    root = _broken_copy(tmp_path, break_things)
    code = main(["detect", "train", "--data", root, "--epochs", "1", "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("botnet detect train: error:") and len(err.strip().splitlines()) == 1
    assert "degenerate box (annotation 1" in err and "missing image" in err and "--skip-bad" in err
    run = str(tmp_path / "run2")
    code = main(
        ["detect", "train", "--data", root, "--epochs", "1", "--batch-size", "2", "--skip-bad", "--output-dir", run]
    )
    assert code == 0
    with open(os.path.join(run, "summary.json")) as f:
        skipped = json.load(f)["skipped"]["train"]
    assert skipped == {"degenerate_box": 1, "missing_image": 1}


def test_cli_unknown_category_and_missing_paths(tmp_path, capsys):
    def unknown(data, root):
        data["annotations"][2]["category_id"] = 99

    root = _broken_copy(tmp_path, unknown)
    assert main(["detect", "train", "--data", root, "--output-dir", str(tmp_path / "r")]) == 2
    assert "unknown category" in capsys.readouterr().err
    assert main(["detect", "train", "--data", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "r2")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["detect", "train", "--train-images", str(tmp_path)]) == 2
    assert "missing --train-annotations, --val-images, --val-annotations" in capsys.readouterr().err


def test_cli_eval_predict_and_make_data(tiny_run, tmp_path, capsys):
    run_dir, summary = tiny_run
    checkpoint = os.path.join(run_dir, "model.safetensors")
    assert main(["detect", "eval", "--checkpoint", checkpoint, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bbox_AP"] == pytest.approx(summary["bbox_AP"], abs=1e-3) and report["images"] == 4
    assert report["per_class"].keys() == summary["per_class"].keys() and report["confusion"] == summary["confusion"]
    for name, row in summary["per_class"].items():
        assert report["per_class"][name] == pytest.approx(row, abs=1e-3), name
    plots = str(tmp_path / "plots")
    assert main(["detect", "eval", "--checkpoint", checkpoint, "--output-dir", plots]) == 0
    out = capsys.readouterr().out
    assert "segm" in out and "per class:" in out and all(name in out for name in SHAPE_CLASSES)
    for name in ("pr_curves.png", "confusion.png"):
        assert Image.open(os.path.join(plots, name)).size[0] > 300, name
    image = os.path.join(
        run_dir, "data", "val", "images", sorted(os.listdir(os.path.join(run_dir, "data", "val", "images")))[0]
    )
    assert main(["detect", "predict", "--checkpoint", checkpoint, image, "--output-dir", str(tmp_path / "p")]) == 0
    assert "->" in capsys.readouterr().out
    assert main(["detect", "make-data", str(tmp_path / "d"), "--train-images", "2", "--val-images", "1"]) == 0
    assert os.path.isfile(tmp_path / "d" / "val" / "annotations.json")
    assert main(["detect", "make-data", str(tmp_path / "d")]) == 2
    assert "already holds a dataset" in capsys.readouterr().err


TWO_PROCESSES = """
import sys
from botnet.tasks.detection import DetectConfig, train_detector

train_detector(DetectConfig(shapes_train_images=16, shapes_val_images=6, epochs=2, batch_size=2, eval_every=1,
                            output_dir=sys.argv[1]))
"""


def test_two_processes_under_torchrun_report_the_ap_of_the_saved_model(tmp_path):
    """Detection under torchrun (gloo on CPU): each rank trains on its shard and detects on its share of the
    held-out images; the AP they report together is the AP of one process evaluating the saved model. The
    learning rate is the recipe's scaled to the global batch."""
    script = tmp_path / "detect.py"
    script.write_text(TWO_PROCESSES)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(run_dir)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    # the small recipe's 1.5e-3 is for 4 images a step: 2 processes of 2 images train at 1.5e-3
    assert json.loads((run_dir / "config.json").read_text())["lr"] == pytest.approx(1.5e-3 * 2 * 2 / 4) == summary["lr"]
    state = load_training_state(str(run_dir / "last.pt"))
    assert state.world_size == 2 and len(state.metrics) == 2
    # batches of the run's size, as its evaluation made them (padding to a batch's largest image moves AP a little)
    evaluation, _, dataset = evaluate_detector_checkpoint(str(run_dir / "model.safetensors"), batch_size=2)
    metrics = evaluation.metrics
    assert len(dataset) == 6
    for key in ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"):
        assert metrics[key] == pytest.approx(summary[key], abs=1e-3), key


@pytest.mark.parametrize("scale", [(0.3, 0.3), (2.0, 2.0), (0.1, 2.0)])
def test_large_scale_jitter_keeps_boxes_masks_and_labels_together(tmp_path, scale):
    root = str(tmp_path / "data")
    write_shapes_dataset(root, ShapesSpec(train_images=4, val_images=1))
    config = DetectConfig(data=root, min_size=96, max_size=96, scale_jitter=scale).resolve(1)
    dataset = CocoDetection(
        os.path.join(root, "train", "images"), os.path.join(root, "train", "annotations.json"),
        transforms=detection.train_transforms(config),
    )  # fmt: skip
    torch.manual_seed(0)
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert image.shape[-2:] == (96, 96)
        boxes, masks = target["boxes"], target["masks"]
        assert len(boxes) == len(target["labels"]) == len(masks) and masks.shape[-2:] == (96, 96)
        assert boxes.canvas_size == (96, 96)
        if len(boxes):
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            assert boxes.min() >= 0 and boxes.max() <= 96
            for box, mask in zip(boxes, masks):  # each kept mask lies inside its box
                ys, xs = torch.nonzero(mask, as_tuple=True)
                if len(xs):
                    assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1
    assert DetectConfig(recipe="paper").resolve(1).scale_jitter == (0.1, 2.0)


def test_amp_and_clipping_train_a_detector(tmp_path):
    summary = train_detector(DetectConfig(**{**TINY, "epochs": 1}, amp=True, clip_grad=1.0, output_dir=str(tmp_path / "run")))
    assert summary["bbox_AP"] >= 0 and json.loads((tmp_path / "run" / "config.json").read_text())["amp"] is True


def test_export_writes_the_detectors_backbone_and_fpn(tiny_run, tmp_path, capsys):
    """`botnet export` on a detector: the BoTNet + FPN (the part with static shapes) as ONNX, equal to the
    detector's own backbone in onnxruntime, with what a deployment needs to prepare images."""
    ort = pytest.importorskip("onnxruntime")
    from botnet.export import onnx_metadata

    run_dir, _ = tiny_run
    output = str(tmp_path / "backbone.onnx")
    assert main(["export", "--checkpoint", os.path.join(run_dir, "model.safetensors"), "--output", output]) == 0
    assert "RoI heads" in capsys.readouterr().out
    detector, meta = load_detector(os.path.join(run_dir, "model.safetensors"))
    session = ort.InferenceSession(output, providers=["CPUExecutionProvider"])
    images = torch.rand(2, 3, 96, 160)
    got = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = list(detector.backbone(images).values())
    assert len(got) == len(expected) == len(detector.backbone.body.return_layers) + 1
    for a, b in zip(got, expected):
        assert a.shape == b.shape and np.abs(a - b.numpy()).max() <= 1e-4 * np.abs(b.numpy()).max()
    written = onnx_metadata(output)
    assert written["classes"] == meta["classes"] and written["min_size"] == detector.transform.min_size[0]


def test_detection_study_trains_each_backbone_variant(tmp_path, capsys):
    """`botnet detect ablate`: the baseline study on a tiny shapes set; each variant's backbone is rebuilt
    from its run (the ResNet has no attention), and study.csv reports box and mask AP."""
    from botnet.tasks.ablate import fit_study, run_folder, run_study, study_variants

    out = str(tmp_path / "study")
    base = fit_study(DetectConfig(**dict(TINY, epochs=1)))
    rows = run_study(base, "baseline", 1, out, log=lambda line: None)  # trained by the task's own train
    assert [r["variant"] for r in rows] == ["BoTNet", "ResNet (no BoT blocks)"]
    assert all({"box_ap_mean", "box_ap_std", "mask_ap_mean"} <= set(r) for r in rows)
    assert rows[1]["params"] > rows[0]["params"]  # BoT blocks have fewer parameters than the 3x3 convs they replace
    resnet = study_variants("baseline", base.backbone)[1]
    detector, meta = load_detector(os.path.join(run_folder(out, resnet, 0), "model.safetensors"))
    assert meta["settings"]["model_overrides"] == {"bot_blocks": [0, 0, 0, 0]}
    assert not any(type(m).__name__ == "MHSA" for m in detector.modules())
    with open(os.path.join(out, "study.csv")) as f:
        assert next(csv.DictReader(f))["box_ap_runs"] == f"{rows[0]['box_ap_mean']:.2f}"


def test_time_budget_plans_a_detection_run(tmp_path, steady_steps):
    run_dir = tmp_path / "budget"
    steady_steps(0.5)  # 6 steps and 2 held-out images: about 3 s an epoch
    config = DetectConfig(shapes_train_images=12, shapes_val_images=2, batch_size=2, time_budget=0.2, output_dir=str(run_dir))
    summary = train_detector(config)
    plan = summary["plan"]
    assert plan["budget_seconds"] == 12.0 and plan["step_seconds"] == 0.5
    per_epoch = 6 * 0.5 + plan["eval_seconds"] / 5  # the small recipe evaluates every 5th epoch (and the last)
    assert summary["steps"] == plan["steps"] == int(plan["seconds_left"] * 0.93 / per_epoch * 6) > 6
    assert summary["epochs"] == plan["epochs"] == math.ceil(plan["steps"] / 6) and plan["evaluations"] == 1
    with open(run_dir / "config.json") as f:
        assert json.load(f)["epochs"] == plan["epochs"]  # a resume keeps the plan
    assert main(["detect", "train", "--time-budget", "-1", "--output-dir", str(tmp_path / "neg")]) == 2


def test_an_export_without_val_trains_on_a_remembered_split_and_eval_scores_it_and_the_test_split(tmp_path, capsys):
    """LabelImg's VOC folders train/ and test/ (no val): val is held out of train and listed in heldout.txt;
    `detect eval` of the run scores exactly the listed images, and `--split test` the export's test split."""
    from botnet.data.holdout import read_heldout
    from tests.data.tool_exports import labelimg_voc_zips

    export = labelimg_voc_zips(tmp_path / "export")
    run = tmp_path / "run"
    summary = train_detector(DetectConfig(data=str(export.data), detector="fasterrcnn", epochs=1, batch_size=2,
                                          min_size=64, max_size=96, output_dir=str(run)))
    held = read_heldout(str(run / "heldout.txt"))
    assert held and summary["val_images"] == len(held)
    assert "the export has no val split: held out" in (run / "train.log").read_text()
    checkpoint = str(run / "model.safetensors")
    _, _, dataset = evaluate_detector_checkpoint(checkpoint)
    scored = {os.path.relpath(os.path.join(dataset.image_dir, e["file_name"]), export.data)
              for e in dataset.coco_gt["images"]}
    assert scored == held
    (run / "heldout.txt").write_text(sorted(held)[0] + "\n")  # the list is read, not chosen again
    assert len(evaluate_detector_checkpoint(checkpoint)[2]) == 1
    capsys.readouterr()
    assert main(["detect", "eval", "--checkpoint", checkpoint, "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4


def test_tiles_train_on_tiles_and_the_saved_detector_detects_tile_by_tile(tmp_path, monkeypatch, capsys):
    """--tiles 64 16: the run trains on the tiles that hold objects and scores the held-out images tile by
    tile; the saved detector keeps its tiles, so `detect eval` reproduces the summary and predict detects
    tile by tile, in the whole image's pixels."""
    calls = []
    tiled = detection.detect_tiled

    def spy(model, image, size, overlap, batch_size=4):
        calls.append((size, overlap))
        return tiled(model, image, size, overlap, batch_size=batch_size)

    monkeypatch.setattr(detection, "detect_tiled", spy)
    run = str(tmp_path / "run")
    config = DetectConfig(shapes_train_images=6, shapes_val_images=2, epochs=1, batch_size=4, tiles=(64, 16), output_dir=run)
    summary = train_detector(config)
    assert calls and set(calls) == {(64, 16)}
    with open(os.path.join(run, "train.log")) as f:
        assert "training tiles / 2 held-out images" in f.read()
    calls.clear()
    evaluation, meta, _ = evaluate_detector_checkpoint(os.path.join(run, "model.safetensors"))
    assert meta["settings"]["tiles"] == [64, 16] and len(calls) == 2
    assert evaluation.metrics["bbox_AP"] == pytest.approx(summary["bbox_AP"], abs=1e-3)
    calls.clear()
    folder = os.path.join(run, "data", "val", "images")
    path = os.path.join(folder, sorted(os.listdir(folder))[0])
    width, height = Image.open(path).size
    [found] = predict_detections(os.path.join(run, "model.safetensors"), [path], score_threshold=0.0)
    assert calls == [(64, 16)] and found["detections"]
    assert all(0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height for x0, y0, x1, y1 in (d["box"] for d in found["detections"]))
    for flags, error in ((["--tiles", "64", "40"], "between 0 and half the tile (32 px), got 40"),
                         (["--tiles", "64", "16", "--scale-jitter", "0.5", "1.5"], "each crop the images their own way: give one")):  # fmt: skip
        assert main(["detect", "train", *flags, "--output-dir", str(tmp_path / "bad")]) == 2
        assert error in capsys.readouterr().err
