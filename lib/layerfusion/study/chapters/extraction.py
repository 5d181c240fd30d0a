"""Chapter 1: extract every layer of every model once into the cache, look at the scale of each layer, and check
whether the compute dtype changes the vectors or the conclusions drawn from them.

bf16 runs two to six times faster than fp32 on CPUs with native bf16 and is the default on GPUs, so the chapter
checks what it costs: per model, the per-layer cosine between bf16 and fp32 pooled vectors of the same texts
(``dtype_agreement``); for one model x dataset, the per-layer probe accuracy in both dtypes with McNemar's paired
test and Holm's correction across layers (``dtype_probe_comparison``); a one-row summary for the prose
(``summarise_dtypes``) and a figure (``plot_dtype_agreement``). Every extraction goes through ``embeddings.embed`` with
the dtype set explicitly, so it is cached (the dtype is part of the cache key) and a re-run is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from layerfusion import data as data_mod
from layerfusion import devices, diagnostics, embeddings, probe, stats
from layerfusion.models import load as load_model
from layerfusion.study.features import Study


def extract_all(study: Study) -> pd.DataFrame:
    """Extract (or read from the cache) every model x dataset x split of the profile; one summary row each.

    Model by model (``Study.fill``: one model load, or one Ray actor pool under ``executor: {kind: ray}``), so only
    one model is in memory; rows are listed dataset by dataset.
    """
    rows = {}
    for model in study.config.models:
        study.fill(model)
        for dataset in study.config.datasets:
            for split in data_mod.SPLITS:
                emb = study.features(model, dataset, split)
                rows[model, dataset, split] = {"model": model, "dataset": dataset, "split": split, **emb.summary()}
        study.release_model()
    return pd.DataFrame([rows[m, d, s] for d in study.config.datasets for m in study.config.models
                         for s in data_mod.SPLITS])


def norms(study: Study, pooling: str | None = None) -> pd.DataFrame:
    """Mean vector norm per layer (train split) for every model x dataset, with relative depth.

    ``pooling`` defaults to the profile's primary pooling.
    """
    rows = []
    for dataset in study.config.datasets:
        for model in study.config.models:
            emb = study.features(model, dataset, "train")
            values = emb.norms(pooling or study.config.primary_pooling)
            depth = max(len(emb.layers) - 1, 1)
            for i, (layer, value) in enumerate(zip(emb.layers, values)):
                rows.append({"model": model, "dataset": dataset, "layer": int(layer),
                             "rel_depth": i / depth, "norm": float(value)})
    return pd.DataFrame(rows)


def facts(extracted: pd.DataFrame) -> dict[str, float | int]:
    """The numbers the chapter's prose quotes: vectors cached, their size on disk (MiB), truncated texts."""
    return {"n_vectors": int(extracted["n"].sum()), "mb": float(extracted["bytes_on_disk"].sum()) / 2**20,
            "truncated": int(extracted["n_truncated"].sum())}


DTYPES = ("float32", "bfloat16")
"""Reference dtype first, then the one compared against it."""


def _check_dtypes(dtypes: tuple[str, str]) -> tuple[str, str]:
    """The two dtype names (reference, other); None (the automatic choice) or a repeated dtype is an error."""
    if len(dtypes) != 2 or any(d is None for d in dtypes):
        raise ValueError(f"dtypes must be two explicit dtypes (reference, other), got {dtypes!r}")
    ref, other = (devices.choose_dtype(d, "cpu").name for d in dtypes)
    if ref == other:
        raise ValueError(f"dtypes must differ, got {dtypes!r}; e.g. ('float32', 'bfloat16')")
    return ref, other


def _embed(study: Any, model: str, dataset: str, split: str, rows: Any, dtype: str, loader: Any
           ) -> embeddings.LayerEmbeddings:
    config = replace(study.config.extraction_config(dataset), dtype=dtype)
    return embeddings.embed(model, rows, dataset_name=dataset, split=split, config=config, cache_dir=study.cache_dir,
                         progress=study.progress, loader=loader)


def _loader(study: Any, model: str, dtype: str, held: dict[str, Any]) -> Any:
    """Load ``model`` in ``dtype`` on first need and keep it for the next split (one model in memory at a time)."""
    def load() -> Any:
        if dtype not in held:
            held.clear()
            held[dtype] = load_model(model, device=study.config.device, dtype=dtype, cache_dir=study.cache_dir)
        return held[dtype]
    return load


def sample_rows(study: Any, dataset: str, split: str, n: int) -> Any:
    """A seeded random sample of ``n`` rows (all when the split is smaller) of one split, in split order."""
    rows = study.data(dataset)[split]
    if n < 1:
        raise ValueError(f"n must be a positive number of texts, got {n!r}")
    if n >= len(rows):
        return rows
    picked = np.random.default_rng(study.config.seed).choice(len(rows), size=n, replace=False)
    return rows.select(np.sort(picked).tolist())


