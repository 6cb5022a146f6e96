"""Classification data: the bundled digits, or the user's image folders."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from torch.utils.data import Dataset

from .digits import DIGITS_CLASSES, TensorImageDataset, digits_splits
from .folder import BadImages, DatasetError, ImageFolderSplit, load_image_folder, read_image
from .transforms import CROP_SCALE_MIN, IMAGENET_MEAN, IMAGENET_STD, default_augment, eval_transform, train_transform

__all__ = [
    "DIGITS",
    "DIGITS_CLASSES",
    "IN_MEMORY_BYTES",
    "BadImages",
    "ClassificationData",
    "DatasetError",
    "ImageFolderSplit",
    "TensorImageDataset",
    "digits_splits",
    "keep_in_memory",
    "load_image_folder",
    "load_classification_data",
    "read_image",
    "eval_transform",
    "train_transform",
]

DIGITS = "digits"
DIGITS_MEAN, DIGITS_STD = (0.5,), (0.5,)
# grey folders: ImageNet's statistics averaged over the channels, so that a pretrained stem whose
# filters are summed to one channel (in_chans=1) sees what it was trained on
GREY_MEAN, GREY_STD = (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)


@dataclass
class ClassificationData:
    """Train and held-out splits with their transforms and what a saved model must remember."""

    name: str  # "digits" or the folder given
    train: Dataset
    val: Dataset
    classes: list[str]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: bool  # photos: random-resized / centre crops; scans and digits: the whole image resized
    bad_images: BadImages
    heldout: set[str] | None = None  # names (relative to the folder) of the images botnet held out as val
    report: list[str] = field(default_factory=list)  # log lines: layout, splits, counts, what was held or left out


# Decoded images are kept in memory when both splits together fit in this many bytes: a folder of small
# images then costs one decoding, not one per epoch (a 32-px colour image takes 3 kB; 100,000 of them fit).
IN_MEMORY_BYTES = 384 * 2**20


def keep_in_memory(*splits: ImageFolderSplit, limit_bytes: int = IN_MEMORY_BYTES) -> bool:
    """Decode every image of ``splits`` once and keep the pixels, if they fit in ``limit_bytes`` together;
    True if all are kept (else none is)."""
    budget = limit_bytes
    for split in splits:
        if not split.keep_in_memory(budget, workers=len(os.sched_getaffinity(0))):
            for other in splits:
                other.decoded = None
            return False
        budget -= split.decoded_bytes
    return True


def load_classification_data(
    data: str | None,
    img_size: int,
    *,
    randaugment: bool = False,
    crop_scale_min: float = CROP_SCALE_MIN,
    skip_bad: bool = False,
    train: bool = True,
    hflip: bool | None = None,
    in_chans: int | None = None,
    augment: str | None = None,
    heldout: set[str] | None = None,
) -> ClassificationData:
    """The bundled digits (``data`` None or "digits") or an image folder DIR in any layout of
    ``botnet.data.folder`` (DIR/CLASS/*, or DIR/train/ with DIR/val/; without a val folder a val share is
    held out, and ``heldout`` names those images).
    ``train=False`` skips building the training pipeline (evaluation only). ``in_chans``: 1 reads a
    folder's images grey, 3 (default) in colour. ``augment``: "crop" (random-resized crops) or "jitter" (the
    whole image, a small affine jitter); by default :func:`~botnet.data.transforms.default_augment` of grey
    images (the digits, ``in_chans`` 1). ``hflip``: random flips in training (default:
    :func:`~botnet.data.transforms.default_hflip`). ``heldout``: the names a resumed run held out (its
    heldout.txt), instead of choosing them."""
    digits = data in (None, DIGITS)
    crop = (augment or default_augment(grey=digits or in_chans == 1)) == "crop"
    if digits:
        train_split, val_split = digits_splits()
        result = ClassificationData(DIGITS, train_split, val_split, DIGITS_CLASSES, 1, DIGITS_MEAN, DIGITS_STD, crop, BadImages())
    else:
        grey = in_chans == 1
        folder = load_image_folder(data, skip_bad=skip_bad, mode="L" if grey else "RGB", heldout=heldout)
        keep_in_memory(folder.train, folder.val)
        mean, std = (GREY_MEAN, GREY_STD) if grey else (IMAGENET_MEAN, IMAGENET_STD)
        result = ClassificationData(
            data, folder.train, folder.val, folder.train.classes, 1 if grey else 3, mean, std, crop, folder.bad,
            folder.heldout, folder.report,
        )  # fmt: skip
    if train:
        result.train.transform = train_transform(
            img_size, result.mean, result.std, crop=result.crop, crop_scale_min=crop_scale_min, randaugment=randaugment,
            hflip=hflip,
        )
    result.val.transform = eval_transform(img_size, result.mean, result.std, crop=result.crop)
    return result
