"""The run pipeline every task shares: settings resolved for the processes that train."""

import json
import os
import subprocess
import sys

import pytest


def test_the_learning_rate_of_a_two_process_run_is_scaled_to_its_global_batch(tmp_path):
    """The paper's recipe is SGD at 0.1 per 256 images: 2 processes of 64 images train at 0.05. (The detection
    task's own torchrun test reads its rate the same way.)"""
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "botnet",
        "train", "--recipe", "paper", "--model", "botnet_tiny", "--epochs", "1", "--batch-size", "64",
        "--no-randaugment", "--output-dir", str(run_dir),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    config = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert config["lr"] == pytest.approx(0.1 * 64 * 2 / 256) == summary["lr"]
    assert summary["world_size"] == 2 and config["optimizer"] == "sgd"
    assert "lr 0.05;" in result.stdout
