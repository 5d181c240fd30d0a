"""Warnings raised while a chapter computes, counted where they arose instead of printed into the book.

A warning printed in a notebook shows the local path of the file that raised it and interrupts the page; the
chapters capture them around each step (``WarningLog.capture``) and publish one table (``WarningLog.table``): where
(model, dataset, step, ...), the warning's category, its message with folder paths cut to file names, and how often
it was raised. Nothing is silenced: every warning is counted.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.\-]+)+[\\/]([\w.\-]+)")


def _message(text: str) -> str:
    """The warning's text on one line, folder paths cut to their file names."""
    return " ".join(_PATH.sub(r"\1", text).split())


class WarningLog:
    """Counts the warnings raised inside ``capture`` blocks, keyed by where they were raised."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[tuple[tuple[str, Any], ...], str, str]] = Counter()
        self._keys: list[str] = []

    @contextmanager
    def capture(self, **where: Any) -> Iterator[None]:
        """Record (not print) every warning raised in the block, under the labels ``where`` (e.g. model, step)."""
        for key in where:
            if key not in self._keys:
                self._keys.append(key)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for item in caught:
            self._counts[(tuple(where.items()), item.category.__name__, _message(str(item.message)))] += 1

    def table(self) -> pd.DataFrame:
        """One row per distinct warning and place: the ``where`` labels, ``category``, ``message``, ``count``."""
        rows = [{**dict(where), "category": category, "message": message, "count": count}
                for (where, category, message), count in self._counts.items()]
        return pd.DataFrame(rows, columns=[*self._keys, "category", "message", "count"])
