"""Typed settings of one study run: a profile (``params/<name>.yaml`` or any YAML file) as frozen dataclasses.

A profile is read here and nowhere else. Every block of the file has its own frozen dataclass (``StudyConfig`` at the
top, ``Subsample``, ``ProbeSettings``, ``SelectionSettings``, ``PowerSettings``, ``AuthorsProtocol``,
``GreedySettings``, ``FusionSettings``, ``OverheadSettings``, ``RobustnessSettings`` inside it); every key at every
depth is checked against the dataclass it fills, so a misspelt key is an error naming its dotted path (``probe.Cz``)
and the keys allowed there. Values are checked as they enter.

Defaults have one source. A knob that an engine class also has (the probe's C grid, the fusion classifier's epochs,
the extraction token budget) defaults to that class's own default, read from its signature; the knobs only the study
has (which poolings to compare, the greedy searches' sizes) default here, once.

The settings are plain dataclasses walked by a small coercer rather than a validation library: the project has no
such dependency, and the walker gives the one-line, path-naming errors the CLI prints.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from layerfusion import paths

SUFFIXES = (".yaml", ".yml")


class ProfileError(ValueError):
    """A profile setting that cannot be used: ``path`` is its dotted location, ``source`` the file it came from."""

    def __init__(self, path: tuple[str, ...], message: str, source: str = "") -> None:
        self.path, self.message, self.source = tuple(path), message, source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = "".join(p if p.startswith("[") or i == 0 else f".{p}" for i, p in enumerate(self.path))
        return f"{self.source}{where + ': ' if where else ''}{self.message}"

    def within(self, key: str) -> "ProfileError":
        """The same error one level further out (``key`` prepended to the path)."""
        return ProfileError((key, *self.path), self.message, self.source)

    def from_source(self, source: str) -> "ProfileError":
        """The same error prefixed with the profile it came from."""
        return ProfileError(self.path, self.message, source)


def engine_default(owner: str, param: str) -> Any:
    """The default of ``param`` in the engine's ``owner`` (``"module.Class"``), so the study never restates it."""
    module, name = owner.rsplit(".", 1)
    cls = getattr(importlib.import_module(f"layerfusion.{module}"), name)
    default = inspect.signature(cls).parameters[param].default
    if default is inspect.Parameter.empty:  # pragma: no cover - a programming error, caught by the tests
        raise TypeError(f"{owner}({param}=...) has no default")
    return default


def _default_of(owner: str, param: str) -> Any:
    return field(default_factory=lambda: engine_default(owner, param))


# -- the coercer: one value of a declared type, errors naming where ------------------------------------------------

def _fail(message: str) -> typing.NoReturn:
    raise ProfileError((), message)


def _coerce(tp: Any, value: Any) -> Any:
    """``value`` as the annotated type ``tp`` (tuples from lists, nested settings from mappings), else an error."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value)
    if origin is tuple:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            _fail(f"expected a list, got {value!r}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_coerce(args[0], item))
            except ProfileError as err:
                raise err.within(f"[{i}]") from None
        return tuple(out)
    if origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, Mapping):
            _fail(f"expected a mapping of dataset -> value, got {value!r}")
        out = {}
        for key, item in value.items():
            try:
                out[str(key)] = _coerce(args[1], item)
            except ProfileError as err:
                raise err.within(str(key)) from None
        return out
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_mapping(tp, value)
    if tp is bool:
        if not isinstance(value, bool):
            _fail(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(f"expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            _fail(f"expected a non-empty string, got {value!r}")
        return value
    raise TypeError(f"settings cannot coerce type {tp!r}")  # pragma: no cover - a programming error


def from_mapping(cls: type, raw: Any) -> Any:
    """Build the settings dataclass ``cls`` from a mapping, refusing unknown keys and naming missing ones."""
    if not isinstance(raw, Mapping):
        _fail(f"expected a mapping of settings, got {raw!r}")
    allowed = [f.name for f in fields(cls) if f.init]
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise ProfileError((str(unknown[0]),), f"unknown setting; allowed keys here are {allowed}")
    required = [f.name for f in fields(cls) if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in raw]
    if missing:
        _fail(f"missing required settings {missing}; add them to the profile")
    return cls(**raw)


class SettingsBlock:
    """Base of every settings dataclass: after ``__init__``, each field is coerced to its annotation (lists become
    tuples, mappings become the nested block) and ``check`` tests the values; errors name the field's path."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            try:
                object.__setattr__(self, f.name, _coerce(hints[f.name], getattr(self, f.name)))
            except ProfileError as err:
                raise err.within(f.name) from None
        self.check()

    def check(self) -> None:
        """Per-block value rules (ranges, allowed names); raise ``ProfileError`` naming the key."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (tuples become lists), as recorded with every results file."""
        return _jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _positive(block: Any, *names: str) -> None:
    for name in names:
        value = getattr(block, name)
        values = value if isinstance(value, tuple) else (value,)
        if any(v is not None and v < 1 for v in values):
            raise ProfileError((name,), f"must be positive, got {value!r}")


