"""The persisted fit cache: a hit is the fit it replaces, any change of inputs, settings or engine code misses,
broken entries are refitted, and the study's fits go through it (cold and warm give the same probe)."""

from __future__ import annotations

import dataclasses
import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from layerfusion import fitcache, probe


class Counting(BaseEstimator):
    """A deterministic estimator that counts its fits and warns once per fit."""

    fits = 0

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def fit(self, X, y, weight=None):
        type(self).fits += 1
        warnings.warn("counting fit warns", UserWarning)
        self.mean_ = self.scale * np.asarray(X, dtype=float).mean(axis=0)
        self.weight_ = weight
        return self


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((30, 4)), rng.integers(0, 2, 30)


def _fit(cache, estimator, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = cache.fit(estimator, *args, **kwargs)
    return fitted, [str(w.message) for w in caught]


def test_a_hit_returns_the_stored_fit_without_fitting_and_replays_its_warnings(tmp_path):
    cache = fitcache.FitCache(tmp_path, enabled=True)
    X, y = _data()
    Counting.fits = 0
    first, warned_cold = _fit(cache, Counting(), X, y)
    second, warned_warm = _fit(cache, Counting(), X, y)
    assert Counting.fits == 1
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first.mean_, second.mean_)
    assert warned_cold == warned_warm == ["counting fit warns"]
    assert cache.stats()["fit_cache_hit_rate"] == 0.5
    # a new cache object over the same folder (a later process) hits too
    third, _ = _fit(fitcache.FitCache(tmp_path, enabled=True), Counting(), X, y)
    assert Counting.fits == 1
    np.testing.assert_array_equal(first.mean_, third.mean_)


def test_the_stored_fit_time_is_returned_on_a_hit(tmp_path):
    cache = fitcache.FitCache(tmp_path, enabled=True)
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, cold = cache.fit_timed(Counting(), X, y)
        _, warm = cache.fit_timed(Counting(), X, y)
    assert warm == cold


@pytest.mark.parametrize("change", ["X", "y", "param", "kwarg", "engine", "class"])
def test_any_change_of_what_decides_the_fit_misses(tmp_path, monkeypatch, change):
    cache = fitcache.FitCache(tmp_path, enabled=True)
    X, y = _data()
    base = cache.key(Counting(), X, y, weight=1.0)
    assert cache.key(Counting(), X.copy(), y.copy(), weight=1.0) == base  # same content, same key
    if change == "X":
        X2 = X.copy()
        X2[3, 2] = np.nextafter(X2[3, 2], np.inf)
        key = cache.key(Counting(), X2, y, weight=1.0)
    elif change == "y":
        key = cache.key(Counting(), X, 1 - y, weight=1.0)
    elif change == "param":
        key = cache.key(Counting(scale=2.0), X, y, weight=1.0)
    elif change == "kwarg":
        key = cache.key(Counting(), X, y, weight=2.0)
    elif change == "engine":
        monkeypatch.setattr(fitcache, "code_fingerprint", lambda modules: "another engine")
        key = cache.key(Counting(), X, y, weight=1.0)
    else:
        key = cache.key(probe.LogisticProbe(), X, y, weight=1.0)
    assert key != base


def test_the_code_in_the_key_is_what_the_estimators_module_imports_transitively():
    closure = set(fitcache.source_closure(("layerfusion.probe",)))
    assert {"layerfusion", "layerfusion.probe", "layerfusion.solver", "layerfusion.scaling"} <= closure
    assert not closure & {"layerfusion.extract", "layerfusion.sweeps", "layerfusion.cache", "layerfusion.fitcache"}
    assert not any(name.startswith("layerfusion.study") for name in closure)
    # relative imports in a subpackage's __init__ and imports inside functions are followed
    assert "layerfusion.data.readers" in fitcache.source_closure(("layerfusion.data",))
    assert "layerfusion.solver" in fitcache.source_closure(("layerfusion.fusion", "layerfusion.probe"))
    # an estimator defined outside the package: its own module is hashed, and what it imports of the package
    assert {__name__, "layerfusion.fitcache", "layerfusion.probe"} <= set(fitcache.source_closure((__name__,)))


@pytest.mark.parametrize(("edited", "misses"), [("layerfusion.solver", True), ("layerfusion.scaling", True),
                                                ("layerfusion", True), ("layerfusion.sweeps", False),
                                                ("layerfusion.extract", False), ("layerfusion.study.chapters.fusion",
                                                                                 False)])
