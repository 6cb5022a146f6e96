"""Looking inside the attention: each BoT block's attention maps and its relative position logits.

While these run, every MHSA takes its ``reference`` path, whose softmax is a module;
a forward hook on it receives the attention probabilities, position term included.
The maps are at the size each layer attends at: a BoT block that downsamples attends
before its 2x2 pooling (paper Sec. 3), so at twice its output's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .layers.attention import MHSA, resize_position_table, restore_attention_impl, set_attention_impl

__all__ = [
    "AttentionRecord",
    "attention_maps",
    "draw_attention",
    "draw_position_logits",
    "explain_checkpoint",
    "query_index",
    "record_attention",
    "relative_position_maps",
]


@dataclass
class AttentionRecord:
    """What one MHSA saw and computed for a batch of images."""

    probs: Tensor  # (B, heads, H*W, H*W): row n is query n's attention over the keys
    size: tuple[int, int]  # (H, W), the map the layer attends over
    queries: Tensor  # (B, heads, H*W, qk_head_dim), the queries of every position


def _layers(model: nn.Module) -> dict[str, MHSA]:
    layers = {name: module for name, module in model.named_modules() if isinstance(module, MHSA)}
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no attention layers (no BoT blocks): nothing to show")
    return layers


@torch.no_grad()
def record_attention(model: nn.Module, images: Tensor) -> dict[str, AttentionRecord]:
    """Run ``model`` on ``images`` in eval mode and record every MHSA, by module name (the model's
    mode and attention paths are put back afterwards)."""
    layers = _layers(model)
    records: dict[str, dict] = {name: {} for name in layers}
    handles = []
    for name, layer in layers.items():

        def on_input(module: MHSA, args: tuple, name: str = name) -> None:
            x = args[0]
            queries = module.qkv(x).flatten(2)[:, : module.heads * module.qk_head_dim]
            records[name]["size"] = (x.shape[2], x.shape[3])
            records[name]["queries"] = queries.unflatten(1, (module.heads, module.qk_head_dim)).transpose(-1, -2)

        def on_probs(module: nn.Module, args: tuple, probs: Tensor, name: str = name) -> None:
            records[name]["probs"] = probs

        handles.append(layer.register_forward_pre_hook(on_input))
        handles.append(layer.softmax.register_forward_hook(on_probs))
    previous, training = set_attention_impl(model, "reference"), model.training
    try:
        model.eval()(images)
    finally:
        for handle in handles:
            handle.remove()
        restore_attention_impl(model, previous)
        model.train(training)
    return {name: AttentionRecord(**record) for name, record in records.items() if record}


def attention_maps(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """``{module name: (B, heads, H*W, H*W)}``: every MHSA's post-softmax attention probabilities
    for ``images`` (content and position logits both), at the map size the layer attends at."""
    return {name: record.probs for name, record in record_attention(model, images).items()}


@torch.no_grad()
def relative_position_maps(layer: MHSA, record: AttentionRecord) -> Tensor:
    """(heads, 2H - 1, 2W - 1): the position logit s' q.(r_h[dy] + r_w[dx]) each head adds for a key
    dy rows and dx columns away from its query, with q the head's mean query over the recorded
    images. (The relative term of a BoT block depends on the query, so a head has no logit per
    offset by itself; its mean query shows what the head favours where.) Offsets run from
    -(H - 1) to H - 1, top to bottom, and -(W - 1) to W - 1, left to right."""
    if layer.position_encoding not in ("relative", "relative_only"):
        raise ConfigError(f"this layer's position encoding is {layer.position_encoding!r}; it has no relative logits")
    height, width = record.size
    scale = layer.qk_head_dim**-0.5 if layer.scale_position else 1.0
    mean_query = record.queries.mean(dim=(0, 2))  # (heads, d)
    rel_h = resize_position_table(layer.rel_h, 2 * height - 1).to(mean_query)
    rel_w = resize_position_table(layer.rel_w, 2 * width - 1).to(mean_query)
    rows = mean_query @ rel_h.T * scale  # (heads, 2H - 1)
    cols = mean_query @ rel_w.T * scale  # (heads, 2W - 1)
    return rows[:, :, None] + cols[:, None, :]



def query_index(point: tuple[float, float], size: tuple[int, int]) -> int:
    """The query (row-major index into H*W) whose cell holds ``point``, (y, x) as fractions of the image."""
    (y, x), (height, width) = point, size
    if not (0.0 <= y <= 1.0 and 0.0 <= x <= 1.0):
        raise ConfigError(f"a query point is (y, x) as fractions of the image height and width in [0, 1], got {point}")
    return min(int(y * height), height - 1) * width + min(int(x * width), width - 1)


def _picture(image: Tensor, mean: list[float], std: list[float]):
    """A normalised (C, H, W) image back to an (H, W[, 3]) array in [0, 1] for matplotlib."""
    shown = image.float() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    shown = shown.clamp(0, 1)
    return shown[0].numpy() if shown.shape[0] == 1 else shown.permute(1, 2, 0).numpy()


def draw_attention(
    image: Tensor,
    records: dict[str, AttentionRecord],
    points: list[tuple[float, float]],
    path: str,
    *,
    mean: list[float],
    std: list[float],
) -> None:
    """One row per (BoT block, query point): the image with the query marked, then each head's
    attention from that query over the image (the first image of the recorded batch)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    picture = _picture(image, mean, std)
    height, width = picture.shape[:2]
    heads = max(record.probs.shape[1] for record in records.values())
    rows = [(name, point) for name in records for point in points]
    figure = Figure(figsize=(1.8 * (heads + 1), 1.9 * len(rows)))
    axes = figure.subplots(len(rows), heads + 1, squeeze=False)
    cmap = "gray" if picture.ndim == 2 else None
    for row, (name, point) in zip(axes, rows):
        record = records[name]
        size = record.size
        query = query_index(point, size)
        row[0].imshow(picture, cmap=cmap)
        cell_y, cell_x = divmod(query, size[1])
        row[0].add_patch(
            Rectangle(
                (cell_x * width / size[1] - 0.5, cell_y * height / size[0] - 0.5), width / size[1], height / size[0],
                fill=False, edgecolor="cyan", linewidth=2,
            )
        )  # fmt: skip
        row[0].set_title(f"{name}\n{size[0]}x{size[1]} map", fontsize=7)
        for head, axis in enumerate(row[1:]):
            if head >= record.probs.shape[1]:
                axis.axis("off")
                continue
            attention = record.probs[0, head, query].reshape(size).float().numpy()
            axis.imshow(picture, cmap=cmap)
            axis.imshow(attention, cmap="magma", alpha=0.65, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
            axis.set_title(f"head {head}, max {attention.max():.2f}", fontsize=7)
        for axis in row:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle("attention of the marked query over the image, per head", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def draw_position_logits(model: nn.Module, records: dict[str, AttentionRecord], path: str) -> list[str]:
    """One row per BoT block with relative encodings, one picture per head of
    ``relative_position_maps``; returns the blocks drawn."""
    from matplotlib.figure import Figure

    layers = _layers(model)
    drawn = [n for n in records if layers[n].position_encoding in ("relative", "relative_only")]
    if not drawn:
        return []
    heads = max(layers[n].heads for n in drawn)
    figure = Figure(figsize=(2.0 * heads, 2.1 * len(drawn)))
    axes = figure.subplots(len(drawn), heads, squeeze=False)
    for row, name in zip(axes, drawn):
        logits = relative_position_maps(layers[name], records[name]).float().numpy()
        height, width = records[name].size
        extent = (-(width - 1) - 0.5, width - 1 + 0.5, height - 1 + 0.5, -(height - 1) - 0.5)
        for head, axis in enumerate(row):
            if head >= logits.shape[0]:
                axis.axis("off")
                continue
            shown = axis.imshow(logits[head], cmap="coolwarm", extent=extent)
            axis.set_title(f"{name} head {head}", fontsize=7)
            axis.set_xlabel("column offset", fontsize=6)
            axis.set_ylabel("row offset", fontsize=6)
            axis.tick_params(labelsize=5)
            figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04).ax.tick_params(labelsize=5)
    figure.suptitle("relative position logit per key offset (each head's mean query)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return drawn


def explain_checkpoint(
    checkpoint: str, image_path: str, output: str, points: list[tuple[float, float]] | None = None
) -> dict[str, object]:
    """``botnet attention``: the attention maps of a trained classifier (or a detector's backbone) on
    one image, drawn to ``output``, and the relative position logits to ``<output>_position.png``."""
    import os

    from .checkpoints import open_checkpoint
    from .tasks import TASKS

    points = points or [(0.5, 0.5), (0.25, 0.25)]
    for point in points:
        query_index(point, (1, 1))  # checks the fractions
    opened = open_checkpoint(checkpoint)
    model, batch, mean, std = TASKS[opened.task].attention_input(opened, image_path)
    records = record_attention(model, batch)
    draw_attention(batch[0], records, points, output, mean=mean, std=std)
    position = os.path.splitext(output)[0] + "_position.png"
    drawn = draw_position_logits(model, records, position)
    layers = {n: r.size for n, r in records.items()}
    return dict(maps=output, position=position if drawn else None, layers=layers, points=points)
