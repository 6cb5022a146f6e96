"""Side-by-side speed and memory benchmarks (``botnet bench``).

Every group compares its cases in one run: the cases of a group are timed
interleaved (one call of each in turn, repeated), after warm-up, and the
median is reported with its ratio to the group's first case, so a noisy
shared machine moves every case alike. Peak memory is measured in a fresh
process per case (the rise of the resident set over one call on CPU,
``torch.cuda.max_memory_allocated`` on GPU).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .layers import MHSA
from .models import convert_timm_state_dict, create_model, get_model_entry, list_pretrained, summarize
from .torch_private import register_cpu_attention_flops

__all__ = ["BenchSettings", "Result", "run_suite", "SUITES"]


@dataclass(frozen=True)
class BenchSettings:
    device: str = "cpu"
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    repeats: int = 7
    warmup: int = 2
    memory: bool = False


@dataclass
class Result:
    group: str
    case: str
    mode: str  # "inference" or "training"
    batch: int
    size: str
    median_ms: float
    images_per_second: float
    ratio: float  # speed relative to the group's first case, the baseline (>1: faster)
    baseline: str
    params: int | None = None
    gflops: float | None = None  # forward FLOPs per image
    achieved_gflops_per_second: float | None = None
    peak_memory_mb: float | None = None


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int, int]
    mode: str = "inference"
    flops_per_image: bool = True  # whether to count FLOPs (not for third-party layers it cannot see)
    input_grad: bool = False  # training a layer alone: its input needs a gradient too


def _timm_attn(dim: int, size: int) -> Callable[[], nn.Module] | None:
    try:
        from timm.layers.bottleneck_attn import BottleneckAttn
    except ImportError:
        return None

    def build() -> nn.Module:
        torch.manual_seed(0)  # the same weights every time: ours copies them (see _our_attn)
        return BottleneckAttn(dim, feat_size=(size, size), num_heads=4, scale_pos_embed=True)

    return build


def _our_attn(dim: int, size: int, impl: str = "auto") -> Callable[[], nn.Module]:
    """Our MHSA, with timm's weights when timm is installed (identical weights, identical outputs)."""

    def build() -> nn.Module:
        ours = MHSA(dim, size, impl=impl)
        timm_factory = _timm_attn(dim, size)
        if timm_factory is not None:
            theirs = timm_factory()
            with torch.no_grad():
                ours.qkv.weight.copy_(theirs.qkv.weight)
                ours.rel_h.copy_(theirs.pos_embed.height_rel)
                ours.rel_w.copy_(theirs.pos_embed.width_rel)
        return ours

    return build


def _lucidrains_attn(dim: int, size: int) -> Callable[[], nn.Module] | None:
    try:
        from bottleneck_transformer_pytorch.bottleneck_transformer_pytorch import Attention
    except ImportError:
        return None
    return lambda: Attention(dim=dim, fmap_size=(size, size), heads=4, dim_head=dim // 4, rel_pos_emb=True)


def _torchvision_resnet50() -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None)


def _torchvision_resnet50_channels_last() -> nn.Module:
    """ResNet-50 with the weight layout our models keep (oneDNN then runs every convolution NHWC):
    the like-for-like baseline, where the plain one is what a torchvision user gets by default."""
    return _torchvision_resnet50().to(memory_format=torch.channels_last)


def mhsa_suite() -> list[Case]:
    """Issue targets: MHSA (dim 512, 4 heads) against timm's BottleneckAttn and lucidrains' Attention."""
    cases = []
    for size, batch, modes in [(14, 8, ("inference",)), (32, 8, ("inference", "training")), (64, 2, ("inference",))]:
        for mode in modes:
            group = f"mhsa {size}x{size} b{batch} {mode}"
            shape = (batch, 512, size, size)
            others = (("timm BottleneckAttn", _timm_attn(512, size)), ("lucidrains Attention", _lucidrains_attn(512, size)))
            for name, factory in others:  # references first: ratios then read as speed relative to timm
                if factory is not None:
                    cases.append(Case(group, name, factory, shape, mode, flops_per_image=False, input_grad=True))
            cases.append(Case(group, "botnet MHSA", _our_attn(512, size), shape, mode, input_grad=True))
    return cases


