"""Reading labelled text: split files (CSV, TSV, JSONL, parquet) or ``datasets`` splits, every row checked.

Each reader returns ``Rows`` (texts, raw labels and where each row came from), so an error names the file and the
line (or row): a missing column, an empty text, a label that is not a class, bytes that are not UTF-8.
``to_classes`` then turns the raw labels of all splits into class ids and label names: from ``labels.json`` when the
folder has one, else from string labels (sorted), else from numbers (sorted).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LABELS_FILE = "labels.json"
SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
FORMAT_HINT = ("a dataset folder holds train and test files (train.csv, .tsv, .jsonl or .parquet; the same for test) "
               "with 'text' and 'label' columns, and optionally labels.json (the label names in class-id order)")
_INT = re.compile(r"-?\d+")


@dataclass
class Rows:
    """One split as read: texts, raw labels (int or str) and, per row, the line or row it came from."""

    source: str
    unit: str
    texts: list[str] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    label_names: list[Any] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)

    def where(self, i: int) -> str:
        """``"<file>, line 12"``: where row ``i`` came from."""
        return f"{self.source}, {self.unit} {self.numbers[i]}"

    def add(self, number: int, text: Any, label: Any, label_name: Any = None) -> None:
        """Append one row after checking its text (a non-empty string)."""
        where = f"{self.source}, {self.unit} {number}"
        if text is None:
            raise ValueError(f"{where}: no text; every row needs a non-empty 'text'")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: empty or whitespace-only text; every row needs a non-empty 'text'")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise ValueError(f"{where}: no label; every row needs a 'label'")
        self.numbers.append(number)
        self.texts.append(text)
        self.labels.append(label)
        self.label_names.append(label_name)


def read_text(path: Path) -> str:
    """The file decoded as UTF-8 (a leading byte-order mark dropped); other bytes raise naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); re-save the file "
                         "as UTF-8") from None


def read_labels(path: Path) -> list[str]:
    """The label names of ``labels.json`` (a JSON list of unique, non-empty strings, in class-id order)."""
    try:
        names = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); it must be a list of label names") from exc
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{path}: must be a non-empty JSON list of non-empty label-name strings")
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: label names must be unique, got {names}")
    return names


def read_jsonl(path: Path) -> Rows:
    """One JSON object per line with ``text`` and ``label`` (and optionally ``label_name``)."""
    rows = Rows(str(path), "line")
    for lineno, line in enumerate(io.StringIO(read_text(path)), start=1):
        where = f"{path}, line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: malformed JSON ({exc.msg}); each line must be one JSON object "
                             '{"text": ..., "label": ...}') from exc
        if not isinstance(row, dict) or not {"text", "label"} <= set(row):
            raise ValueError(f"{where}: expected an object with 'text' and 'label' keys")
        rows.add(lineno, row["text"], row["label"], row.get("label_name"))
    return rows


def _check_columns(source: str, columns: Sequence[str]) -> None:
    missing = [c for c in ("text", "label") if c not in columns]
    if missing:
        raise ValueError(f"{source}: no {' or '.join(repr(c) for c in missing)} column (it has "
                         f"{', '.join(map(str, columns)) or 'none'}); {FORMAT_HINT}")


