"""What a cost depends on, counted exactly: token positions under the engine's batching plan, parameter bytes of a
model, and bytes stored on disk (the embedding cache). No timing and no memory meter here (``layerfusion.meter``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def padded_tokens(lengths: Sequence[int], token_budget: int, max_batch_size: int, max_padding: float = 1.0) -> int:
    """Token positions computed including padding under the engine's batching plan (``extract.plan_batches``).

    Texts are sorted longest first and packed greedily while ``batch_size * longest_in_batch <= token_budget``,
    ``batch_size <= max_batch_size`` and at most ``max_padding`` of the batch's positions are padding (a single
    text longer than the budget forms its own batch).
    """
    from layerfusion.extract import plan_batches

    if int(token_budget) < 1 or int(max_batch_size) < 1:
        raise ValueError(f"padded_tokens: token_budget ({token_budget}) and max_batch_size ({max_batch_size}) "
                         "must be >= 1")
    lengths = np.asarray([int(x) for x in lengths], dtype=np.int64)
    plan = plan_batches(lengths, int(token_budget), int(max_batch_size), max_padding=max_padding)
    return int(sum(len(batch) * int(lengths[batch].max()) for batch in plan))


def parameter_stats(model: Any) -> dict[str, int]:
    """Number of parameters and bytes of parameters and buffers of a torch module."""
    params = list(model.parameters())
    return {
        "n_parameters": int(sum(p.numel() for p in params)),
        "parameter_bytes": int(sum(p.numel() * p.element_size() for p in params)),
        "buffer_bytes": int(sum(b.numel() * b.element_size() for b in model.buffers())),
    }


def storage_bytes(path: str | Path) -> int:
    """Total size in bytes of the regular files under ``path`` (a file counts itself; symlinks are not followed)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"storage_bytes: {root} does not exist")
    if root.is_file():
        return root.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return int(total)


def storage_files(path: str | Path) -> int:
    """Number of regular files under ``path`` (symlinks not followed)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"storage_files: {root} does not exist")
    return 1 if root.is_file() else sum(1 for p in root.rglob("*") if p.is_file() and not p.is_symlink())