def dtype_agreement(study: Any, models: Sequence[str] | None = None, dataset: str | None = None, *,
                    split: str = "train", n: int = 256, pooling: str | None = None,
                    dtypes: tuple[str, str] = DTYPES) -> pd.DataFrame:
    """Per model and layer, how closely vectors computed in ``dtypes[1]`` match those in ``dtypes[0]``.

    ``study`` needs ``config`` (a ``StudyConfig``), ``data(dataset)``, ``cache_dir`` and ``progress`` (a ``Study``
    has them). The same ``n`` texts of ``split`` (seeded sample) are extracted in both dtypes for each of
    ``models`` (default: the profile's models) on ``dataset`` (default: the profile's first). One row per model
    and layer: ``model, dataset, split, n, pooling, reference, dtype, layer, rel_depth`` and the columns of
    ``diagnostics.layer_agreement`` (cosine mean / min / 1st percentile, mean relative error).
    """
    ref, other = _check_dtypes(dtypes)
    pooling = pooling or study.config.primary_pooling
    dataset = dataset or study.config.datasets[0]
    rows = sample_rows(study, dataset, split, n)
    frames = []
    for model in models or study.config.models:
        held: dict[str, Any] = {}
        emb = {dt: _embed(study, model, dataset, split, rows, dt, _loader(study, model, dt, held))
               for dt in (ref, other)}
        layers = emb[ref].layers
        table = diagnostics.layer_agreement(emb[ref].stack(pooling), emb[other].stack(pooling), layers)
        table = table.reset_index()
        table.insert(1, "rel_depth", np.arange(len(layers)) / max(len(layers) - 1, 1))
        for i, (name, value) in enumerate({"model": model, "dataset": dataset, "split": split, "n": len(rows),
                                           "pooling": pooling, "reference": ref, "dtype": other}.items()):
            table.insert(i, name, value)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def dtype_probe_comparison(study: Any, model: str, dataset: str, *, pooling: str | None = None,
                           dtypes: tuple[str, str] = DTYPES, alpha: float = 0.05) -> pd.DataFrame:
    """Per-layer probe accuracy of one model x dataset with features in both ``dtypes``, tested pairwise.

    The profile's probe (``LayerwiseProbe`` with its C grid, C chosen per layer on validation) is fitted on each
    dtype's train features and scored once on test. Per layer: validation and test accuracy in each dtype,
    ``delta`` (other minus reference, test), McNemar's test between the two dtypes' test predictions (``n01``,
    ``n10``, ``p_value``), ``p_holm`` (Holm across the layers), ``significant`` (``p_holm < alpha``),
    ``prediction_agreement`` (fraction of identical test predictions) and ``best_<dtype>`` (the validation-best
    layer in that dtype).
    """
    ref, other = _check_dtypes(dtypes)
    cfg = study.config
    pooling = pooling or cfg.primary_pooling
    y = {s: np.asarray(study.data(dataset)[s]["label"]) for s in data_mod.SPLITS}
    out: dict[str, dict[str, Any]] = {}
    held: dict[str, Any] = {}
    for dt in (ref, other):
        emb = {s: _embed(study, model, dataset, s, study.data(dataset)[s], dt, _loader(study, model, dt, held))
               for s in data_mod.SPLITS}
        est = study.fits.fit(probe.LayerwiseProbe(**cfg.probe.params(), random_state=cfg.seed),
                             emb["train"].vectors[pooling], y["train"], emb["validation"].vectors[pooling],
                             y["validation"])
        out[dt] = {"layers": emb["train"].layers, "val": np.asarray(est.val_scores_),
                   "pred": est.predict(emb["test"].vectors[pooling])}
    held.clear()
    layers = out[ref]["layers"]
    tests = [stats.mcnemar(y["test"], out[other]["pred"][i], out[ref]["pred"][i]) for i in range(len(layers))]
    p_holm = stats.holm([t.p_value for t in tests])
    best = {dt: int(np.argmax(out[dt]["val"])) for dt in (ref, other)}
    rows = []
    for i, layer in enumerate(layers):
        acc = {dt: stats.accuracy(y["test"], out[dt]["pred"][i]) for dt in (ref, other)}
        rows.append({
            "model": model, "dataset": dataset, "pooling": pooling, "layer": int(layer),
            "rel_depth": i / max(len(layers) - 1, 1),
            **{f"val_accuracy_{dt}": float(out[dt]["val"][i]) for dt in (ref, other)},
            **{f"test_accuracy_{dt}": acc[dt] for dt in (ref, other)},
            "delta": acc[other] - acc[ref], "n01": tests[i].n01, "n10": tests[i].n10,
            "p_value": tests[i].p_value, "p_holm": float(p_holm[i]), "significant": bool(p_holm[i] < alpha),
            "prediction_agreement": float(np.mean(out[other]["pred"][i] == out[ref]["pred"][i])),
            **{f"best_{dt}": best[dt] == i for dt in (ref, other)},
        })
    return pd.DataFrame(rows)