def _non_empty(block: Any, *names: str) -> None:
    for name in names:
        if not getattr(block, name):
            raise ProfileError((name,), "must list at least one value")


# -- the blocks ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Subsample(SettingsBlock):
    """Rows to keep of each split of one dataset (stratified, seeded); ``None`` keeps the whole split."""

    train: int | None = None
    validation: int | None = None
    test: int | None = None

    def check(self) -> None:
        _positive(self, "train", "validation", "test")


@dataclass(frozen=True)
class ProbeSettings(SettingsBlock):
    """The all-layer logistic probe's solver (``probe.LayerwiseProbe``): C grid, L-BFGS iterations, tolerance.

    Defaults are the probe's own; every shipped profile states its values.
    """

    Cs: tuple[float, ...] = _default_of("probe.LayerwiseProbe", "Cs")
    max_iter: int = _default_of("probe.LayerwiseProbe", "max_iter")
    tol: float = _default_of("probe.LayerwiseProbe", "tol")

    def check(self) -> None:
        _non_empty(self, "Cs")
        if any(c <= 0 for c in self.Cs):
            raise ProfileError(("Cs",), f"every C must be positive, got {list(self.Cs)}")
        if self.tol <= 0:
            raise ProfileError(("tol",), f"must be positive, got {self.tol!r}")
        _positive(self, "max_iter")

    def params(self) -> dict[str, Any]:
        """Keyword arguments for ``LayerwiseProbe`` / ``LogisticProbe``."""
        return {"Cs": self.Cs, "max_iter": self.max_iter, "tol": self.tol}


PROTOCOLS = ("validation", "cv")
"""How layers and C are selected: on the validation split, or by stratified k-fold cross-validation on train and
validation pooled."""


@dataclass(frozen=True)
class SelectionSettings(SettingsBlock):
    """How every chapter that selects layers selects them: ``protocol`` "validation" (fit on train, choose on the
    validation split) or "cv" (``folds``-fold stratified cross-validation on train and validation pooled, then a
    refit on all of them); ``n_boot`` bootstrap resamples of the selection items behind the selection-stability
    figures. The layer chapter measures both protocols on the same texts and says which one selects more stably."""

    protocol: str = "validation"
    folds: int = 5
    n_boot: int = 1000

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ProfileError(("protocol",), f"must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        _positive(self, "n_boot")
        if self.folds < 2:
            raise ProfileError(("folds",), f"cross-validation needs at least 2 folds, got {self.folds}")


@dataclass(frozen=True)
class PowerSettings(SettingsBlock):
    """The power analysis of the setup chapter: McNemar at level ``alpha`` with power ``power``; ``discordance``
    maps datasets to the planning rate of discordant pairs between two layers (a pilot's measurement), and
    ``discordance_grid`` lists the rates every minimum detectable effect is also shown at."""

    alpha: float = 0.05
    power: float = 0.8
    discordance: dict[str, float] = field(default_factory=dict)
    discordance_grid: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)

    def check(self) -> None:
        for name in ("alpha", "power"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ProfileError((name,), f"must lie strictly between 0 and 1, got {getattr(self, name)}")
        _non_empty(self, "discordance_grid")
        for key, rate in [*self.discordance.items(), *((f"[{i}]", r) for i, r in enumerate(self.discordance_grid))]:
            if not 0.0 < rate <= 1.0:
                where = ("discordance_grid", key) if key.startswith("[") else ("discordance", key)
                raise ProfileError(where, f"a discordance rate must lie in (0, 1], got {rate}")


@dataclass(frozen=True)
class AuthorsProtocol(SettingsBlock):
    """The authors' protocol for contrast: the paper's MLP head trained ``epochs`` epochs on the last layer, once
    per seed of ``seeds`` (reported as mean ± sd over them)."""

    epochs: int = _default_of("heads.MLPHead", "epochs")
    pooling: str = "mean_pad"
    seeds: tuple[int, ...] = (0,)

    def check(self) -> None:
        _positive(self, "epochs")
        _non_empty(self, "seeds")
        if len(set(self.seeds)) != len(self.seeds):
            raise ProfileError(("seeds",), f"lists a seed twice: {list(self.seeds)}")


@dataclass(frozen=True)
class GreedySettings(SettingsBlock):
    """A greedy forward search on validation: the ``top_layers`` best layers of each model are the candidates, at
    most ``max_units`` are chosen, within ``budget_dims`` feature dimensions when given."""

    top_layers: int = 3
    max_units: int = 4
    budget_dims: int | None = None

    def check(self) -> None:
        _positive(self, "top_layers", "max_units", "budget_dims")


@dataclass(frozen=True)
class FusionSettings(SettingsBlock):
    """The fusion chapter: operators (names in ``fusion.OPERATORS``), seeds, the classifier's size and training, and
    the greedy search over (model, layer) units."""

    operators: tuple[str, ...] = ("concat",)
    seeds: tuple[int, ...] = (0,)
    proj_dim: int = _default_of("fusion.FusionClassifier", "proj_dim")
    epochs: int = _default_of("fusion.FusionClassifier", "epochs")
    greedy: GreedySettings = field(default_factory=GreedySettings)

    def check(self) -> None:
        from layerfusion import fusion

        _non_empty(self, "operators", "seeds")
        unknown = [op for op in self.operators if op not in fusion.OPERATORS]
        if unknown:
            raise ProfileError(("operators",), f"unknown operators {unknown}; registered: {sorted(fusion.OPERATORS)}")
        _positive(self, "proj_dim", "epochs")


@dataclass(frozen=True)
class OverheadSettings(SettingsBlock):
    """The overhead chapter's measurements. ``model`` / ``dataset`` default to the profile's first; ``max_length``
    and ``token_budget`` (the values the scaling curves sweep) default to the profile's own single value."""

    model: str | None = None
    dataset: str | None = None
    n_texts: tuple[int, ...] = (64,)
    max_length: tuple[int, ...] | None = None
    token_budget: tuple[int, ...] | None = None
    n_layers_sample: int = 4
    deploy_n_texts: int = 32
    repeats: int = 1

    def check(self) -> None:
        _non_empty(self, "n_texts")
        _positive(self, "n_texts", "max_length", "token_budget", "n_layers_sample", "deploy_n_texts", "repeats")


UNIT_ROUNDOFF = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}
"""Relative rounding error of each dtype (half the gap between neighbouring numbers, relative to the number)."""


