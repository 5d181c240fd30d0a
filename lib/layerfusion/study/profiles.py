"""Run profiles: ``params/<name>.yaml`` (ci | default | paper) holds every size and knob of one study run.

Notebooks and the CLI read a profile by name, so a single file decides what a run costs and what it reproduces.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from layerfusion import paths

SUFFIX = ".yaml"


def _params_dir(params_dir: str | os.PathLike | None) -> Path:
    folder = Path(params_dir) if params_dir is not None else paths.repo_root() / "params"
    if not folder.is_dir():
        raise FileNotFoundError(f"profile folder {folder} does not exist; pass params_dir= pointing at the folder "
                                f"holding <profile>{SUFFIX} files")
    return folder


def available(params_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the profiles in ``params_dir`` (default ``<repo>/params``), sorted."""
    return sorted(p.stem for p in _params_dir(params_dir).glob(f"*{SUFFIX}") if p.is_file())


def _expand(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys (``"fusion.epochs": 5``) become nested dicts."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = str(key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Deep-merge ``update`` into ``base``: mappings merge key by key, anything else replaces."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def load(name: str, params_dir: str | os.PathLike | None = None,
         overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The profile ``params/<name>.yaml`` as a fresh dict, with ``overrides`` deep-merged on top.

    ``overrides`` may use dotted keys for nested settings (``{"fusion.epochs": 5}``); a top-level key the profile
    does not have is an error (it is almost always a typo). The returned ``profile`` field equals ``name``.
    """
    folder = _params_dir(params_dir)
    path = folder / f"{name}{SUFFIX}"
    if not isinstance(name, str) or not name or Path(name).name != name or not path.is_file():
        raise KeyError(f"unknown profile {name!r}; available profiles in {folder}: {available(folder)}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"profile file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"profile file {path} must hold a mapping of settings, got {type(raw).__name__}")
    declared = raw.setdefault("profile", name)
    if declared != name:
        raise ValueError(f"profile file {path} declares profile: {declared!r}; make it {name!r} or rename the file")
    if overrides:
        update = _expand(overrides)
        unknown = sorted(set(update) - set(raw))
        if unknown:
            raise ValueError(f"overrides for profile {name!r}: unknown keys {unknown}; known keys are {sorted(raw)}")
        if update.get("profile", name) != name:
            raise ValueError(f"overrides may not change 'profile' (loading {name!r})")
        _merge(raw, update)
    return raw
