"""The benchmark's machinery (not its timings: speed lives in `botnet bench`, not in tests)."""

import pytest
import torch
from torch import nn

from botnet import bench


class _Work(nn.Module):
    """``rounds`` matmuls on the (B, 256, 1, 1) bench input; each call advances a shared tick counter by
    ``rounds`` and logs its name, so a clock reading the counter times the cases deterministically."""

    ticks = 0
    calls: list[str] = []

    def __init__(self, name: str, rounds: int) -> None:
        super().__init__()
        self.name, self.rounds = name, rounds
        self.weight = nn.Parameter(torch.randn(256, 256) / 16)

    def forward(self, x):
        _Work.ticks += self.rounds
        _Work.calls.append(self.name)
        x = x.flatten(1)
        for _ in range(self.rounds):
            x = torch.tanh(x @ self.weight)
        return x


def test_interleaved_groups_and_ratios():
    cases = [
        bench.Case("toy", "light", lambda: _Work("light", 4), (64, 256, 1, 1), flops_per_image=False),
        bench.Case("toy", "heavy", lambda: _Work("heavy", 12), (64, 256, 1, 1), flops_per_image=False),
        bench.Case("other", "alone", lambda: _Work("alone", 2), (8, 256, 1, 1), flops_per_image=False),
    ]
    lines = []
    _Work.calls.clear()
    settings = bench.BenchSettings(repeats=5, warmup=1)
    results = bench.run_suite(cases, settings, log=lines.append, clock=lambda: float(_Work.ticks))
    assert [r.case for r in results] == ["light", "heavy", "alone"] and len(lines) == 3
    light, heavy, alone = results
    assert light.ratio == 1.0 and light.batch == 64 and light.baseline == "light"
    assert heavy.ratio == round(4 / 12, 3), "the ratio is the first case's median over this one's"
    assert light.images_per_second == round(64 / 4, 3) and heavy.median_ms == 12_000
    assert alone.ratio == 1.0 and alone.baseline == "alone", "each group has its own reference"
    # warm-up once each, then the timed calls alternate between the group's cases
    assert _Work.calls[:2 + 2 * 5] == ["light", "heavy"] * 6


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


def test_pretrained_cases_share_weights():
    """Each pretrained group times timm's model against ours with the same weights: the same logits."""
    pytest.importorskip("timm")
    groups = {}
    for case in bench.pretrained_suite():
        groups.setdefault(case.group, []).append(case)
    assert {g.split()[0] for g in groups} == {"botnet26t_256", "sebotnet33ts_256", "eca_botnext26ts_256"}
    theirs, ours = (c.build().eval() for c in groups["botnet26t_256 256 b8 inference"])
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)


def test_deploy_cases_time_the_same_model_in_onnxruntime():
    pytest.importorskip("onnxruntime")
    groups = {}
    for case in bench.deploy_suite():
        groups.setdefault(case.group, []).append(case.name)
    assert groups and all(names == ["eager pytorch", "onnxruntime"] for names in groups.values())
    torch.manual_seed(0)
    model = bench._seeded_model("botnet_tiny", 24)
    runtime = bench.OnnxRuntimeModel(model, (1, 3, 24, 24))
    x = torch.randn(3, 3, 40, 32)
    with torch.no_grad():
        torch.testing.assert_close(runtime(x), model(x), atol=1e-4, rtol=1e-4)
