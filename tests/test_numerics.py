"""Denormal floats are flushed to zero in every thread PyTorch computes in while botnet runs, and the
caller's own setting is back afterwards."""

import platform
import subprocess
import sys

import pytest

import botnet.cli as cli
from botnet.numerics import _flushing

# x86's flush-to-zero and denormals-are-zero flags; elsewhere torch.set_flush_denormal does nothing
pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="needs an x86 CPU")

PROBE = """
import torch
from botnet.numerics import _flushing, flushed_denormals
def zeros():  # a product over a million denormals, split over two threads
    return int((torch.full((1 << 20,), 1e-40) * 1.0).count_nonzero() == 0)
torch.set_num_threads(2)
with flushed_denormals():
    inside = zeros()
print(inside, int(_flushing()), zeros())
"""


def test_every_thread_flushes_inside_and_the_callers_setting_is_back_after():
    """In a fresh process: inside the block the threads PyTorch starts flush too (they copy the setting);
    after it, the calling thread computes with denormals again (its share of the product is kept)."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "0", "0"]


def test_without_the_block_denormals_are_kept():
    out = subprocess.run([sys.executable, "-c", "import torch; print((torch.full((1 << 20,), 1e-40) * 1.0).count_nonzero().item())"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert int(out.stdout) == 1 << 20


def test_the_cli_runs_its_command_flushing_and_restores_the_setting(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(cli, "_main", lambda argv: seen.append(_flushing()) or 0)
    before = _flushing()
    assert cli.main(["list"]) == 0
    assert seen == [True] and _flushing() == before
