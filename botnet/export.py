"""Export for deployment: ONNX (onnxruntime, TensorRT) and ``torch.export`` programs at any input size.

Both go through ``torch.export`` at symbolic batch, height and width. While
exported, every MHSA takes its ``reference`` path (the attention written out
with no size-dependent choices), so the graph holds the position term at
every size; the legacy TorchScript exporter, which would record one size's
resampling of the position tables, is refused by the layer itself.

Nothing is written unchecked: the exported graph runs beside the eager model
on fresh inputs at the export size and at an odd, non-square size, with
batches of 1 and 3, and the file is only moved into place when they agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigError, ExportError
from .files import atomic_write
from .layers.attention import to_pair
from .models.botnet import BoTNet

__all__ = [
    "FORMATS",
    "check_sizes",
    "export_checkpoint",
    "onnx_metadata",
    "save_exported_program",
    "to_exported_program",
    "to_onnx",
]

FORMATS = ("onnx", "pt2")
DEFAULT_OPSET = 18
# The check's bound on max |exported - eager| / max |eager|. Kernels round differently (the graph computes
# attention as written, eager through fused kernels): trained models agree to about 1e-6. A graph that
# misses a term (the legacy exporter drops the position logits: 3e-2 to 7e-2) is far outside it.
CHECK_TOLERANCE = 1e-3


def _refuse_detector(model: nn.Module) -> None:
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    if isinstance(model, GeneralizedRCNN):
        raise ConfigError(
            "a whole torchvision detector cannot be exported: its region proposals and NMS have data-dependent "
            "sizes that torch.export cannot trace. Export its backbone and FPN (the BoTNet part), "
            "to_onnx(detector.backbone, PATH, example=torch.rand(1, 3, H, W)), and keep the heads in PyTorch; "
            "`botnet export --checkpoint DETECTOR` does that"
        )


LARGEST_SIDE = 16384


def _example(model: nn.Module, example: Tensor | None, static: tuple[int, int] | None) -> Tensor:
    if static is not None and max(static) > LARGEST_SIDE:
        raise ConfigError(f"static sizes above {LARGEST_SIDE} pixels are not supported, got {static[0]}x{static[1]}")
    generator = torch.Generator().manual_seed(0)
    if example is not None:
        if not isinstance(example, Tensor) or example.dim() != 4:
            raise ConfigError(f"example must be a 4-D image batch (batch, channels, height, width), got {example!r:.80}")
        return example if static is None else torch.rand(*example.shape[:2], *static, generator=generator)
    if not isinstance(model, BoTNet):
        raise ConfigError(
            f"exporting a {type(model).__name__} needs an example input: example=torch.rand(1, 3, H, W)"
        )
    height, width = static or model.img_size
    if min(height, width) < model.min_input_size:
        raise ConfigError(
            f"{model.name} takes images of at least {model.min_input_size}x{model.min_input_size}, "
            f"got {height}x{width}"
        )
    # Batch 2: torch.export treats a size of 1 as a constant.
    return torch.rand(2, model.in_chans, height, width, generator=generator)


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _cpu_copy(model: nn.Module) -> nn.Module:
    """The model itself on CPU, else a CPU copy: an ONNX file holds no device, and a GPU model's eager
    outputs (TF32 convolutions) would differ from onnxruntime's float32 by more than the check allows."""
    if _device(model).type == "cpu":
        return model
    import copy

    return copy.deepcopy(model).cpu()


def _dynamic_shapes(static: tuple[int, int] | None) -> dict[str, dict[int, Any]]:
    dynamic = torch.export.Dim.DYNAMIC
    return {"x": {0: dynamic} if static else {0: dynamic, 2: dynamic, 3: dynamic}}