def read_delimited(path: Path, delimiter: str) -> Rows:
    """A CSV or TSV file with a header row naming ``text`` and ``label`` (other columns are ignored)."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    _check_columns(str(path), reader.fieldnames or [])
    rows = Rows(str(path), "line")
    try:
        for row in reader:
            label = row["label"]
            rows.add(reader.line_num, row["text"], label.strip() if isinstance(label, str) else label)
    except csv.Error as err:
        raise ValueError(f"{path}, line {reader.line_num}: {err}") from err
    return rows


def read_parquet(path: Path) -> Rows:
    """A parquet file with ``text`` and ``label`` columns; rows are numbered from 1."""
    import pandas as pd

    frame = pd.read_parquet(path)
    _check_columns(str(path), list(frame.columns))
    rows = Rows(str(path), "row")
    for i, (text, label) in enumerate(zip(frame["text"].tolist(), frame["label"].tolist()), start=1):
        rows.add(i, text, label)
    return rows


def read_file(path: Path) -> Rows:
    """Read one split file by its suffix (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix in (".csv", ".tsv"):
        return read_delimited(path, "," if suffix == ".csv" else "\t")
    if suffix == ".parquet":
        return read_parquet(path)
    raise ValueError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")


def read_split(name: str, split: Any) -> Rows:
    """A ``datasets.Dataset`` split with ``text`` and ``label`` columns (a ``ClassLabel`` gives class ids)."""
    source = f"DatasetDict[{name!r}]"
    _check_columns(source, split.column_names)
    rows = Rows(source, "row")
    for i, (text, label) in enumerate(zip(split["text"], split["label"]), start=1):
        rows.add(i, text, label)
    return rows


def split_files(folder: Path) -> dict[str, Path]:
    """The split files of a dataset folder: ``train`` and ``test`` (required) and ``validation`` (optional)."""
    found: dict[str, Path] = {}
    for split in ("train", "validation", "test"):
        hits = [folder / f"{split}{s}" for s in SUFFIXES if (folder / f"{split}{s}").is_file()]
        if len(hits) > 1:
            raise ValueError(f"{folder}: {' and '.join(h.name for h in hits)} both hold the {split} split; keep one")
        if hits:
            found[split] = hits[0]
    missing = [s for s in ("train", "test") if s not in found]
    if missing:
        raise FileNotFoundError(f"{folder}: no {' or '.join(missing)} file; {FORMAT_HINT}")
    return found


def _as_int(label: Any) -> int | None:
    """``label`` as an integer class id if it is one (an int, an integral float, a string of digits), else None."""
    if isinstance(label, (bool, np.bool_)):
        return None
    if isinstance(label, (int, np.integer)):
        return int(label)
    if isinstance(label, (float, np.floating)) and float(label).is_integer():
        return int(label)
    if isinstance(label, str) and _INT.fullmatch(label.strip()):
        return int(label)
    return None


def to_classes(splits: Mapping[str, Rows], names: Sequence[str] | None = None
               ) -> tuple[list[str], dict[str, np.ndarray]]:
    """Class ids per split and the label names.

    With ``names`` (``labels.json``), a label is one of the names or an integer id indexing them. Without, string
    labels become sorted names; if every label is an integer, the sorted distinct integers are the classes (named by
    their digits, so labels 0..K-1 keep their ids).
    """
    from_file = names is not None
    if names is None:
        raw = [label for rows in splits.values() for label in rows.labels]
        numbers = [_as_int(label) for label in raw]
        if all(n is not None for n in numbers):
            names = [str(n) for n in sorted(set(numbers))]
        else:
            names = sorted({str(label) for label in raw})
    index = {name: i for i, name in enumerate(names)}
    out = {}
    for split, rows in splits.items():
        ids = np.empty(len(rows.labels), dtype=np.int64)
        for i, label in enumerate(rows.labels):
            number = _as_int(label)
            if isinstance(label, str) and label in index:
                ids[i] = index[label]
            elif from_file and number is not None and 0 <= number < len(names):
                ids[i] = number
            elif not from_file and str(label if number is None else number) in index:
                ids[i] = index[str(label if number is None else number)]
            else:
                raise ValueError(f"{rows.where(i)}: label {label!r} out of range; labels are integers "
                                 f"0..{len(names) - 1} indexing labels.json, or its names")
            given = rows.label_names[i]
            if given is not None and given != names[ids[i]]:
                raise ValueError(f"{rows.where(i)}: label_name {given!r} disagrees with labels.json, where label "
                                 f"{ids[i]} is {names[ids[i]]!r}")
        out[split] = ids
    return list(names), out
