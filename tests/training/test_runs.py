"""Run folders: a new run never writes over another, a resumed one may grow but never shrink, a restarted
worker continues only its own run."""

import os

import pytest

from botnet.checkpoints import TrainState
from botnet.errors import ConfigError
from botnet.tasks import TrainConfig
from botnet.training.runs import extend_epochs, open_run_dir, same_settings


def _state(epoch: int) -> TrainState:
    return TrainState(config={}, meta={}, epoch=epoch, model={}, optimizer={}, scheduler={}, metrics=[],
                      wall_seconds=0.0, train_seconds=0.0, train_images=0)  # fmt: skip


def test_a_folder_holding_a_run_is_refused(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds a run; continue it with --resume"):
        with open_run_dir(str(tmp_path), resuming=False, writer=True):
            pass


def test_a_resumed_folder_loses_the_leftovers_of_a_killed_writer(tmp_path):
    from botnet.files import TEMP_SUFFIX

    leftover = tmp_path / f".last.pt.x{TEMP_SUFFIX}"
    leftover.write_bytes(b"half a checkpoint")
    with open_run_dir(str(tmp_path), resuming=True, writer=True):
        assert not leftover.exists()
    assert os.path.exists(tmp_path / ".lock")


def test_epochs_extend_but_never_undo_finished_ones():
    config = TrainConfig(epochs=4)
    assert extend_epochs(config, _state(3), None, "last.pt") is config
    assert extend_epochs(config, _state(3), 10, "last.pt").epochs == 10
    with pytest.raises(ConfigError, match="has finished 3 epochs; give at least that many"):
        extend_epochs(config, _state(3), 2, "last.pt")


def test_a_restarted_worker_continues_only_a_run_of_its_own_settings():
    same_settings(TrainConfig(epochs=4, output_dir="a"), TrainConfig(epochs=4, output_dir="b"), "last.pt")
    with pytest.raises(ConfigError, match=r"other settings \(lr\)"):
        same_settings(TrainConfig(lr=0.1), TrainConfig(lr=0.2), "last.pt")
