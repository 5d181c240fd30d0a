"""Where profiles live and how a profile file is read: ``<PARAMS_DIR>/<name>.yaml`` by name, or any YAML file by path.

The shipped profiles (ci, quick, default, paper) are package data of the study (``layerfusion/study/params/``, in
the checkout a link to ``params/``), so a ``pip install``-ed ``layerfusion extract --profile ci`` finds them outside
the checkout; ``$LAYERFUSION_PARAMS_DIR`` names another folder of profiles.

``locate`` finds the file, ``read`` returns its raw mapping with the profile's name checked; the typed settings
(``layerfusion.study.settings.StudyConfig.from_profile``) validate what it holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from layerfusion.study.schema import ProfileError

SUFFIXES = (".yaml", ".yml")
PARAMS_ENV = "LAYERFUSION_PARAMS_DIR"
PARAMS_DIR = Path(__file__).resolve().parent / "params"
"""The shipped profiles (package data)."""


def _params_dir(params_dir: str | os.PathLike | None) -> Path:
    if params_dir is None:
        params_dir = os.environ.get(PARAMS_ENV) or PARAMS_DIR
    folder = Path(params_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"profile folder {folder} does not exist; pass params_dir= pointing at the folder "
                                f"holding <profile>.yaml files")
    return folder


def available(params_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the profiles in ``params_dir`` (default ``$LAYERFUSION_PARAMS_DIR``, else the shipped ones), sorted."""
    return sorted(p.stem for p in _params_dir(params_dir).iterdir() if p.suffix in SUFFIXES and p.is_file())


def is_path(name_or_path: str | os.PathLike) -> bool:
    """Whether ``name_or_path`` names a file (has a folder part or a YAML suffix) rather than a profile in params/."""
    text = os.fspath(name_or_path)
    return isinstance(name_or_path, os.PathLike) or "/" in text or os.sep in text or text.endswith(SUFFIXES)


def locate(name_or_path: str | os.PathLike, params_dir: str | os.PathLike | None = None) -> Path:
    """The YAML file of a profile: ``params/<name>.yaml`` for a name, the file itself for a path (absolute)."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not os.fspath(name_or_path):
        raise KeyError(f"profile must be a profile name or the path of a YAML file, got {name_or_path!r}")
    if is_path(name_or_path):
        path = Path(name_or_path).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"profile file {path} does not exist; pass a profile name "
                                    f"({', '.join(available(params_dir))}) or the path of a YAML file")
        return path
    folder = _params_dir(params_dir)
    for suffix in SUFFIXES:
        if (folder / f"{name_or_path}{suffix}").is_file():
            return folder / f"{name_or_path}{suffix}"
    raise KeyError(f"unknown profile {os.fspath(name_or_path)!r}; available profiles in {folder}: "
                   f"{available(folder)}, or pass the path of a YAML file")


def read(path: str | os.PathLike, name: str | None = None) -> dict[str, Any]:
    """The raw mapping of a profile file, with ``profile`` filled in (the file's stem when the file has none).

    A profile found by ``name`` in ``params/`` must declare that name (``profile: ci`` in ``ci.yaml``); a file given
    by path may declare any name, and its results go to ``results/<that name>/``.
    """
    path = Path(path)
    source = f"profile file {path}: "
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProfileError((), f"not valid YAML ({' '.join(str(exc).split())})", source) from None
    if not isinstance(raw, dict):
        raise ProfileError((), f"must hold a mapping of settings, got {type(raw).__name__}", source)
    declared = raw.setdefault("profile", name or path.stem)
    if not isinstance(declared, str) or not declared or Path(declared).name != declared or declared.startswith("."):
        raise ProfileError(("profile",), f"{declared!r} is not a usable name (results go to results/<name>/); "
                                         "use letters, digits, '-' or '_'", source)
    if name is not None and declared != name:
        raise ProfileError(("profile",), f"declares {declared!r}; make it {name!r} or rename the file", source)
    return raw
