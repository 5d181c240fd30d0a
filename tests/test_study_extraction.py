"""The extraction chapter's dtype analysis (study.chapters.extraction) on tiny random models: bf16 against fp32
vectors per layer, the paired probe comparison, the summary and the figure."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from layerfusion import fitcache, models
from layerfusion.study import StudyConfig, settings
from layerfusion.study.chapters import extraction
from layerfusion.testing import tiny_spec

GOOD = "good great fun love film".split()
BAD = "bad terrible boring hate plot".split()


def _split(rng: np.random.Generator, n: int) -> datasets.Dataset:
    labels = rng.integers(0, 2, size=n)
    texts = [" ".join(rng.choice(GOOD if y else BAD, size=rng.integers(2, 7)).tolist() + ["movie"]) for y in labels]
    return datasets.Dataset.from_dict({"text": texts, "label": labels.tolist()})


class _Study:
    """The part of ``Study`` the chapter uses: config, data(dataset), cache_dir, progress, fits."""

    def __init__(self, config: StudyConfig, cache_dir) -> None:
        rng = np.random.default_rng(0)
        self.config, self.cache_dir, self.progress = config, cache_dir, False
        self.fits = fitcache.FitCache(cache_dir / "fits")
        self._data = datasets.DatasetDict({"train": _split(rng, 48), "validation": _split(rng, 24),
                                           "test": _split(rng, 40)})

    def data(self, dataset: str) -> datasets.DatasetDict:
        assert dataset == "toy"
        return self._data


@pytest.fixture()
def study(tmp_path, monkeypatch):
    models.register(tiny_spec(tmp_path / "llama", key="tiny-a", n_layers=3))
    models.register(tiny_spec(tmp_path / "gemma", arch="gemma3", padding_side="left", key="tiny-b"))
    config = settings.from_mapping(StudyConfig, {
        "profile": "test", "seed": 0, "models": ["tiny-a", "tiny-b"], "datasets": ["toy"], "validation_size": 0.2,
        "max_length": {"toy": 16}, "poolings": ["mean", "last"], "token_budget": 128,
        "authors_protocol": {"pooling": "mean"},
        "probe": {"Cs": [0.1, 1.0], "max_iter": 50, "tol": 1e-4}})
    return _Study(config, tmp_path / "cache")


def test_dtype_agreement_per_model_and_layer_from_the_cache(study, monkeypatch):
    table = extraction.dtype_agreement(study, n=20)
    assert len(table) == 4 + 3 and list(dict.fromkeys(table["model"])) == ["tiny-a", "tiny-b"]
    assert set(table["reference"]) == {"float32"} and set(table["dtype"]) == {"bfloat16"}
    assert set(table["n"]) == {20} and table["rel_depth"].between(0, 1).all()
    assert (table["cosine_min"] > 0.95).all() and (table["cosine_mean"] <= 1 + 1e-6).all()
    assert table["rel_error_mean"].max() > 1e-4, "bf16 vectors must differ from fp32 ones"

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded although both dtypes are cached")

    monkeypatch.setattr(extraction, "load_model", no_load)
    again = extraction.dtype_agreement(study, n=20)
    assert again.equals(table)


def test_dtype_probe_comparison_and_summary(study):
    comparison = extraction.dtype_probe_comparison(study, "tiny-a", "toy")
    assert list(comparison["layer"]) == [0, 1, 2, 3]
    assert comparison["best_float32"].sum() == 1 and comparison["best_bfloat16"].sum() == 1
    assert (comparison["p_holm"] >= comparison["p_value"] - 1e-12).all()
    discordant = (comparison["n01"] + comparison["n10"]) / 40
    assert (1 - comparison["prediction_agreement"] >= discordant - 1e-12).all()
    assert np.allclose(comparison["delta"], comparison["test_accuracy_bfloat16"] - comparison["test_accuracy_float32"])
    agreement = extraction.dtype_agreement(study, models=("tiny-a",), n=16)
    summary = extraction.summarise_dtypes(agreement, comparison)
    assert summary["min_cosine_model"] == "tiny-a" and summary["n_layers"] == 4
    assert summary["same_best_layer"] == (summary["best_layer_float32"] == summary["best_layer_bfloat16"])
    fig = extraction.plot_dtype_agreement(agreement, comparison)
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"


def test_dtypes_must_be_two_explicit_different_ones(study):
    with pytest.raises(ValueError, match="must differ"):
        extraction.dtype_agreement(study, dtypes=("bf16", "bfloat16"))
    with pytest.raises(ValueError, match="two explicit dtypes"):
        extraction.dtype_agreement(study, dtypes=("float32", None))
    with pytest.raises(ValueError, match="n must be a positive"):
        extraction.dtype_agreement(study, n=0)
