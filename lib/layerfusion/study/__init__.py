"""The study: this project's use of the engine, chapter by chapter.

``StudyConfig`` (``settings``) is a profile as typed settings, ``Study`` its data and cached features;
``layerfusion.study.chapters`` holds one analysis module per chapter of the book; ``selection``, ``claims``,
``results``, ``report``, ``plots`` and ``cli`` turn the analyses into the book. Nothing in the engine imports from
here.
"""

from __future__ import annotations

import warnings

# The chapters run in Jupyter kernels, where tqdm.auto warns on import when ipywidgets is missing (its bars fall back
# to text); the notice would print into every chapter of the book, so it is silenced before the engine is imported.
warnings.filterwarnings("ignore", message="IProgress not found")

from layerfusion.study.features import Study, StudyConfig  # noqa: E402

__all__ = ["Study", "StudyConfig"]
