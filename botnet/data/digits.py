"""scikit-learn's digits: 1,797 real 8x8 grey scans of handwritten digits, shipped offline.

The held-out test split is fixed (stratified, 20%, independent of the training
seed), so every run reports accuracy on the same 360 images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors

__all__ = ["DIGITS_CLASSES", "TensorImageDataset", "digits_splits"]

DIGITS_CLASSES = [str(i) for i in range(10)]
TEST_FRACTION = 0.2
SPLIT_SEED = 0


class TensorImageDataset(Dataset):
    """Images held in memory as a uint8 (N, C, H, W) tensor, with integer labels."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise ValueError("TensorImageDataset needs uint8 images (N, C, H, W) and N labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = tv_tensors.Image(self.images[index])
        return (self.transform(image) if self.transform else image), int(self.labels[index])


def digits_splits() -> tuple[TensorImageDataset, TensorImageDataset]:
    """The (train, test) splits as grey uint8 8x8 images (values 0..16 scaled to 0..255)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=TEST_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return (
        TensorImageDataset(images[train_idx], labels[train_idx]),
        TensorImageDataset(images[test_idx], labels[test_idx]),
    )
