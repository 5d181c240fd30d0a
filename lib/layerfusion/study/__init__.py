"""The study: this project's use of the engine, chapter by chapter.

``StudyConfig`` is a profile as typed settings, ``Study`` its data and cached features; ``layerfusion.study.chapters``
holds one analysis module per chapter of the book; ``claims``, ``results``, ``report``, ``plots`` and ``cli`` turn the
analyses into the book. Nothing in the engine imports from here.
"""

from __future__ import annotations

from layerfusion.study.features import Study, StudyConfig

__all__ = ["Study", "StudyConfig"]
