"""The classification job end to end: digits, image folders, resume, safety, DDP."""

import csv
import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from botnet.checkpoints import load_training_state
from botnet.cli import main
from botnet.data.digits import digits_splits
from botnet.data.transforms import eval_transform_for
from botnet.errors import ConfigError, DatasetError
from botnet.files import TEMP_SUFFIX
from botnet.tasks import TrainConfig, TrainingDiverged, evaluate_checkpoint, predict, train
from botnet.tasks.classification import load_model
from botnet.training import engine

RUN_FILES = {
    "config.json", "metrics.csv", "summary.json", "model.safetensors", "last.pt", "curves.png", "confusion.png",
    "train.log",
}  # fmt: skip


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("digits") / "run")
    summary = train(TrainConfig(epochs=4, output_dir=run_dir))
    return run_dir, summary


def test_default_run_writes_everything_and_learns(digits_run):
    run_dir, summary = digits_run
    assert RUN_FILES <= set(os.listdir(run_dir))
    with open(os.path.join(run_dir, "summary.json")) as f:
        assert json.load(f) == summary
    for key in ("model", "img_size", "dataset", "epochs", "val_top1", "val_top5", "wall_seconds", "world_size"):
        assert key in summary
    assert summary["model"] == "botnet_tiny" and summary["dataset"] == "digits" and summary["world_size"] == 1
    assert summary["val_images"] == 360  # the fixed held-out split
    assert summary["val_top1"] > 70, "four epochs on the digits should already be far above chance (10%)"
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "epoch,train_loss,val_loss,val_top1,val_top5,lr,seconds" and len(lines) == 5
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["optimizer"] == "adamw" and config["img_size"] == 24 and config["epochs"] == 4
    state = torch.load(os.path.join(run_dir, "last.pt"), weights_only=True)
    assert state["epoch"] == 4 and state["meta"]["classes"] == [str(i) for i in range(10)]
    with safe_open(os.path.join(run_dir, "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["botnet"])["model"] == "botnet_tiny"


def test_digits_split_is_fixed_and_stratified():
    train_a, test_a = digits_splits()
    train_b, test_b = digits_splits()
    assert torch.equal(test_a.labels, test_b.labels) and torch.equal(test_a.images, test_b.images)
    assert len(train_a) + len(test_a) == 1797
    counts = torch.bincount(test_a.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_eval_split_test_of_data_without_one_is_refused(digits_run, capsys):
    run_dir, _ = digits_run
    assert main(["eval", "--checkpoint", os.path.join(run_dir, "model.safetensors"), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the digits have no test split" in err, err
    assert not os.path.exists(os.path.join(run_dir, "heldout.txt"))  # the digits' split is fixed


def test_eval_and_predict_round_trip(digits_run, tmp_path, capsys):
    run_dir, summary = digits_run
    for name in ("model.safetensors", "last.pt"):
        result, meta, source = evaluate_checkpoint(os.path.join(run_dir, name))
        assert source == "digits" and result.count == 360
        assert result.top1 == pytest.approx(summary["val_top1"], abs=1e-3)
        assert int(result.confusion.sum()) == 360 and int(result.confusion.diag().sum()) == round(result.top1 * 3.6)
    assert main(["eval", "--checkpoint", os.path.join(run_dir, "model.safetensors"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["top1"] == pytest.approx(summary["val_top1"], abs=1e-3) and len(report["confusion"]) == 10

    # predict on PNG files of held-out digits gives what the model gives on the same pixels
    _, test = digits_splits()
    paths = []
    for i in range(4):
        path = str(tmp_path / f"digit{i}.png")
        Image.fromarray(test.images[i, 0].numpy(), mode="L").save(path)
        paths.append(path)
    model, meta = load_model(os.path.join(run_dir, "model.safetensors"))
    test.transform = eval_transform_for(meta)
    with torch.no_grad():
        expected = model(torch.stack([test[i][0] for i in range(4)])).softmax(-1)
    results = predict(os.path.join(run_dir, "model.safetensors"), paths, top_k=3)
    for item, probs in zip(results, expected):
        assert len(item["predictions"]) == 3
        top = item["predictions"][0]
        assert top["label"] == str(int(probs.argmax()))
        assert top["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
    assert main(["predict", "--checkpoint", os.path.join(run_dir, "model.safetensors"), *paths[:2], "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def _read_weights(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


RESUME_SETTINGS = dict(epochs=3, batch_size=128, ema_decay=0.9, seed=3)  # 11 steps per epoch on the digits


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    whole = str(tmp_path_factory.mktemp("whole") / "run")
    train(TrainConfig(output_dir=whole, **RESUME_SETTINGS))
    return whole


def _assert_same_run(whole, resumed):
    a, b = _read_weights(os.path.join(whole, "model.safetensors")), _read_weights(os.path.join(resumed, "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with open(os.path.join(whole, "summary.json")) as f, open(os.path.join(resumed, "summary.json")) as g:
        assert json.load(f)["val_top1"] == json.load(g)["val_top1"]
    with open(os.path.join(whole, "metrics.csv")) as f, open(os.path.join(resumed, "metrics.csv")) as g:
        expected, got = f.read().splitlines(), g.read().splitlines()
    assert len(got) == 4  # header and all three epochs
    for row_a, row_b in zip(expected[1:], got[1:]):  # losses and accuracy equal; seconds differ
        assert row_a.split(",")[:6] == row_b.split(",")[:6]


def test_resume_equals_uninterrupted(uninterrupted, tmp_path, monkeypatch):
    interrupted = str(tmp_path / "interrupted")
    real_epoch = engine._Loop.train_epoch

    def stop_at_second_epoch(loop, epoch, *args):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(loop, epoch, *args)

    monkeypatch.setattr(engine._Loop, "train_epoch", stop_at_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(output_dir=interrupted, **RESUME_SETTINGS))
    assert load_training_state(os.path.join(interrupted, "last.pt")).epoch == 1
    assert not os.path.exists(os.path.join(interrupted, "model.safetensors"))
    monkeypatch.setattr(engine._Loop, "train_epoch", real_epoch)
    train(resume=os.path.join(interrupted, "last.pt"))
    _assert_same_run(uninterrupted, interrupted)


def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_exactly(uninterrupted, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    real_agree, steps = engine._agree, []

    def ctrl_c_at_step_16(*args):
        steps.append(1)
        if len(steps) == 16:  # epoch 2, step 5
            signal.raise_signal(signal.SIGINT)
        return real_agree(*args)

    monkeypatch.setattr(engine, "_agree", ctrl_c_at_step_16)
    handler = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN where a shell started us in the background
    flags = ["--epochs", "3", "--batch-size", "128", "--ema-decay", "0.9", "--seed", "3"]
    assert main(["train", *flags, "--output-dir", str(run_dir)]) == 130
    err = capsys.readouterr().err.strip()
    last_pt = str(run_dir / "last.pt")
    assert err == (
        f"botnet train: interrupted at epoch 2, step 5 of 11; {last_pt} is saved: "
        f"continue with `botnet train --resume {last_pt}`"
    )
    state = load_training_state(last_pt)
    assert (state.epoch, state.step) == (1, 5) and len(steps) == 16, "the step under way was finished"
    assert signal.getsignal(signal.SIGINT) is handler, "Ctrl-C works as before afterwards"

    monkeypatch.setattr(engine, "_agree", real_agree)
    (run_dir / f".last.pt.killed{TEMP_SUFFIX}").write_bytes(b"left by a killed writer")
    assert main(["train", "--resume", last_pt]) == 0
    assert not any(name.endswith(TEMP_SUFFIX) for name in os.listdir(run_dir))
    _assert_same_run(uninterrupted, str(run_dir))


def test_disk_full_mid_run_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    real_save, saves = torch.save, []

    def full_at_second_save(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            f.write(b"the first bytes of a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_second_save)
    assert main(["train", "--epochs", "3", "--batch-size", "256", "--output-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err.strip()
    last_pt = str(run_dir / "last.pt")
    assert len(err.splitlines()) == 1
    assert f"no space left to write {last_pt}" in err and f"--resume {last_pt}" in err, err
    assert load_training_state(last_pt).epoch == 1  # intact
    assert sorted(os.listdir(run_dir)) == [".lock", "config.json", "last.pt", "metrics.csv", "train.log"]


def test_existing_run_is_not_overwritten(digits_run):
    run_dir, _ = digits_run
    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        train(TrainConfig(epochs=1, output_dir=run_dir))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    run_dir = str(tmp_path / "run")
    real_epoch = engine._Loop.train_epoch

    def poison_second_epoch(loop, epoch, *args):
        if epoch == 1:
            with torch.no_grad():
                loop.model.fc.weight.fill_(float("nan"))
        return real_epoch(loop, epoch, *args)

    monkeypatch.setattr(engine._Loop, "train_epoch", poison_second_epoch)
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2, step 1.*last good checkpoint"):
        train(TrainConfig(epochs=3, batch_size=256, output_dir=run_dir))
    state = load_training_state(os.path.join(run_dir, "last.pt"))
    assert state.epoch == 1
    assert all(torch.isfinite(v).all() for v in state.model.values() if v.is_floating_point())


def _truncated_jpeg(path):
    """A JPEG cut short: its header is intact (PIL's verify() passes it), its pixels are not all there."""
    pixels = (torch.rand(48, 64, 3) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_damaged_checkpoints_are_one_line_errors(digits_run, tmp_path, capsys):
    """An empty last.pt, a safetensors file without our metadata, and one whose metadata lacks a field."""
    from safetensors.torch import save_file

    run_dir, _ = digits_run
    empty = tmp_path / "last.pt"
    empty.write_bytes(b"")
    plain = str(tmp_path / "plain.safetensors")
    save_file({"w": torch.zeros(2)}, plain)
    partial = str(tmp_path / "partial.safetensors")
    weights = _read_weights(os.path.join(run_dir, "model.safetensors"))
    save_file(weights, partial, metadata={"botnet": json.dumps({"classes": ["a"]})})
    cases = [
        (["train", "--resume", str(empty)], f"{empty} is empty"),
        (["predict", "--checkpoint", str(empty), "x.png"], f"{empty} is empty"),
        (["eval", "--checkpoint", plain], "has no botnet metadata: it was not written by `botnet train`"),
        (["predict", "--checkpoint", partial, "x.png"], "its metadata has no 'model'"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def _image_folder(root, classes=("cat", "dog"), per_class=6):
    """A small real image folder: colour and grey images of different sizes and formats."""
    colours = {"cat": (220, 40, 40), "dog": (40, 40, 220), "owl": (40, 200, 40)}
    for split in ("train", "val"):
        for c in classes:
            os.makedirs(root / split / c, exist_ok=True)
            for i in range(per_class):
                size = (20 + 7 * i, 30 + 3 * i)
                image = Image.new("RGB", size, colours[c])
                if i % 3 == 0:
                    image.convert("L").save(root / split / c / f"{i}.png")
                else:
                    image.save(root / split / c / f"{i}.jpg")
    return root


def test_image_folder_train_eval_predict(tmp_path, capsys):
    data = _image_folder(tmp_path / "data")
    run_dir = str(tmp_path / "run")
    summary = train(TrainConfig(data=str(data), epochs=2, batch_size=4, output_dir=run_dir))
    # fitted: the median short side of the 12 training images is 36 px, so 40
    assert summary["num_classes"] == 2 and summary["val_images"] == 12 and summary["img_size"] == 40
    result, meta, source = evaluate_checkpoint(os.path.join(run_dir, "model.safetensors"), str(data))
    assert source.endswith("val") and result.top1 == pytest.approx(summary["val_top1"], abs=1e-3)
    assert not os.path.exists(os.path.join(run_dir, "heldout.txt"))  # the folder has its own val split
    shutil.copytree(data / "val", data / "Test")  # a test split beside it: --split test scores it
    result, _, source = evaluate_checkpoint(os.path.join(run_dir, "model.safetensors"), split="test")
    assert source == str(data / "Test") and result.count == 12
    assert main(["predict", "--checkpoint", os.path.join(run_dir, "last.pt"), str(data / "val" / "dog" / "0.png")]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith(str(data / "val" / "dog" / "0.png") + ": ") and "cat" in line and "dog" in line


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: os.rename(d / "val", d / "evaluation"), r"mixes split folders \(train\) with class folders \(evaluation\)"),
        (lambda d: [os.remove(p) for p in (d / "train" / "dog").iterdir()], "class 'dog' has no readable images"),
        (lambda d: _image_folder(d, classes=("owl",)) and shutil.rmtree(d / "val" / "owl"), r"only in train: \['owl'\]"),
        (lambda d: (d / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg"), "broken.jpg"),
        (lambda d: (d / "val" / "dog" / "notes.txt").write_text("hello"), "notes.txt"),
        (lambda d: _truncated_jpeg(d / "train" / "dog" / "cut.jpg"), r"cut\.jpg \(OSError: image file is truncated"),
    ],
)
def test_bad_image_folders_fail_before_training(tmp_path, damage, match):
    data = _image_folder(tmp_path / "data")
    damage(data)
    with pytest.raises(ValueError, match=match):
        train(TrainConfig(data=str(data), epochs=1, batch_size=4, output_dir=str(tmp_path / "run")))
    assert not os.path.exists(tmp_path / "run" / "last.pt")


def test_skip_bad_images_counts_them(tmp_path):
    data = _image_folder(tmp_path / "data")
    (data / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    (data / "val" / "dog" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    _truncated_jpeg(data / "train" / "dog" / "cut.jpg")
    summary = train(
        TrainConfig(data=str(data), epochs=1, batch_size=4, skip_bad=True, output_dir=str(tmp_path / "run"))
    )
    assert summary["skipped_bad_images"] == 3 and summary["val_images"] == 12
    with open(tmp_path / "run" / "train.log") as f:
        assert "skipped 3 unreadable file(s)" in f.read()


def test_a_folder_smaller_than_a_batch_trains(tmp_path):
    data = _image_folder(tmp_path / "data", per_class=3)
    summary = train(TrainConfig(data=str(data), epochs=1, output_dir=str(tmp_path / "run")))  # the recipe's batch is 64
    assert summary["batch_size"] == 6 and summary["val_images"] == 6
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["batch_size"] == 6
    with open(tmp_path / "run" / "train.log") as f:
        assert "batches of 6 per process instead of 64" in f.read()


def test_one_training_image_is_refused_before_anything_is_written(tmp_path):
    data = _image_folder(tmp_path / "data", per_class=1, classes=("cat",))
    with pytest.raises(DatasetError, match="1 image.*at least 2"):
        train(TrainConfig(data=str(data), epochs=1, output_dir=str(tmp_path / "run")))
    assert not os.path.exists(tmp_path / "run")


def test_train_takes_img_size_from_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", "--img-size", "32", "--epochs", "1", "--batch-size", "256", "--output-dir", str(run_dir)]) == 0
    with open(run_dir / "summary.json") as f:
        assert json.load(f)["img_size"] == 32


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["train", "--data", "/no/such/folder"], "data folder /no/such/folder does not exist"),
        (["train", "--model", "botnet_tyni"], "did you mean botnet_tiny"),
        (["train", "--resume", "run/last.pt", "--lr", "0.1"], "drop --lr"),
        (["train", "--resume", "/no/run/last.pt"], "no checkpoint at /no/run/last.pt"),
        (["train", "--epochs", "0"], "--epochs must be positive"),
        (["eval", "--checkpoint", "/no/model.safetensors"], "no checkpoint"),
        (["predict", "--checkpoint", "/no/model.safetensors", "a.png"], "no checkpoint"),
    ],
)
def test_cli_errors_are_one_line(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert __import__("re").search(match, err), err


def test_predict_names_unreadable_image(digits_run, tmp_path, capsys):
    run_dir, _ = digits_run
    bad = tmp_path / "bad.png"
    bad.write_text("text")
    assert main(["predict", "--checkpoint", os.path.join(run_dir, "model.safetensors"), str(bad)]) == 2
    assert f"cannot read image {bad}" in capsys.readouterr().err


DDP_FLAGS = ["--epochs", "2", "--batch-size", "32", "--no-amp"]  # 22 steps per epoch and process on the digits; float32 in every run compared


def _torchrun(*args, timeout=600):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU processes, GPU or not
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    result = _torchrun("-m", "botnet", "train", *DDP_FLAGS, "--output-dir", str(run_dir))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return run_dir


def test_ddp_two_cpu_processes(ddp_run):
    with open(ddp_run / "summary.json") as f:
        summary = json.load(f)
    assert summary["world_size"] == 2 and summary["val_images"] == 360
    # The metrics were reduced across both ranks: a single process evaluating the saved model agrees.
    evaluated, _, _ = evaluate_checkpoint(str(ddp_run / "model.safetensors"))
    assert evaluated.top1 == pytest.approx(summary["val_top1"], abs=1e-3)
    assert summary["val_top1"] > 25  # two short epochs: well above chance (10%)


CTRL_C_ON_RANK_1 = """
import os, signal, sys
from botnet.cli import main
from botnet.training import engine

real_agree, calls = engine._agree, []

def agree(*args):
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 8:
        signal.raise_signal(signal.SIGINT)  # only this rank is asked to stop
    return real_agree(*args)

engine._agree = agree
sys.exit(main(sys.argv[1:]))
"""


def test_ddp_ranks_stop_together_and_resume_exactly(ddp_run, tmp_path, capsys):
    """Ctrl-C reaching one rank: both stop after the same step, rank 0 saves every rank's random state, and
    resuming under torchrun ends with the uninterrupted run's weights."""
    script = tmp_path / "ctrl_c_on_rank_1.py"
    script.write_text(CTRL_C_ON_RANK_1)
    run_dir = tmp_path / "run"
    result = _torchrun(str(script), "train", *DDP_FLAGS, "--output-dir", str(run_dir))
    assert result.returncode != 0 and "interrupted at epoch 1, step 8 of 22" in result.stderr, result.stderr[-3000:]
    state = load_training_state(str(run_dir / "last.pt"))
    assert (state.epoch, state.step, state.world_size, len(state.rng)) == (0, 8, 2, 2)
    assert not torch.equal(state.rng[0]["cpu"], state.rng[1]["cpu"])

    assert main(["train", "--resume", str(run_dir / "last.pt")]) == 2  # one process cannot continue it
    assert "written by a run of 2 process(es); resume it with the same number" in capsys.readouterr().err
    result = _torchrun("-m", "botnet", "train", "--resume", str(run_dir / "last.pt"))
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = _read_weights(str(ddp_run / "model.safetensors")), _read_weights(str(run_dir / "model.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _worker_pids(torchrun_pid: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes (read from their environment)."""
    workers = {}
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            if parent != torchrun_pid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        except (OSError, ValueError, IndexError):
            continue
        if b"RANK" in env:
            workers[int(env[b"RANK"])] = int(pid)
    return workers


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds torchrun's workers through /proc")
def test_killed_worker_is_restarted_and_the_run_continues_exactly(ddp_run, tmp_path):
    """Under torchrun --max-restarts, a worker killed in epoch 2 takes the group down; torchrun restarts it,
    and the restarted workers continue from the run's own last.pt (no flag), ending with the weights of an
    uninterrupted run."""
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--max-restarts", "1",
        "-m", "botnet", "train", *DDP_FLAGS, "--output-dir", str(run_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU processes, GPU or not
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as torchrun:
        killed = False
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and torchrun.poll() is None:
            if (run_dir / "metrics.csv").exists() and not killed:  # epoch 1 is saved: kill rank 1 in epoch 2
                time.sleep(1.0)
                workers = _worker_pids(torchrun.pid)
                if 1 in workers:
                    os.kill(workers[1], signal.SIGKILL)
                    killed = True
            time.sleep(0.2)
        output, _ = torchrun.communicate(timeout=300)
    assert killed and torchrun.returncode == 0, output[-3000:]
    assert "resuming" in output and "at epoch 2" in output, output[-3000:]
    a, b = _read_weights(str(ddp_run / "model.safetensors")), _read_weights(str(run_dir / "model.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_restart_never_continues_another_run(digits_run, monkeypatch):
    """What a restarted worker finds must be its own run: other settings in the folder are refused."""
    run_dir, _ = digits_run
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    with pytest.raises(ValueError, match="holds a run with other settings \\(epochs\\)"):
        train(TrainConfig(epochs=7, output_dir=run_dir))



def test_folder_with_workers_resumes_mid_epoch_exactly(tmp_path, monkeypatch):
    """Random crops and flips drawn in two worker processes: a run stopped mid-epoch and resumed ends with
    the weights of an uninterrupted one (each sample's augmentation is seeded by epoch and index, not by
    the worker that happens to load it)."""
    data = _image_folder(tmp_path / "data", per_class=12)
    settings = dict(data=str(data), epochs=2, batch_size=4, workers=2, img_size=32)
    train(TrainConfig(**settings, output_dir=str(tmp_path / "whole")))
    real_agree, calls = engine._agree, []

    def ctrl_c_at_step_3(*args):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)
        return real_agree(*args)

    monkeypatch.setattr(engine, "_agree", ctrl_c_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**settings, output_dir=str(tmp_path / "stopped")))
    monkeypatch.setattr(engine, "_agree", real_agree)
    assert load_training_state(str(tmp_path / "stopped" / "last.pt")).step == 3
    train(resume=str(tmp_path / "stopped" / "last.pt"))
    a = _read_weights(str(tmp_path / "whole" / "model.safetensors"))
    b = _read_weights(str(tmp_path / "stopped" / "model.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_extends_a_finished_run(digits_run, tmp_path, capsys):
    """--resume with more --epochs continues a finished run: the later epochs are trained and recorded."""
    source, _ = digits_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    assert main(["train", "--resume", str(run_dir / "last.pt"), "--epochs", "5"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 5 and json.loads((run_dir / "config.json").read_text())["epochs"] == 5
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 6  # header and five epochs
    assert main(["train", "--resume", str(run_dir / "last.pt"), "--epochs", "3"]) == 2
    assert "has finished 5 epochs; give at least that many" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir / "last.pt"), "--lr", "1"]) == 2


def test_tensorboard_scalars_equal_the_metrics_file(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    train(TrainConfig(epochs=2, batch_size=256, tensorboard=True, output_dir=str(run_dir)))
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    for name in ("train_loss", "val_top1", "lr"):
        scalars = events.Scalars(name)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([float(r[name]) for r in rows], rel=1e-6)


def test_hflip_defaults_to_photos_and_can_be_set(tmp_path):
    from botnet.data import load_classification_data

    def flips(transform) -> bool:
        return transform.hflip

    folder = str(_image_folder(tmp_path / "data"))
    assert TrainConfig().resolve(1).hflip is False and TrainConfig(data=folder).resolve(1).hflip is True
    assert TrainConfig(data=folder, hflip=False).resolve(1).hflip is False
    assert flips(load_classification_data(folder, 24).train.transform)
    assert not flips(load_classification_data(folder, 24, hflip=False).train.transform)
    assert not flips(load_classification_data(None, 24).train.transform)
    assert flips(load_classification_data(None, 24, hflip=True).train.transform)
    from botnet.cli import build_parser

    assert build_parser().parse_args(["train", "--no-hflip"]).hflip is False


def test_time_budget_plans_the_steps_and_the_schedule_ends_on_time(tmp_path, steady_steps):
    run_dir = str(tmp_path / "budget")
    steady_steps(0.25)  # 22 full batches and the evaluation of 360 images: about 6 s an epoch
    summary = train(TrainConfig(time_budget=0.25, batch_size=64, output_dir=run_dir))
    plan = summary["plan"]
    assert plan["budget_seconds"] == 15.0 and plan["step_seconds"] == 0.25
    assert plan["eval_seconds"] == pytest.approx(360 / 64 * 0.25 / 3)
    assert 0 < plan["seconds_left"] < 0.97 * 15.0  # until the deadline, from after the data was read and steps timed
    per_epoch = 22 * 0.25 + plan["eval_seconds"]  # evaluated every epoch
    assert plan["steps"] == int(plan["seconds_left"] * 0.93 / per_epoch * 22) and plan["steps"] > 22
    assert summary["steps"] == plan["steps"] and summary["epochs"] == plan["epochs"] == math.ceil(plan["steps"] / 22)
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["epochs"] == plan["epochs"]  # a resume keeps the plan
    assert config["max_steps"] == (plan["steps"] if plan["steps"] % 22 else None)
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == plan["epochs"] and float(rows[-1]["lr"]) < 1e-9  # the cosine ends with the last step


def test_epochs_given_with_a_time_budget_are_the_most_it_plans(tmp_path, steady_steps):
    steady_steps(0.25)  # 2 epochs fit in 15 s (as above); 1 is asked for
    summary = train(TrainConfig(time_budget=0.25, epochs=1, batch_size=64, output_dir=str(tmp_path / "run")))
    assert summary["plan"]["epochs"] == summary["epochs"] == 1
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_time_budget_errors(tmp_path):
    with pytest.raises(ConfigError, match="more than the time_budget"):
        train(TrainConfig(time_budget=0.0001, output_dir=str(tmp_path / "b")))
