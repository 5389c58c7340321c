"""The data section: split sizes, the images the runs used, normalisation, the split's checksum,
and the class proportions figure."""

from __future__ import annotations

from hpstudy.report import figures
from hpstudy.report.blocks import (
    Block,
    FigureNumbers,
    Heading,
    Image,
    Para,
    Rendered,
    Section,
    Table,
)
from hpstudy.report.text import DASH, cell, code
from hpstudy.study.analysis import Analysis


def vector(values: list[float]) -> str:
    return ", ".join(f"{v:.4f}" for v in values) if values else DASH


def dataset_text(dataset: str, classes: int, image_shape: list[int]) -> str:
    """What the data is: CIFAR by its name, the user's by its source, with its classes and
    image size (the user's data has no superclasses, so the report shows none)."""
    names = {"cifar100": "CIFAR-100", "cifar10": "CIFAR-10"}
    shown = names.get(dataset) or code(dataset)
    size = "x".join(map(str, image_shape[1:]))
    channels = "RGB" if image_shape[:1] == [3] else f"{image_shape[0]} channel(s)"
    return f"{shown}: {classes} classes, {size} {channels} images"


def render(a: Analysis, numbers: FigureNumbers) -> Rendered:
    d = a.data
    rows = [
        ["dataset", dataset_text(d.dataset, d.num_classes, d.image_shape)],
        ["train / val / test images", f"{d.train_size:,} / {d.val_size:,} / {d.test_size:,}"],
        ["mean (R, G, B)", vector(d.mean)],
        ["std (R, G, B)", vector(d.std)],
        ["val indices sha256", code(d.val_indices_sha256)],
    ]
    # budgets train on subsets of the split: say how many images the runs really saw
    used = "; ".join(f"{cell(u.train, '{:,}'.format)} / {cell(u.val, '{:,}'.format)}"
                     for u in d.images_used)  # fmt: skip
    if used:
        rows.insert(1, ["train / val images used by the runs (limit_train / limit_val)", used])
    blocks: list[Block] = [Heading("Data"), Table(["", "value"], rows)]
    number = numbers.take(a.report.figures.class_proportions)
    if d.class_proportions:
        # the images the runs trained on where they are fewer than the split's (recorded at
        # the study's opening); else the split's, and where runs saw a subset, how many
        proportions, what = d.class_proportions, "the train split"
        mean = d.class_proportion_mean
        if d.used_class_proportions and d.used_train:
            proportions = d.used_class_proportions
            what = f"the first {d.used_train:,} of the train split's {d.train_size:,} images"
            what += ", which the runs trained on"
            mean = sum(proportions) / len(proportions)
        else:
            fewest = min((u.train for u in d.images_used if u.train is not None), default=None)
            if fewest is not None and fewest < d.train_size:
                what += (f" (the runs trained on its first {fewest:,} of {d.train_size:,} "
                         "images; their proportions differ by sampling)")  # fmt: skip
        blocks.append(Image(
            f"figures/fig{number}_class_proportions.png",
            f"Figure {number}: proportion of each class in {what}; red line: the mean "
            f"proportion {mean:.3f}.",
            figures.class_proportions(number, proportions, what),
        ))  # fmt: skip
    else:
        blocks.append(Para(f"Figure {number} skipped: the state has no class proportions."))
    return Rendered(blocks)


SECTION = Section("data", render)