def test_an_edit_misses_exactly_when_the_fit_can_run_the_edited_code(tmp_path, monkeypatch, edited, misses):
    cache = fitcache.FitCache(tmp_path, enabled=True)
    X, y = _data()
    fitcache.code_fingerprint.cache_clear()
    base = cache.key(probe.LogisticProbe(), X, y)
    read = fitcache._source_bytes
    monkeypatch.setattr(fitcache, "_source_bytes", lambda m: read(m) + (b"\n# edited\n" if m == edited else b""))
    fitcache.code_fingerprint.cache_clear()
    try:
        assert (cache.key(probe.LogisticProbe(), X, y) != base) is misses
    finally:
        fitcache.code_fingerprint.cache_clear()


def test_a_corrupt_entry_is_a_miss_with_one_warning_and_is_rewritten(tmp_path):
    cache = fitcache.FitCache(tmp_path, enabled=True)
    X, y = _data()
    Counting.fits = 0
    _fit(cache, Counting(), X, y)
    path = cache.path(cache.key(Counting(), X, y))
    path.write_bytes(b"not a joblib file")
    fitted, warned = _fit(cache, Counting(), X, y)
    assert Counting.fits == 2
    assert sum("unreadable" in w for w in warned) == 1
    again, _ = _fit(cache, Counting(), X, y)
    assert Counting.fits == 2  # rewritten: read back on the next call
    np.testing.assert_array_equal(fitted.mean_, again.mean_)


def test_disabled_by_the_environment_fits_every_time_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(fitcache.ENV, "0")
    cache = fitcache.FitCache(tmp_path)
    assert not cache.enabled
    X, y = _data()
    Counting.fits = 0
    _fit(cache, Counting(), X, y)
    _fit(cache, Counting(), X, y)
    assert Counting.fits == 2
    assert list(tmp_path.rglob("*")) == []


def test_a_failed_write_leaves_no_entry_and_no_temporary_file(tmp_path, monkeypatch):
    cache = fitcache.FitCache(tmp_path, enabled=True)
    X, y = _data()

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fitcache.joblib, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache.fit(Counting(), X, y)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_the_study_fits_a_probe_once_and_warm_equals_cold_and_uncached(tmp_path, monkeypatch):
    from layerfusion import models, testing
    from layerfusion.study import Study, StudyConfig
    from layerfusion.study.chapters import layer_analysis

    with testing.registries_restored():
        spec = testing.tiny_spec(tmp_path / "llama", arch="llama", hidden=32)
        models.register(dataclasses.replace(spec, key="tiny-fitcache"), overwrite=True)
        sizes = {"train": 40, "validation": 20, "test": 24}
        cfg = StudyConfig.from_profile("ci", models=["tiny-fitcache"], datasets=["sst2"],
                                       subsample={"sst2": sizes}, max_length={"sst2": 16})
        cfg = cfg.replace(probe={"Cs": [0.1, 1.0], "max_iter": 50, "tol": 1e-4},
                          selection={"protocol": "cv", "folds": 3, "n_boot": 20})
        cache_dir = str(tmp_path / "cache")
        fitted = {}
        for run in ("cold", "warm"):
            study = Study(cfg, cache_dir=cache_dir, progress=False)
            fitted[run] = layer_analysis.fit_probe(study, "tiny-fitcache", "sst2", cfg.primary_pooling, "cv")
            assert (study.fits.hits, study.fits.misses) == ((0, 1) if run == "cold" else (1, 0))
        monkeypatch.setenv(fitcache.ENV, "0")
        study = Study(cfg, cache_dir=cache_dir, progress=False)
        fitted["uncached"] = layer_analysis.fit_probe(study, "tiny-fitcache", "sst2", cfg.primary_pooling, "cv")
        assert (study.fits.hits, study.fits.misses) == (0, 0)
        X_te = study.layer_stack("tiny-fitcache", "sst2", "test")
    cold = fitted["cold"][0]
    assert fitted["warm"][2] == fitted["cold"][2]  # the stored fit time
    for other in (fitted["warm"][0], fitted["uncached"][0]):
        np.testing.assert_array_equal(other.val_scores_, cold.val_scores_)
        np.testing.assert_array_equal(other.best_C_, cold.best_C_)
        np.testing.assert_array_equal(other.predict(X_te), cold.predict(X_te))
        np.testing.assert_array_equal(other.predict_proba(X_te), cold.predict_proba(X_te))
    assert pickle.dumps(fitted["warm"][1]) == pickle.dumps(fitted["cold"][1])