@dataclass(frozen=True)
class RobustnessSettings(SettingsBlock):
    """The robustness chapter's perturbation of the cached features before the verdicts are recomputed.

    ``kind: noise`` multiplies every value by ``1 + u`` with ``u`` uniform in ``[-scale, scale]``, seeded by
    ``seed``, the model, the dataset and the split; ``kind: round`` rounds every value to ``dtype``. ``scale``
    defaults to the unit roundoff of ``dtype`` (``bfloat16`` 2^-8, ``float16`` 2^-11): an extraction in bf16 and one
    in fp32 differ by about the bf16 level, whichever of the two the profile used.
    """

    kind: str = "noise"
    dtype: str = "bfloat16"
    scale: float | None = None
    seed: int = 0

    def check(self) -> None:
        if self.kind not in ("noise", "round"):
            raise ProfileError(("kind",), f"must be 'noise' or 'round', got {self.kind!r}")
        if self.dtype not in UNIT_ROUNDOFF:
            raise ProfileError(("dtype",), f"must be one of {sorted(UNIT_ROUNDOFF)}, got {self.dtype!r}")
        if self.kind == "round" and self.dtype == "float16":
            raise ProfileError(("dtype",), "rounding to float16 changes nothing (the cache stores float16 vectors); "
                                           "use kind: noise for the float16 level")
        if self.scale is not None and not 0 < self.scale < 1:
            raise ProfileError(("scale",), f"must lie strictly between 0 and 1 (a relative size), got {self.scale}")

    @property
    def relative_scale(self) -> float:
        """The relative size of the noise (``scale``, else the unit roundoff of ``dtype``)."""
        return self.scale if self.scale is not None else UNIT_ROUNDOFF[self.dtype]


