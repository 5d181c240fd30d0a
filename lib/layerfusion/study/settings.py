"""Typed settings of one study run: a profile (``params/<name>.yaml`` or any YAML file) as frozen dataclasses.

A profile is read here and nowhere else. Every block of the file has its own frozen dataclass (``StudyConfig`` at the
top, ``Subsample``, ``ProbeSettings``, ``SelectionSettings``, ``PowerSettings``, ``ClaimsSettings``, ``AuthorsProtocol``,
``GreedySettings``, ``FusionSettings``, ``OverheadSettings``, ``RobustnessSettings`` inside it); every key at every
depth is checked against the dataclass it fills, so a misspelt key is an error naming its dotted path (``probe.Cz``)
and the keys allowed there. Values are checked as they enter.

Defaults have one source. A knob that an engine class also has (the probe's C grid, the fusion classifier's epochs,
the extraction token budget) defaults to that class's own default, read from its signature; the knobs only the study
has (which poolings to compare, the greedy searches' sizes) default here, once.

The blocks are plain dataclasses filled by ``layerfusion.study.schema`` (unknown keys refused at any depth); profile
files are found and read by ``layerfusion.study.profiles``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from layerfusion.study.profiles import SUFFIXES, available, is_path, locate, read  # noqa: F401 - re-exported
from layerfusion.study.schema import (ProfileError, SettingsBlock, _coerce, _default_of, _non_empty,  # noqa: F401
                                      _positive, engine_default, from_mapping)

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
class ClaimsSettings(SettingsBlock):
    """The equivalence margins of the claims table, fixed before the data are seen: an effect is shown absent
    ("not supported") only when a TOST at ``power.alpha`` puts it inside ``±margin``. ``equivalence_margin``:
    accuracy differences (points); ``spread_margin``: a narrowing of a standard deviation of accuracy (points);
    ``correlation_margin``: a correlation coefficient (Spearman's rho)."""

    equivalence_margin: float = 1.0
    spread_margin: float = 0.25
    correlation_margin: float = 0.2

    def check(self) -> None:
        for name in ("equivalence_margin", "spread_margin"):
            if not 0.0 < getattr(self, name) <= 100.0:
                raise ProfileError((name,), f"must be a positive number of accuracy points (at most 100), got "
                                            f"{getattr(self, name)}")
        if not 0.0 < self.correlation_margin < 1.0:
            raise ProfileError(("correlation_margin",), f"must lie strictly between 0 and 1 (a correlation), got "
                                                        f"{self.correlation_margin}")


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
    and ``token_budget`` (the values the scaling curves sweep) default to the profile's own single value. Every
    time is the median of ``repeats`` runs after a warm-up (with its interval); every memory figure one fresh
    process per setting. The deployment table times the first ``deploy_n_texts`` test texts of each dataset, or
    the number ``deploy_n_texts_by_dataset`` gives for it (long documents need fewer texts for the same work)."""

    model: str | None = None
    dataset: str | None = None
    n_texts: tuple[int, ...] = (64,)
    max_length: tuple[int, ...] | None = None
    token_budget: tuple[int, ...] | None = None
    n_layers_sample: int = 4
    deploy_n_texts: int = 32
    deploy_n_texts_by_dataset: dict[str, int] = field(default_factory=dict)
    repeats: int = 5

    def check(self) -> None:
        _non_empty(self, "n_texts")
        _positive(self, "n_texts", "max_length", "token_budget", "n_layers_sample", "deploy_n_texts", "repeats")
        bad = [k for k, v in self.deploy_n_texts_by_dataset.items() if v < 1]
        if bad:
            raise ProfileError(("deploy_n_texts_by_dataset", bad[0]), f"must be a positive number of texts, got "
                                                                      f"{self.deploy_n_texts_by_dataset[bad[0]]}")

    def deploy_texts(self, dataset: str) -> int:
        """How many test texts of ``dataset`` the deployment table times."""
        return self.deploy_n_texts_by_dataset.get(dataset, self.deploy_n_texts)


UNIT_ROUNDOFF = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}
"""Relative rounding error of each dtype (half the gap between neighbouring numbers, relative to the number)."""
ROBUSTNESS_MATCH = ("measured_max", "measured_median", "roundoff")
"""How the robustness noise's size is chosen when the profile gives no ``scale`` (``RobustnessSettings``)."""


@dataclass(frozen=True)
class RobustnessSettings(SettingsBlock):
    """The robustness chapter's perturbation of the cached features before the verdicts are recomputed.

    ``kind: noise`` multiplies every value by ``1 + u`` with ``u`` uniform in ``[-scale, scale]``, seeded by
    ``seed``, the model, the dataset and the split; ``kind: round`` rounds every value to ``dtype``. Without a
    ``scale``, ``match`` sets it: ``measured_max`` / ``measured_median`` match the noise's relative vector error
    (``scale / sqrt(3)``) to the largest / the median per-layer mean relative error the extraction chapter measured
    between ``dtype`` and fp32 (its ``dtype_agreement`` table); ``roundoff`` uses the unit roundoff of ``dtype``
    (``bfloat16`` 2^-8, ``float16`` 2^-11), a fraction of the error an extraction actually accumulates.
    """

    kind: str = "noise"
    dtype: str = "bfloat16"
    scale: float | None = None
    match: str = "measured_max"
    seed: int = 0

    def check(self) -> None:
        if self.kind not in ("noise", "round"):
            raise ProfileError(("kind",), f"must be 'noise' or 'round', got {self.kind!r}")
        if self.dtype not in UNIT_ROUNDOFF:
            raise ProfileError(("dtype",), f"must be one of {sorted(UNIT_ROUNDOFF)}, got {self.dtype!r}")
        if self.kind == "round" and self.dtype == "float16":
            raise ProfileError(("dtype",), "rounding to float16 changes nothing (the cache stores float16 vectors); "
                                           "use kind: noise for the float16 level")
        if self.match not in ROBUSTNESS_MATCH:
            raise ProfileError(("match",), f"must be one of {list(ROBUSTNESS_MATCH)}, got {self.match!r}")
        if self.scale is not None and not 0 < self.scale < 1:
            raise ProfileError(("scale",), f"must lie strictly between 0 and 1 (a relative size), got {self.scale}")

    @property
    def relative_scale(self) -> float:
        """The relative size of the noise (``scale``, else the unit roundoff of ``dtype``; the robustness chapter
        sets ``scale`` from the measured error first when ``match`` asks for it)."""
        return self.scale if self.scale is not None else UNIT_ROUNDOFF[self.dtype]


EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorSettings(SettingsBlock):
    """Where missing cache shards are computed: ``local`` (this process) or ``ray`` (a Ray cluster at ``address``,
    None for Ray's own default: ``$RAY_ADDRESS``, a cluster started on this machine, else a new local instance; with
    ``workers`` actors, None for one per GPU or one per node on CPUs). Either way the shards land in the same cache,
    byte for byte the same."""

    kind: str = "local"
    address: str | None = None
    workers: int | None = None

    def check(self) -> None:
        if self.kind not in EXECUTORS:
            raise ProfileError(("kind",), f"must be one of {list(EXECUTORS)}, got {self.kind!r}")
        if self.kind == "local" and (self.address is not None or self.workers is not None):
            raise ProfileError(("kind",), "address and workers apply to kind: ray only")
        _positive(self, "workers")


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
    claims: ClaimsSettings = field(default_factory=ClaimsSettings)
    authors_protocol: AuthorsProtocol = field(default_factory=AuthorsProtocol)
    greedy: GreedySettings = field(default_factory=GreedySettings)
    fusion: FusionSettings = field(default_factory=FusionSettings)
    overhead: OverheadSettings = field(default_factory=OverheadSettings)
    robustness: RobustnessSettings = field(default_factory=RobustnessSettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)

    def check(self) -> None:
        from layerfusion import data, pooling

        _non_empty(self, "models", "datasets", "poolings")
        for name in ("models", "datasets", "poolings"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ProfileError((name,), f"lists a value twice: {list(values)}")
        if not 0.0 < self.validation_size < 1.0:
            raise ProfileError(("validation_size",), f"must lie strictly between 0 and 1, got {self.validation_size}")
        per_dataset = {"subsample": self.subsample, "max_length": self.max_length,
                       "power.discordance": self.power.discordance,
                       "overhead.deploy_n_texts_by_dataset": self.overhead.deploy_n_texts_by_dataset}
        for block, entries in per_dataset.items():
            # Entries for registry datasets the profile does not list are kept for a ``datasets`` override.
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
