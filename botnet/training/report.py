"""What a run leaves for people: log lines, metrics.csv, summary.json, plots."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch

from ..files import atomic_write

__all__ = ["setup_logging", "write_json", "write_metrics_csv", "plot_curves", "plot_confusion", "plot_pr_curves"]
LOGGER_NAME = "botnet"


class _EscapingFormatter(logging.Formatter):
    """Lines with file names that are not valid UTF-8 are written with those bytes escaped, not dropped."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).encode("utf-8", "backslashreplace").decode("utf-8")


def setup_logging(run_dir: str | None, enabled: bool) -> logging.Logger:
    """Plain lines to stdout and RUN/train.log on the main process; silence elsewhere."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = False
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    if enabled:
        formatter = _EscapingFormatter("%(asctime)s %(message)s", "%H:%M:%S")
        handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
        if run_dir:
            handlers.append(logging.FileHandler(os.path.join(run_dir, "train.log"), encoding="utf-8"))
        for handler in handlers:
            handler.setFormatter(formatter)
            logger.addHandler(handler)
    return logger


def write_json(path: str, data: dict[str, Any]) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


def write_metrics_csv(path: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """One row per epoch; a value a row lacks (e.g. AP in an epoch without evaluation) is left empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buffer.getvalue().encode()))


def _save_figure(figure, path: str) -> None:
    atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=120, bbox_inches="tight"))


def plot_curves(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Loss (train and val) and val accuracy per epoch."""
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in rows]
    figure = Figure(figsize=(10, 4))
    loss_ax, acc_ax = figure.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in rows], marker="o", label="val")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend()
    acc_ax.plot(epochs, [r["val_top1"] for r in rows], marker="o", label="top-1")
    acc_ax.plot(epochs, [r["val_top5"] for r in rows], marker="o", label="top-5")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="val accuracy")
    acc_ax.legend()
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    _save_figure(figure, path)


def plot_confusion(
    confusion: torch.Tensor, classes: Sequence[str], path: str, title: str = "confusion matrix"
) -> None:
    """Confusion matrix (rows: true class, columns: predicted), with counts where it is small enough to read."""
    from matplotlib.figure import Figure

    n = len(classes)
    size = min(4 + 0.45 * n, 24)
    figure = Figure(figsize=(size, size))
    ax = figure.subplots()
    image = ax.imshow(confusion.numpy(), cmap="Blues")
    figure.colorbar(image, ax=ax, fraction=0.046)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        peak = confusion.max().item() or 1
        for i in range(n):
            for j in range(n):
                value = int(confusion[i, j])
                if value:
                    color = "white" if value > peak / 2 else "black"
                    ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    _save_figure(figure, path)


def plot_pr_curves(curves: dict[str, dict[str, Sequence[float]]], per_class: dict[str, dict], path: str) -> None:
    """Precision against recall per class, one panel per IoU type (``curves[kind][class]``: the precision
    at recall 0, 0.01, ..., 1), each class labelled with its AP50; classes without objects left out."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5 * len(curves), 4.5))
    axes = figure.subplots(1, len(curves), squeeze=False)[0]
    for ax, (kind, by_class) in zip(axes, curves.items()):
        points = len(next(iter(by_class.values())))
        recall = [i / (points - 1) for i in range(points)]
        for name, precision in by_class.items():
            ap50 = per_class[name][f"{kind}_AP50"]
            if ap50 is not None:
                ax.plot(recall, precision, label=f"{name} (AP50 {ap50:.1f})")
        what = "boxes" if kind == "bbox" else "masks"
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"{what}, IoU 0.5")
        ax.grid(alpha=0.3)
        if len(by_class) <= 20:
            ax.legend(fontsize=8, loc="lower left")
    _save_figure(figure, path)
