"""The benchmark's machinery (not its timings: speed lives in `botnet bench`, not in tests)."""

import pytest
import torch
from torch import nn

from botnet import bench


class _Work(nn.Module):
    """``rounds`` matmuls on the (B, 256, 1, 1) bench input: work proportional to ``rounds``."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds
        self.weight = nn.Parameter(torch.randn(256, 256) / 16)

    def forward(self, x):
        x = x.flatten(1)
        for _ in range(self.rounds):
            x = torch.tanh(x @ self.weight)
        return x


def test_interleaved_groups_and_ratios():
    cases = [
        bench.Case("toy", "light", lambda: _Work(40), (64, 256, 1, 1), flops_per_image=False),
        bench.Case("toy", "heavy", lambda: _Work(120), (64, 256, 1, 1), flops_per_image=False),
    ]
    lines = []
    results = bench.run_suite(cases, bench.BenchSettings(repeats=5, warmup=1), log=lines.append)
    assert [r.case for r in results] == ["light", "heavy"] and len(lines) == 2
    light, heavy = results
    assert light.ratio == 1.0 and light.batch == 64
    assert heavy.ratio < 0.7, "three times the work should be clearly slower than the first case"
    assert heavy.images_per_second < light.images_per_second


def test_suites_name_the_issue_cases():
    groups = {c.group for c in bench.mhsa_suite()}
    assert {"mhsa 14x14 b8 inference", "mhsa 32x32 b8 training", "mhsa 64x64 b2 inference"} <= groups
    assert {c.name for c in bench.models_suite()} == {"torchvision resnet50", "resnet50 channels_last", "botnet50"}


def test_peak_memory_sees_attention_buffers():
    case = next(c for c in bench.mhsa_suite() if c.group == "mhsa 14x14 b8 inference" and c.name == "botnet MHSA")
    peak = bench.peak_memory_mb(case, bench.BenchSettings())
    # The qkv projection alone is 8 x 1536 x 14 x 14 floats = 9.6 MB.
    assert peak is not None and peak > 9


def test_cli_offers_every_suite():
    from botnet.cli import build_parser

    parser = build_parser()
    for suite in bench.SUITES:
        assert parser.parse_args(["bench", "--suite", suite]).suite == [suite]
    bench_parser = next(a for a in parser._actions if a.dest == "command").choices["bench"]
    assert set(next(a for a in bench_parser._actions if a.dest == "suite").choices) == set(bench.SUITES)
    assert {c.input_shape[0] for c in bench.gpu_suite()} == {32, 64}, "the issue's GPU batch sizes"


def test_mhsa_cases_share_timm_weights():
    pytest.importorskip("timm")
    cases = {c.name: c for c in bench.mhsa_suite() if c.group == "mhsa 14x14 b8 inference"}
    theirs, ours = cases["timm BottleneckAttn"].build(), cases["botnet MHSA"].build()
    x = torch.randn(1, 512, 14, 14)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
