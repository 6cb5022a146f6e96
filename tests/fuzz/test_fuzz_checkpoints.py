"""Corrupted and truncated files of every kind we read: a run's last.pt and model.safetensors (classifier and
detector), and plain ResNet weights (.pth and .safetensors). Each reader ends in our own error or a clean
success (a flipped byte inside tensor data is still a loadable file), never a crash; the command line prints
one line."""

from __future__ import annotations

import os
import shutil
import struct

import pytest
import torch
from fuzzing import fuzz_settings
from hypothesis import event, given
from hypothesis import strategies as st

from botnet.checkpoints import load_training_state, open_checkpoint
from botnet.cli import main
from botnet.errors import BotnetError
from botnet.models import create_model, load_resnet_weights, read_state_dict
from botnet.tasks.classification import load_model
from botnet.tasks.detection import load_detector


@pytest.fixture(scope="module")
def files(real_files):
    return real_files


def _structure_end(data: bytes, kind: str) -> int:
    """Where a file's structure ends: the safetensors header, or a zip's pickle (before the tensor data)."""
    if kind.endswith("safetensors"):
        return min(len(data), 8 + struct.unpack("<Q", data[:8])[0]) if len(data) >= 8 else len(data)
    at = data.find(b"data.pkl")
    return min(len(data), at + 4096) if at >= 0 else len(data)


@st.composite
def corruptions(draw, data: bytes, kind: str):
    """``data`` truncated, emptied, or with bytes flipped, overwritten, inserted or appended (biased towards the
    file's structure, where damage matters)."""
    op = draw(st.sampled_from(["truncate", "truncate", "flip", "flip", "overwrite", "insert", "append", "empty"]))
    end = _structure_end(data, kind)
    position = draw(st.integers(0, max(0, end - 1)) | st.integers(0, len(data) - 1))
    if op == "truncate":
        return data[:position]
    if op == "empty":
        return b""
    if op == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    if op == "insert":
        return data[:position] + draw(st.binary(min_size=1, max_size=16)) + data[position:]
    changed = bytearray(data)
    if op == "flip":
        for _ in range(draw(st.integers(1, 6))):
            changed[draw(st.integers(0, max(0, end - 1)) | st.integers(0, len(data) - 1))] ^= 1 << draw(
                st.integers(0, 7)
            )
    else:
        patch = draw(st.binary(min_size=1, max_size=32))
        changed[position : position + len(patch)] = patch
    return bytes(changed)


READERS = {
    "cls_last": [load_training_state, open_checkpoint, load_model],
    "cls_weights": [open_checkpoint, load_model],
    "det_last": [load_training_state, open_checkpoint, load_detector],
    "det_weights": [open_checkpoint, load_detector],
    "resnet_pth": [read_state_dict, lambda p: load_resnet_weights(create_model("botnet_tiny", num_classes=10), p)],
    "resnet_safetensors": [read_state_dict],
}


@fuzz_settings(120)
@given(kind=st.sampled_from(sorted(READERS)), data=st.data())
def test_damaged_files_are_read_or_refused(files, tmp_path_factory, kind, data):
    with open(files[kind], "rb") as f:
        original = f.read()
    damaged = data.draw(corruptions(original, kind))
    path = str(tmp_path_factory.mktemp("damaged") / os.path.basename(files[kind]))
    with open(path, "wb") as f:
        f.write(damaged)
    for read in READERS[kind]:
        try:
            read(path)
            event(f"{kind}: read")
        except BotnetError as error:
            event(f"{kind}: refused ({type(error).__name__})")


@fuzz_settings(30)
@given(kind=st.sampled_from(["cls_last", "cls_weights", "det_weights"]), data=st.data())
def test_commands_on_damaged_files_print_one_line(files, tmp_path_factory, capsys, kind, data):
    with open(files[kind], "rb") as f:
        damaged = data.draw(corruptions(f.read(), kind))
    path = str(tmp_path_factory.mktemp("damaged") / os.path.basename(files[kind]))
    with open(path, "wb") as f:
        f.write(damaged)
    command = ["detect", "predict"] if kind.startswith("det") else ["predict"]
    code = main([*command, "--checkpoint", path, files["image"]])
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), err
    assert code == 0 or (len(err.splitlines()) == 1 and "error:" in err), err
    event(f"{kind}: exit {code}")


plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10**6)
    | st.floats(allow_nan=True)
    | st.text(max_size=6)
    | st.builds(torch.zeros, st.lists(st.integers(0, 3), max_size=3)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


def _edit(tree, path, op, value):
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if op == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


def _paths(tree, prefix=(), depth=3):
    if isinstance(tree, dict) and depth:
        for key, value in tree.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key), depth - 1)
    elif isinstance(tree, list) and depth:
        for index, value in enumerate(tree[:3]):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index), depth - 1)


@fuzz_settings(12)
@given(base=st.sampled_from(["cls_run", "cls_mid_run"]), data=st.data())
def test_edited_training_states_resume_or_are_refused(files, tmp_path_factory, capsys, base, data):
    """A last.pt that unpickles fine but holds wrong fields (deleted, retyped, nonsense settings), from a
    finished run or one stopped mid-epoch (step, random states, partial sums): resuming it either completes
    or is refused in one line."""
    state = torch.load(os.path.join(files[base], "last.pt"), weights_only=True)
    candidates = [p for p in _paths(state) if p[0] not in ("model", "ema") or len(p) == 1]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(candidates))
        try:
            _edit(state, path, data.draw(st.sampled_from(["delete", "replace"])), data.draw(plain_values))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier edit removed or replaced this path
    run = tmp_path_factory.mktemp("edited") / "run"
    shutil.copytree(files[base], run)
    torch.save(state, run / "last.pt")
    code = main(["train", "--resume", str(run / "last.pt")])
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), err
    assert code == 0 or (len(err.splitlines()) == 1 and "error:" in err), err
    event(f"{base}: exit {code}")