# The paths of our attention compared on a GPU, by mode ("auto" first: what a model runs by default).
GPU_PATHS = {"inference": ("auto", "one_call", "flex"), "training": ("auto", "fused", "probs", "flex")}
FLEX_BATCHES = (64,)  # FlexAttention compiles a kernel per shape: timed at one batch size, to bound the compiling


def gpu_mhsa_suite() -> list[Case]:
    """MHSA (dim 512, 4 heads) on a GPU at the batch sizes it is used with, against timm's BottleneckAttn with
    the same weights, and each path of ours by name (the fastest per case decides ``impl="auto"``)."""
    cases = []
    for size in (14, 32, 64):
        for batch in (32, 64):
            for mode, paths in GPU_PATHS.items():
                group, shape = f"gpu mhsa {size}x{size} b{batch} {mode}", (batch, 512, size, size)
                factory = _timm_attn(512, size)
                if factory is not None:
                    cases.append(Case(group, "timm BottleneckAttn", factory, shape, mode, flops_per_image=False, input_grad=True))
                for impl in paths:
                    if impl != "flex" or batch in FLEX_BATCHES:
                        name = "botnet MHSA" if impl == "auto" else f"botnet MHSA {impl}"
                        cases.append(Case(group, name, _our_attn(512, size, impl), shape, mode, input_grad=True))
    return cases


def _resnet50_vs_botnet50(group: str, size: int, batch: int, mode: str) -> list[Case]:
    """ResNet-50 as torchvision ships it, with channels_last weights like ours, and BoTNet-50."""
    shape = (batch, 3, size, size)
    return [
        Case(group, "torchvision resnet50", _torchvision_resnet50, shape, mode),
        Case(group, "resnet50 channels_last", _torchvision_resnet50_channels_last, shape, mode),
        Case(group, "botnet50", lambda: create_model("botnet50", img_size=size), shape, mode),
    ]


def models_suite() -> list[Case]:
    """BoTNet-50 against torchvision's ResNet-50 at the paper's sizes."""
    sizes = [(224, 8, ("inference", "training")), (1024, 1, ("inference",))]
    return [
        case
        for size, batch, modes in sizes
        for mode in modes
        for case in _resnet50_vs_botnet50(f"model {size} b{batch} {mode}", size, batch, mode)
    ]


def gpu_suite() -> list[Case]:
    """The models suite's comparison at the batch sizes a GPU is used with (32 and 64, 224 px)."""
    return [
        case
        for batch in (32, 64)
        for mode in ("inference", "training")
        for case in _resnet50_vs_botnet50(f"gpu 224 b{batch} {mode}", 224, batch, mode)
    ]


def resolution_suite() -> list[Case]:
    """Inference throughput against resolution, for the plot."""
    cases = []
    for size in (128, 224, 320, 448):
        group = f"resolution {size} b1 inference"
        shape = (1, 3, size, size)
        cases.append(Case(group, "torchvision resnet50", _torchvision_resnet50, shape))
        cases.append(Case(group, "botnet50", lambda s=size: create_model("botnet50", img_size=s), shape))
    return cases


def large_suite() -> list[Case]:
    """Detection sizes: BoTNet-50 at 2048 px, and BoT blocks in c4 too (last block) at 1024 px."""
    c4 = dict(bot_blocks=(0, 0, 1, -1))
    return [
        Case("large 2048 b1 inference", "torchvision resnet50", _torchvision_resnet50, (1, 3, 2048, 2048)),
        Case("large 2048 b1 inference", "botnet50", lambda: create_model("botnet50", img_size=2048), (1, 3, 2048, 2048)),
        Case("large 1024 b1 inference", "torchvision resnet50", _torchvision_resnet50, (1, 3, 1024, 1024)),
        Case(
            "large 1024 b1 inference", "botnet50 + BoT in c4", lambda: create_model("botnet50", img_size=1024, **c4),
            (1, 3, 1024, 1024),
        ),
    ]


