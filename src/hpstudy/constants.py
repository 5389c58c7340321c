"""The datasets' fixed numbers, in one place: class counts, image shape, the validation share."""

from __future__ import annotations

NUM_CLASSES = 100  # CIFAR-100 fine labels
NUM_SUPERCLASSES = 20  # CIFAR-100 coarse labels
# classes and superclasses per dataset (CIFAR-10 has no coarse labels)
DATASET_CLASSES = {"cifar100": NUM_CLASSES, "cifar10": 10}
DATASET_SUPERCLASSES = {"cifar100": NUM_SUPERCLASSES, "cifar10": 0}
IMAGE_SHAPE = (3, 32, 32)  # channels, height, width of one image
# The report's split: 50,000 training images -> 40,000 train / 10,000 val (SPEC §1).
VAL_FRACTION = 0.2


def val_size(n: int) -> int:
    """Validation images of an n-image training file: 10,000 of 50,000, as random_split gives."""
    return n - int((1 - VAL_FRACTION) * n)


def num_classes(dataset: str) -> int:
    """Output classes of a model trained on `dataset` (cifar100 or cifar10)."""
    return DATASET_CLASSES[dataset]