def dtypes_used(study: Study) -> pd.DataFrame:
    """Per model: the dtype its cached vectors were computed in and why (``devices.choose_dtype``'s reason, from the
    cache provenance of the run that wrote the first dataset's train split)."""
    rows = []
    for model in study.config.models:
        prov = study.features(model, study.config.datasets[0], "train").provenance
        run = (prov.get("runs") or [{}])[-1].get("model", {})
        rows.append({"model": model, "dtype": prov.get("model", {}).get("dtype"),
                     "reason": run.get("dtype_reason") or "not recorded (written before the reason was kept)",
                     "cpu": (prov.get("hardware") or {}).get("cpu")})
    return pd.DataFrame(rows)


def dtype_checks(study: Study, n: int = 256) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The chapter's two dtype checks: ``dtype_agreement`` of every model on ``n`` train texts of the profile's first
    dataset, and ``dtype_probe_comparison`` of the first model on that dataset (the cheapest full fp32 re-extraction
    of the profile: the first dataset is the shortest)."""
    dataset = study.config.datasets[0]
    return (dtype_agreement(study, dataset=dataset, n=n),
            dtype_probe_comparison(study, study.config.models[0], dataset))


def summarise_dtypes(agreement: pd.DataFrame, comparison: pd.DataFrame) -> dict[str, Any]:
    """The numbers the chapter's prose quotes: the worst cosine (and where), the layers whose accuracy differs
    significantly after Holm, the largest accuracy change, and whether validation picks the same layer."""
    worst = agreement.loc[agreement["cosine_min"].idxmin()]
    ref, other = agreement["reference"].iloc[0], agreement["dtype"].iloc[0]
    best = {dt: int(comparison.loc[comparison[f"best_{dt}"], "layer"].iloc[0]) for dt in (ref, other)}
    return {
        "reference": ref, "dtype": other,
        "min_cosine": float(worst["cosine_min"]), "min_cosine_model": worst["model"],
        "min_cosine_layer": int(worst["layer"]),
        "min_mean_cosine": float(agreement["cosine_mean"].min()),
        "probe_model": comparison["model"].iloc[0], "probe_dataset": comparison["dataset"].iloc[0],
        "n_layers": len(comparison), "n_significant": int(comparison["significant"].sum()),
        "max_abs_delta": float(comparison["delta"].abs().max()),
        f"best_layer_{ref}": best[ref], f"best_layer_{other}": best[other],
        "same_best_layer": best[ref] == best[other],
    }


def plot_dtype_agreement(agreement: pd.DataFrame, comparison: pd.DataFrame | None = None):
    """Left: ``1 - cosine`` (mean and worst item) per layer against relative depth, one line per model, log scale.
    Right (with ``comparison``): test accuracy per layer in both dtypes, layers that differ after Holm circled.
    Drawn from the two tables only, like every figure of ``layerfusion.study.plots``."""
    import matplotlib.pyplot as plt

    ncols = 1 if comparison is None else 2
    fig, axes = plt.subplots(1, ncols, figsize=(3.6 * ncols + 0.6, 3.0), squeeze=False, constrained_layout=True)
    ax = axes[0, 0]
    floor = 1e-7
    for model, grp in agreement.groupby("model", sort=False):
        line, = ax.plot(grp["rel_depth"], np.maximum(1 - grp["cosine_mean"], floor), lw=1.4, label=f"{model} (mean)")
        ax.plot(grp["rel_depth"], np.maximum(1 - grp["cosine_min"], floor), lw=1, ls="--", color=line.get_color(),
                label=f"{model} (worst text)")
    ax.set_yscale("log")
    ax.set_xlabel("relative depth (layer / L)")
    ax.set_ylabel("1 - cosine(bf16, fp32)" if tuple(agreement[["reference", "dtype"]].iloc[0]) == DTYPES
                  else "1 - cosine")
    ax.set_title(f"{agreement['dataset'].iloc[0]}, {int(agreement['n'].iloc[0])} texts")
    ax.legend(fontsize=6)
    if comparison is not None:
        ax = axes[0, 1]
        ref, other = agreement["reference"].iloc[0], agreement["dtype"].iloc[0]
        for dt, style in ((ref, "-"), (other, "--")):
            ax.plot(comparison["rel_depth"], comparison[f"test_accuracy_{dt}"], ls=style, lw=1.4, label=dt)
        sig = comparison[comparison["significant"]]
        ax.plot(sig["rel_depth"], sig[f"test_accuracy_{other}"], "o", mfc="none", color="black",
                label="differs (Holm)")
        ax.set_xlabel("relative depth (layer / L)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{comparison['model'].iloc[0]} on {comparison['dataset'].iloc[0]}")
        ax.legend(fontsize=7)
    return fig
