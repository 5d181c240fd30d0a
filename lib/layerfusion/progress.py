"""Progress bars for long loops (extraction, the study's sweeps): texts/s and an ETA, to the output or to a file.

When ``$LAYERFUSION_PROGRESS_FILE`` names a file, every bar is appended there instead of the output, whatever
``progress`` says; a caller that runs code whose output is kept (a notebook kernel) sets it and follows the file, so
progress is visible while the kept output stays clean.
"""

from __future__ import annotations

import os
from typing import Any

PROGRESS_FILE_ENV = "LAYERFUSION_PROGRESS_FILE"
"""Names a file that progress bars append to instead of the output (see ``progress_bar``)."""


class AppendToFile:
    """A write-only text sink that appends every write to ``path`` (opened per write: nothing stays open, and a
    reader can follow the file while the writer runs)."""

    encoding = "utf-8"

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, text: str) -> int:
        """Append ``text`` to the file; return the number of characters written."""
        with open(self.path, "a", encoding=self.encoding) as fh:
            return fh.write(text)

    def flush(self) -> None:
        """Nothing to flush: every write is closed at once."""


def progress_bar(total: int, desc: str, progress: bool = True, unit: str = "text") -> Any:
    """A tqdm bar over ``total`` items (texts by default, or ``unit``) that shows the rate and an ETA.

    When ``$LAYERFUSION_PROGRESS_FILE`` names a file, the bar is appended there whatever ``progress`` and
    ``TQDM_DISABLE`` say, and nothing goes to the output. Otherwise this is the usual ``tqdm.auto`` bar, shown when
    ``progress``.
    """
    side = os.environ.get(PROGRESS_FILE_ENV)
    if side:
        from tqdm import tqdm as plain_tqdm

        return plain_tqdm(total=total, desc=desc, unit=unit, file=AppendToFile(side), disable=False,
                          mininterval=1.0, ncols=100)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not progress)
