"""The train/validation split of the training file: seeded indices, and the one 80/20 rule."""

from __future__ import annotations

import hashlib

import torch

from hpstudy.constants import val_size
from hpstudy.errors import HpstudyError


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices, identical to random_split(range(n), ...) under manual_seed(seed)."""
    if not 0 < val_size < n:
        raise HpstudyError(f"validation size {val_size} must be between 1 and {n - 1} (n = {n})")
    if not -(2**63) <= seed < 2**64:  # what torch.Generator.manual_seed accepts
        raise HpstudyError(f"split seed {seed} is out of range (-2**63 .. 2**64-1)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n - val_size], perm[n - val_size :]


def train_val_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices of the 80/20 split of n images: the one place the ratio is applied.

    The validation share comes from `hpstudy.constants.val_size` (50,000 -> 40,000 / 10,000).
    """
    if n < 2:
        raise HpstudyError(
            f"the training file holds {n} image(s): a train/validation split needs at least 2"
        )
    return split_indices(n, val_size(n), seed)


def indices_sha256(indices: torch.Tensor) -> str:
    """sha256 of the indices as decimal text, one per line: comparable across tools."""
    text = "".join(f"{i}\n" for i in indices.tolist())
    return hashlib.sha256(text.encode()).hexdigest()