def _timm_model(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        torch.manual_seed(0)  # the same weights every time: ours loads them (see _our_model)
        return timm.create_model(name)

    return build


def _our_model(name: str) -> Callable[[], nn.Module]:
    """Our model with timm's weights (the same computation: see tests/models/test_pretrained.py)."""

    def build() -> nn.Module:
        model = create_model(name)
        model.load_state_dict(convert_timm_state_dict(_timm_model(name)().state_dict()))
        return model

    return build


def pretrained_suite() -> list[Case]:
    """timm's BoTNets against ours with identical weights, 256 px, batch 8 (needs timm)."""
    try:
        import timm  # noqa: F401
    except ImportError:
        return []
    return [
        case
        for name in list_pretrained()
        for mode in ("inference", "training")
        for case in (
            Case(f"{name} 256 b8 {mode}", f"timm {name}", _timm_model(name), (8, 3, 256, 256), mode),
            Case(f"{name} 256 b8 {mode}", f"botnet {name}", _our_model(name), (8, 3, 256, 256), mode),
        )
    ]


def _seeded_model(name: str, size: int) -> nn.Module:
    torch.manual_seed(0)  # the same weights in both cases of a group
    return create_model(name, img_size=size).eval()


class OnnxRuntimeModel(nn.Module):
    """A model exported with ``botnet.export.to_onnx`` and run by onnxruntime's CPU provider with
    torch's thread count, called like the module it came from (for side-by-side timing)."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int, int]) -> None:
        super().__init__()
        import tempfile

        import onnxruntime

        from .export import to_onnx

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.onnx")
            to_onnx(model, path, example=torch.rand(2, *input_shape[1:]))
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"images": x.detach().cpu().numpy()})[0])


def deploy_suite() -> list[Case]:
    """Eager PyTorch against the same model exported to ONNX and run by onnxruntime (CPU, inference;
    needs the ``export`` extra)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return []
    cases = []
    for name, size, batch in [("botnet50", 224, 1), ("botnet50", 224, 8), ("botnet26t_256", 256, 1), ("botnet26t_256", 320, 1)]:
        group, shape = f"deploy {name} {size} b{batch}", (batch, 3, size, size)
        build = lambda name=name: _seeded_model(name, get_model_entry(name).img_size)  # noqa: E731
        cases.append(Case(group, "eager pytorch", build, shape))
        cases.append(
            Case(group, "onnxruntime", lambda build=build, shape=shape: OnnxRuntimeModel(build(), shape), shape,
                 flops_per_image=False)
        )  # fmt: skip
    return cases


SUITES: dict[str, Callable[[], list[Case]]] = {
    "mhsa": mhsa_suite,
    "pretrained": pretrained_suite,
    "models": models_suite,
    "resolution": resolution_suite,
    "large": large_suite,
    "gpu": gpu_suite,
    "gpu-mhsa": gpu_mhsa_suite,
    "deploy": deploy_suite,
}


def _prepare(case: Case, settings: BenchSettings) -> tuple[Callable[[], None], nn.Module, torch.Tensor]:
    device = torch.device(settings.device)
    module = case.build().to(device)
    x = torch.randn(case.input_shape, device=device)
    if settings.channels_last:
        module = module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    module.train(case.mode == "training")
    runner = torch.compile(module) if settings.compile else module
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if settings.bf16 else contextlib.nullcontext()
    )

    if case.mode == "training":
        x.requires_grad_(case.input_grad)

        def step() -> None:
            with autocast:
                out = runner(x)
            out.float().square().mean().backward()
            module.zero_grad(set_to_none=True)
    else:

        def step() -> None:
            with torch.no_grad(), autocast:
                runner(x)

    def synced() -> None:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return synced, module, x


def _find_case(group: str, name: str) -> Case:
    return next(c for suite in SUITES.values() for c in suite() if c.group == group and c.name == name)


