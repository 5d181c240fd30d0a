"""File helpers every stage shares: atomic writes, content hashes and an inter-process lock.

One implementation each, so the cache, the converted-model store and the results store fail the same way: a write
goes to a temp file in the target's folder and is moved into place with ``os.replace``, so a reader sees the old file
or the new one, never half of one; a failed write (full disk, read-only folder, a kill) leaves no temp file behind
that a later run would mistake for data. Locks are ``filelock`` locks, so two processes never build the same thing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"
"""Every temp file name contains this, so a later run can sweep what a killed one left (``remove_temp_files``)."""

_HASH_CACHE: dict[tuple[str, int, int], str] = {}
RACY_SECONDS = 2.0
"""Files younger than this are never memoised by ``sha256_file`` (their mtime may not yet tell rewrites apart)."""


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh hidden temp name beside ``path`` (same folder, so ``os.replace`` is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` all or nothing: temp file, flush, fsync, ``os.replace``; returns ``path``.

    On any error (``ENOSPC``, ``EROFS``, a permission error) the temp file is removed and the error re-raised, so
    the previous content of ``path``, if any, is untouched.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write_bytes`` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> Path:
    """``atomic_write_bytes`` for ``json.dumps(obj, **dump_kwargs)`` with a trailing newline."""
    return atomic_write_text(path, json.dumps(obj, **dump_kwargs) + "\n")


def remove_temp_files(folder: str | os.PathLike) -> int:
    """Delete temp files that writers in ``folder`` left behind when they were killed; returns how many.

    Call it only while holding the folder's lock, so no live writer's temp file is removed.
    """
    removed = 0
    for tmp in Path(folder).glob(f".*{TMP_MARK}*"):
        if tmp.is_file():
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
    return removed


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_files(paths: list[str | os.PathLike] | tuple[str | os.PathLike, ...]) -> str:
    """Hex sha256 over the contents of ``paths`` in order, streamed (weights of several GB never sit in memory)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of one file, memoised per (path, size, mtime) for the life of the process.

    A file modified in the last ``RACY_SECONDS`` is hashed afresh on every call and not memoised: file systems
    stamp mtimes with a coarse clock, so a same-size rewrite moments later can keep the same (size, mtime) and would
    otherwise return the old hash (git's "racily clean" problem; it made hash checks depend on test timing).
    """
    p = Path(path).resolve()
    stat = p.stat()
    key = (str(p), stat.st_size, stat.st_mtime_ns)
    if key in _HASH_CACHE:
        return _HASH_CACHE[key]
    digest = sha256_files([p])
    if time.time_ns() - stat.st_mtime_ns > RACY_SECONDS * 1e9:
        _HASH_CACHE[key] = digest
    return digest


@contextlib.contextmanager
def locked(lock_file: str | os.PathLike, timeout: float = -1) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``lock_file`` (``filelock``; waits up to ``timeout`` s, -1 = forever).

    The lock is released when the holder exits or dies, so a killed process never leaves a folder locked.
    """
    from filelock import FileLock

    Path(lock_file).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_file), timeout=timeout):
        yield