def check_sizes(example: Tensor, static: tuple[int, int] | None) -> list[tuple[int, int, int]]:
    """(batch, height, width) the exported graph is checked at: the export size with batch 1, and
    (unless ``static``) an odd, non-square size with batch 3."""
    _, _, height, width = example.shape
    if static:
        return [(1, height, width), (3, height, width)]
    return [(1, height, width), (3, height * 3 // 4 | 1, width + width // 4 + 1)]


def _outputs(output: Any, model: nn.Module) -> tuple[list[str], list[Tensor]]:
    """The model's outputs as (names, tensors): logits, a features_only list, or an FPN's dict."""
    if isinstance(output, Tensor):
        return ["logits"], [output]
    if isinstance(output, Mapping):
        return [f"fpn_{key}" for key in output], list(output.values())
    if isinstance(output, (list, tuple)) and all(isinstance(o, Tensor) for o in output):
        info = getattr(model, "feature_info", None)
        names = [i["module"] for i in info] if info and len(info) == len(output) else [f"out{i}" for i in range(len(output))]
        return names, list(output)
    raise ConfigError(f"cannot export a model whose output is a {type(output).__name__}")


def _eager(model: nn.Module, images: Tensor) -> list[Tensor]:
    with torch.no_grad():
        return _outputs(model(images), model)[1]


def _compare(got: Sequence[Any], expected: Sequence[Tensor], where: str) -> float:
    worst = 0.0
    for out, ref in zip(got, expected):
        out, ref = torch.as_tensor(out).cpu(), ref.cpu()
        if out.shape != ref.shape:
            raise ExportError(f"the exported graph gives shape {tuple(out.shape)} {where}, eager {tuple(ref.shape)}")
        error = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        worst = max(worst, error)
    if not worst <= CHECK_TOLERANCE:
        raise ExportError(
            f"the exported graph differs from the eager model {where}: max relative error {worst:.2e} "
            f"(bound {CHECK_TOLERANCE:g}); nothing was written"
        )
    return worst


class _EvalMode:
    """The model in eval mode for the export, put back as it was afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.training = model, model.training

    def __enter__(self) -> nn.Module:
        return self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.training)


@contextlib.contextmanager
def _float32_without_tf32() -> Iterator[None]:
    """TF32 off on GPUs for a check: eager and exported graphs may pick convolutions that round differently
    in TF32 (about 1e-3 each), which the check would take for a wrong graph."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def to_exported_program(
    model: nn.Module, *, example: Tensor | None = None, static: Sequence[int] | None = None
) -> torch.export.ExportedProgram:
    """``torch.export`` the model (eval mode) with symbolic batch, height and width (``static``:
    height and width fixed), checked against eager as the module docstring says.

    The program's height and width range starts one pixel above the model's smallest input:
    torch.export treats feature maps of one pixel as constants."""
    _refuse_detector(model)
    static = to_pair(tuple(static), "static") if static is not None else None
    device = _device(model)  # the program runs where the model is
    example = _example(model, example, static).to(device)
    with _EvalMode(model), torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_shapes(static))
        runnable = program.module()
        generator = torch.Generator().manual_seed(1)
        with _float32_without_tf32():
            for batch, height, width in check_sizes(example, static):
                sizes = _in_range(program, batch, height, width)
                images = torch.rand(*sizes[:1], example.shape[1], *sizes[1:], generator=generator).to(device)
                expected = _eager(model, images)
                _compare(_outputs(runnable(images), model)[1], expected, f"at {tuple(images.shape)}")
    return program


def _in_range(program: torch.export.ExportedProgram, batch: int, height: int, width: int) -> tuple[int, int, int]:
    """The check size moved into the program's ranges (they start above 1 and above the smallest map)."""
    lower = [int(r.lower) for r in program.range_constraints.values()]
    smallest = max([2] + lower) if lower else 2
    return max(batch, 2), max(height, smallest), max(width, smallest)


def to_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    example: Tensor | None = None,
    static: Sequence[int] | None = None,
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, Any] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Write the model as an ONNX file with symbolic batch, height and width.

    Args:
        model: a BoTNet (classifier or ``features_only``) or a module taking image batches, such
            as a detector's ``backbone`` (then pass ``example``). A whole detector is refused. A
            model on a GPU is exported from a CPU copy (the file holds no device) and left as it is.
        path: the .onnx file; written atomically, only after the check passes.
        example: an input of the expected channels and a typical size (default: the model's
            ``img_size``).
        static: (height, width) to fix instead of leaving them symbolic (batch stays symbolic).
        opset: the ONNX opset.
        metadata: extra entries for the file's metadata (class names, normalisation); by default
            those of ``model.pretrained_cfg``. ``onnx_metadata(path)`` reads them back.
        check: run the file in onnxruntime beside the eager model (see the module docstring).

    Returns what was written: path, input and output names, metadata and the check's worst
    relative error (None without ``check``).
    """
    _refuse_detector(model)
    static = to_pair(tuple(static), "static") if static is not None else None
    model = _cpu_copy(model)
    example = _example(model, example.cpu() if isinstance(example, Tensor) else example, static)
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs onnx and onnxscript: pip install 'botnet[export]'") from None
    with _EvalMode(model), torch.no_grad():
        names = _outputs(model(example), model)[0]
        program = torch.onnx.export(
            model, (example,), dynamo=True, dynamic_shapes=_dynamic_shapes(static), input_names=["images"],
            output_names=names, opset_version=opset, verbose=False,
        )  # fmt: skip
        proto = program.model_proto
        _check_symbolic(proto, static)
        meta = _metadata(model, metadata, names, static)
        onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in meta.items()})
        data = proto.SerializeToString()
        worst = _check_onnx(data, model, example, static) if check else None
    atomic_write(os.fspath(path), lambda file: file.write(data))
    return dict(path=os.fspath(path), inputs=["images"], outputs=names, metadata=meta, max_relative_error=worst)


def _check_symbolic(proto: Any, static: tuple[int, int] | None) -> None:
    """The exporter may fall back to fixed sizes without saying so; a file meant for any size must not."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = [i for i, dim in enumerate(dims) if dim.HasField("dim_value") and i in ((0,) if static else (0, 2, 3))]
    if fixed:
        axes = ", ".join(("batch", "", "height", "width")[i] for i in fixed)
        raise ExportError(f"the exported graph fixed the input's {axes} instead of keeping it symbolic; nothing was written")