def _peak_memory_worker(group: str, name: str, settings: BenchSettings, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    step, _, _ = _prepare(_find_case(group, name), settings)
    with open("/proc/self/status") as f:
        before = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size (VmHWM)
    step()
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    queue.put((peak - before) / 1024)


def peak_memory_mb(case: Case, settings: BenchSettings, step: Callable[[], None] | None = None) -> float | None:
    """Memory added by one call: on a GPU, the peak of the caching allocator's allocations during ``step``
    (the case prepared in this process; its cache is not counted); on CPU, measured in a fresh process (no
    allocator caches from other cases)."""
    if settings.device == "cuda":
        step = step or _prepare(case, settings)[0]
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    args = (case.group, case.name, settings, torch.get_num_threads(), queue)
    process = context.Process(target=_peak_memory_worker, args=args)
    process.start()
    process.join()
    return queue.get() if process.exitcode == 0 and not queue.empty() else None


def _warm(members: list[Case], settings: BenchSettings, log: Callable[[str], None]) -> tuple[list[Case], list]:
    """Each case prepared and warmed up; a case that runs out of GPU memory is left out, and said so."""
    kept, prepared = [], []
    for case in members:
        try:
            ready = _prepare(case, settings)
            for _ in range(settings.warmup):
                ready[0]()
        except torch.cuda.OutOfMemoryError:  # what it held returns to the allocator's cache for the next case
            log(f"{case.group:<34} {case.name:<22} out of memory: left out")
            continue
        kept.append(case)
        prepared.append(ready)
    return kept, prepared


def run_suite(
    cases: list[Case],
    settings: BenchSettings,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Result]:
    """Time each group's cases interleaved (after warm-up) and report medians with ratios to the group's first.
    ``clock`` is the timer (seconds); tests pass a deterministic one."""
    results: list[Result] = []
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)
    for group, members in groups.items():
        members, prepared = _warm(members, settings, log)
        if not members:
            continue
        times: list[list[float]] = [[] for _ in members]
        for _ in range(settings.repeats):
            for i, (step, _, _) in enumerate(prepared):
                start = clock()
                step()
                times[i].append(clock() - start)
        medians = [statistics.median(t) for t in times]
        for case, (step, module, x), median in zip(members, prepared, medians):
            batch, _, height, width = case.input_shape
            params = sum(p.numel() for p in module.parameters())
            gflops = None
            if case.flops_per_image and hasattr(module, "img_size"):
                gflops = summarize(module, (height, width)).flops / 1e9
            elif case.flops_per_image:
                register_cpu_attention_flops()
                with torch.utils.flop_counter.FlopCounterMode(display=False) as counter, torch.no_grad():
                    module.eval()(x[:1].detach())
                gflops = counter.get_total_flops() / 1e9
            factor = 3 if case.mode == "training" else 1  # backward costs about twice the forward
            result = Result(
                group=group,
                case=case.name,
                mode=case.mode,
                batch=batch,
                size=f"{height}x{width}",
                median_ms=round(median * 1e3, 3),
                images_per_second=round(batch / median, 3),
                ratio=round(medians[0] / median, 3),
                baseline=members[0].name,
                params=params,
                gflops=round(gflops, 3) if gflops else None,
                achieved_gflops_per_second=round(gflops * factor * batch / median, 2) if gflops else None,
                peak_memory_mb=None,
            )
            if settings.memory:
                memory = peak_memory_mb(case, settings, step)
                result.peak_memory_mb = round(memory, 1) if memory is not None else None
            results.append(result)
            log(_format(result))
        del prepared
    return results


def _format(r: Result) -> str:
    memory = f"  peak +{r.peak_memory_mb:.0f} MB" if r.peak_memory_mb is not None else ""
    rate = f"  {r.achieved_gflops_per_second:.1f} GFLOP/s" if r.achieved_gflops_per_second else ""
    return (
        f"{r.group:<34} {r.case:<22} {r.median_ms:10.2f} ms  {r.images_per_second:9.2f} img/s  "
        f"x{r.ratio:.2f} vs {r.baseline}{rate}{memory}"
    )


def machine_description(settings: BenchSettings) -> str:
    if settings.device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads "
        f"(torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()})"
    )


def write_outputs(results: list[Result], settings: BenchSettings, json_path: str | None, csv_path: str | None) -> None:
    rows = [asdict(r) for r in results]
    if json_path:
        with open(json_path, "w") as f:
            json.dump(dict(machine=machine_description(settings), settings=asdict(settings), results=rows), f, indent=2)
    if csv_path:
        import csv

        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def plot_resolution(results: list[Result], path: str, title: str) -> None:
    """Throughput against resolution, one line per case, from the resolution suite."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    by_case: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r.group.startswith("resolution"):
            by_case.setdefault(r.case, []).append((int(r.size.split("x")[0]), r.images_per_second))
    for case, points in by_case.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=case)
    ax.set(xlabel="resolution (px)", ylabel="images / s (batch 1)", yscale="log", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    figure.savefig(path, dpi=120, bbox_inches="tight")