@dataclass(frozen=True)
class StudyConfig(SettingsBlock):
    """All settings of one profile; recorded with every results file through the chapter's run record.

    ``subsample`` and ``max_length`` map dataset names (of ``datasets``) to their block; a dataset without an entry
    is used whole, at the extraction engine's default ``max_length``. ``primary_pooling`` is the pooling every
    chapter selects with and reports; the other ``poolings`` are compared with it in chapter 2.
    """

    profile: str
    seed: int
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    validation_size: float
    subsample: dict[str, Subsample] = field(default_factory=dict)
    max_length: dict[str, int] = field(default_factory=dict)
    poolings: tuple[str, ...] = ("mean", "last", "mean_pad")
    primary_pooling: str = "mean"
    token_budget: int = _default_of("extract.ExtractionConfig", "token_budget")
    shard_size: int = _default_of("extract.ExtractionConfig", "shard_size")
    dtype: str | None = None
    device: str | None = None
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    power: PowerSettings = field(default_factory=PowerSettings)
    authors_protocol: AuthorsProtocol = field(default_factory=AuthorsProtocol)
    greedy: GreedySettings = field(default_factory=GreedySettings)
    fusion: FusionSettings = field(default_factory=FusionSettings)
    overhead: OverheadSettings = field(default_factory=OverheadSettings)
    robustness: RobustnessSettings = field(default_factory=RobustnessSettings)

    def check(self) -> None:
        from layerfusion import data, pooling

        _non_empty(self, "models", "datasets", "poolings")
        for name in ("models", "datasets", "poolings"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ProfileError((name,), f"lists a value twice: {list(values)}")
        if not 0.0 < self.validation_size < 1.0:
            raise ProfileError(("validation_size",), f"must lie strictly between 0 and 1, got {self.validation_size}")
        for block in ("subsample", "max_length", "power.discordance"):
            # Entries for registry datasets the profile does not list are kept for a ``datasets`` override.
            entries = self.power.discordance if block == "power.discordance" else getattr(self, block)
            stray = [k for k in entries if k not in self.datasets and k not in data.DATASETS]
            if stray:
                raise ProfileError((*block.split("."), stray[0]), f"not one of the profile's datasets "
                                   f"{list(self.datasets)} nor a known dataset {sorted(data.DATASETS)}; fix the name")
        bad = [k for k, v in self.max_length.items() if v < 1]
        if bad:
            raise ProfileError(("max_length", bad[0]), f"must be a positive number of tokens, got "
                                                       f"{self.max_length[bad[0]]}")
        _positive(self, "token_budget", "shard_size")
        unknown = [p for p in self.poolings if p not in pooling.POOLINGS]
        if unknown:
            raise ProfileError(("poolings",), f"unknown poolings {unknown}; known: {sorted(pooling.POOLINGS)}")
        for key, value in (("primary_pooling", self.primary_pooling),
                           ("authors_protocol.pooling", self.authors_protocol.pooling)):
            if value not in self.poolings:
                raise ProfileError(tuple(key.split(".")), f"{value!r} is not one of poolings {list(self.poolings)}; "
                                                          "add it there or pick one of them")

    @classmethod
    def from_profile(cls, name_or_path: str | os.PathLike, **overrides: Any) -> "StudyConfig":
        """Read a profile: a name in ``params/`` or the path of a YAML file anywhere, validated the same way.

        Keyword ``overrides`` (papermill's ``models``, ``datasets``, ...) replace top-level settings when not None.
        When they change ``datasets``, the file's per-dataset entries for datasets no longer used are dropped.
        """
        path = locate(name_or_path)
        raw = read(path, None if is_path(name_or_path) else os.fspath(name_or_path))
        source = f"profile {raw['profile']!r} ({path}): "
        try:
            config = from_mapping(cls, raw)
            given = {k: v for k, v in overrides.items() if v is not None}
            for key in ("models", "datasets", "poolings"):
                if isinstance(given.get(key), str):  # papermill's -p passes "['a', 'b']" (or "a") as one string
                    value = yaml.safe_load(given[key])
                    given[key] = [value] if isinstance(value, str) else value
            if "profile" in given and given["profile"] != config.profile:
                raise ProfileError(("profile",), "may not be overridden; the profile's name decides where its "
                                                 "results go")
            if "datasets" in given:
                kept = set(_coerce(tuple[str, ...], given["datasets"]))
                for block in ("subsample", "max_length"):
                    if block not in given:
                        given[block] = {k: v for k, v in getattr(config, block).items() if k in kept}
            return config.replace(**given) if given else config
        except ProfileError as err:
            raise err.from_source(source) from None

    def replace(self, **changes: Any) -> "StudyConfig":
        """A copy with top-level ``changes`` (validated like the file; an unknown name is an error)."""
        return from_mapping(type(self), {**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

    def extraction_config(self, dataset: str) -> "Any":
        """The ``extract.ExtractionConfig`` of one dataset (``max_length`` is per dataset)."""
        from layerfusion import extract

        lengths = {"max_length": self.max_length[dataset]} if dataset in self.max_length else {}
        return extract.ExtractionConfig(poolings=tuple(self.poolings), token_budget=self.token_budget,
                                        shard_size=self.shard_size,
                                        dtype=self.dtype, device=self.device, **lengths)

    def subsample_of(self, dataset: str) -> Subsample:
        """The subsample block of ``dataset`` (every split whole when the profile has none)."""
        return self.subsample.get(dataset, Subsample())


# -- where profiles live -------------------------------------------------------------------------------------------

def _params_dir(params_dir: str | os.PathLike | None) -> Path:
    folder = Path(params_dir) if params_dir is not None else paths.repo_root() / "params"
    if not folder.is_dir():
        raise FileNotFoundError(f"profile folder {folder} does not exist; pass params_dir= pointing at the folder "
                                f"holding <profile>.yaml files")
    return folder


def available(params_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the profiles in ``params_dir`` (default ``<repo>/params``), sorted."""
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
