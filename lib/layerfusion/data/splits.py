"""Seeded, stratified splitting: a test split from one file, validation carved from train, subsamples.

Every function returns positions (sorted, so rows keep source order) and draws from its own random stream
(``numpy.random.default_rng([seed, stream])``), so e.g. the test subsample does not depend on ``validation_size``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TEST_STREAM = 4
"""Random stream of ``split_test`` (0 carves validation, 1-3 subsample train, validation and test)."""


def _allocate(counts: np.ndarray, total: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per-class sizes summing to ``total``: ``low`` first, the rest proportional to what is left of each class
    (largest remainder, ties to the lower class id), never above ``high``."""
    weight = np.maximum(counts - low, 0).astype(np.float64)
    target = (total - low.sum()) * weight / max(weight.sum(), 1.0)
    alloc = low + np.minimum(np.floor(target).astype(np.int64), high - low)
    while alloc.sum() < total:
        room = np.flatnonzero(alloc < high)
        alloc[room[np.argmax((low + target - alloc)[room])]] += 1
    return alloc


def _stratified_pick(labels: np.ndarray, alloc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions drawn without replacement, ``alloc[c]`` of class ``c``, returned sorted (source order kept)."""
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in enumerate(alloc) if k > 0]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def _size(size: float | int, n: int, name: str) -> int:
    """``size`` as a row count: a float is a fraction of ``n`` in [0, 1), an int a count."""
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a fraction in [0, 1) or a row count, got {size!r}")
    if isinstance(size, (float, np.floating)):
        if not 0.0 <= size < 1.0:
            raise ValueError(f"{name}={size} as a fraction must be in [0, 1); pass an int for a row count")
        return int(round(size * n))
    if size < 0:
        raise ValueError(f"{name}={size} must be >= 0")
    return int(size)


def carve_validation(labels: Sequence[int] | np.ndarray, validation_size: float | int, n_classes: int,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split train positions into (train, validation), stratified by label and seeded.

    Each class gives the validation split its proportional share (largest remainder), but always keeps at least one
    row in train, so a class with a single train row (R52's ``platinum``) stays in train instead of failing.
    """
    y = np.asarray(labels, dtype=np.int64)
    n_val = _size(validation_size, len(y), "validation_size")
    counts = np.bincount(y, minlength=n_classes)
    high = np.maximum(counts - 1, 0)
    if n_val > high.sum():
        raise ValueError(f"validation_size={validation_size} asks for {n_val} validation rows, but at most "
                         f"{int(high.sum())} can be taken while keeping every class in train; pass a smaller value")
    rng = np.random.default_rng([int(seed), 0])
    val = _stratified_pick(y, _allocate(counts, n_val, np.zeros_like(counts), high), rng)
    train = np.setdiff1d(np.arange(len(y)), val)
    return train, val


def split_test(labels: Sequence[int] | np.ndarray, test_size: float | int, n_classes: int, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Split the rows of one file into (train, test) positions, stratified and seeded.

    Every class present lands in both splits (so each needs at least two rows; callers name the ones that do not),
    the rest proportionally (largest remainder).
    """
    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=n_classes)
    present = counts > 0
    n_test = _size(test_size, len(y), "test_size")
    low, high = present.astype(np.int64), np.maximum(counts - 1, 0)
    if not low.sum() <= n_test <= high.sum():
        raise ValueError(f"test_size={test_size} asks for {n_test} test rows, but a stratified split of {len(y)} rows "
                         f"in {int(present.sum())} classes needs between {int(low.sum())} and {int(high.sum())}")
    rng = np.random.default_rng([int(seed), TEST_STREAM])
    test = _stratified_pick(y, _allocate(counts, n_test, low, high), rng)
    return np.setdiff1d(np.arange(len(y)), test), test


def subsample(labels: Sequence[int] | np.ndarray, max_rows: int | None, n_classes: int, seed: int = 0,
              stream: int = 1) -> np.ndarray:
    """Positions of a stratified, seeded subsample of at most ``max_rows`` rows (all positions when it fits).

    Class sizes are proportional (largest remainder) with at least one row of every class present whenever
    ``max_rows`` is at least the number of classes present; otherwise the largest classes get the rows.
    ``stream`` separates the random streams of different splits under one seed.
    """
    y = np.asarray(labels, dtype=np.int64)
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer))
                                 or max_rows < 1):
        raise ValueError(f"max_train/max_validation/max_test must be a positive int or None, got {max_rows!r}")
    if max_rows is None or max_rows >= len(y):
        return np.arange(len(y))
    counts = np.bincount(y, minlength=n_classes)
    present = counts > 0
    low = present.astype(np.int64) if max_rows >= present.sum() else np.zeros_like(counts)
    rng = np.random.default_rng([int(seed), int(stream)])
    return _stratified_pick(y, _allocate(counts, int(max_rows), low, counts), rng)