def _check_onnx(data: bytes, model: nn.Module, example: Tensor, static: tuple[int, int] | None) -> float:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "checking the ONNX file needs onnxruntime (pip install 'botnet[export]'); or pass check=False "
            "(--no-check) to write it unchecked"
        ) from None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for batch, height, width in check_sizes(example, static):
        images = torch.rand(batch, example.shape[1], height, width, generator=generator)
        got = session.run(None, {"images": images.numpy()})
        worst = max(worst, _compare(got, _eager(model, images), f"at {tuple(images.shape)} in onnxruntime"))
    return worst


def _metadata(
    model: nn.Module, extra: Mapping[str, Any] | None, outputs: list[str], static: tuple[int, int] | None
) -> dict[str, Any]:
    keys = ("model", "img_size", "in_chans", "classes", "mean", "std", "interpolation", "crop_fraction", "dataset")
    source = dict(getattr(model, "pretrained_cfg", None) or {}, **(extra or {}))
    meta = {key: source[key] for key in keys if key in source}
    if isinstance(model, BoTNet):
        meta.setdefault("model", model.name)
        meta.setdefault("img_size", list(model.img_size))
        meta.setdefault("in_chans", model.in_chans)
    meta["input"] = (
        "images: float32 (batch, channels, height, width), "
        + ("height and width fixed" if static else "any batch, height and width")
        + (", scaled to [0, 1] then normalised by mean and std" if "mean" in meta else "")
    )
    meta["outputs"] = outputs
    meta.update({k: v for k, v in (extra or {}).items() if k not in meta})
    return meta


def onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata ``to_onnx`` wrote into an ONNX file (JSON values, decoded)."""
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)
    return {prop.key: json.loads(prop.value) for prop in proto.metadata_props}


def save_exported_program(program: torch.export.ExportedProgram, path: str, metadata: Mapping[str, Any]) -> None:
    """``torch.export.save`` the program atomically, with ``metadata`` as the extra file botnet.json
    (``torch.export.load(path, extra_files={"botnet.json": ""})`` reads it back)."""
    import io

    buffer = io.BytesIO()
    with warnings.catch_warnings():  # channels_last weights are not "complete" tensors to the archive; harmless on CPU
        warnings.filterwarnings("ignore", message="No complete tensor found in the group")
        torch.export.save(program, buffer, extra_files={"botnet.json": json.dumps(dict(metadata))})
    atomic_write(path, lambda file: file.write(buffer.getvalue()))


def export_checkpoint(
    checkpoint: str,
    *,
    format: str = "onnx",
    output: str | None = None,
    opset: int | None = None,
    static: Sequence[int] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """``botnet export``: a trained classifier (or the BoTNet + FPN of a trained detector) as ONNX or
    a torch.export program, with the metadata a deployment needs (classes, normalisation, sizes)."""
    from .checkpoints import open_checkpoint
    from .tasks import TASKS

    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if opset is not None and not 7 <= opset <= 30:
        raise ConfigError(f"--opset must be an ONNX opset number (7..30; default {DEFAULT_OPSET}), got {opset}")
    output = output or os.path.splitext(checkpoint)[0] + "." + format
    opened = open_checkpoint(checkpoint)
    model, example, extra = TASKS[opened.task].export_parts(opened)
    pair = to_pair(tuple(static), "static") if static is not None else None
    example = _example(model, example, pair)  # checks the sizes before the long part
    if format == "onnx":
        opset = opset or DEFAULT_OPSET
        return to_onnx(model, output, example=example, static=static, opset=opset, metadata=extra, check=check)
    program = to_exported_program(model, example=example, static=static)
    with _EvalMode(model), torch.no_grad():
        names = _outputs(model(example), model)[0]
    metadata = _metadata(model, extra, names, pair)
    save_exported_program(program, output, metadata)
    return dict(path=output, inputs=["images"], outputs=names, metadata=metadata, max_relative_error=None)
