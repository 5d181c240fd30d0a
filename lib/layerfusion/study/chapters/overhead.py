"""Chapter 4: what layer-aware fusion costs — memory and time per model, scaling curves, and accuracy vs cost.

Built on the measurement helpers of ``layerfusion.overhead``; every row carries the device, dtype and hardware tag.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from layerfusion import fusion, models, overhead, probe
from layerfusion.study.features import Study

_DROP = ("hardware",)


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    hw = row.get("hardware") or {}
    out = {k: v for k, v in row.items() if k not in _DROP}
    out["hardware"] = f"{hw.get('cpu', '?')}; GPU {hw.get('gpu') or 'none'}" if isinstance(hw, dict) else str(hw)
    return out


def footprints(study: Study) -> pd.DataFrame:
    """Load time, parameters and memory added by each model of the profile (one load each)."""
    cfg = study.config
    return pd.DataFrame([_clean(overhead.model_footprint(m, device=cfg.device, dtype=cfg.dtype))
                         for m in cfg.models])


def _texts(study: Study, dataset: str, n: int) -> list[str]:
    texts = study.data(dataset)["test"]["text"]
    return list(texts[: min(n, len(texts))])


def measured_dataset(study: Study) -> str:
    """The dataset the overhead measurements use (the profile's ``overhead.dataset``, else its first dataset)."""
    return study.config.overhead.dataset or study.config.datasets[0]


def scaling_curves(study: Study) -> pd.DataFrame:
    """Extraction cost of one model as n_texts, max_length, token budget and the deepest kept layer vary."""
    cfg, oh = study.config, study.config.overhead
    dataset = measured_dataset(study)
    loaded = models.load(oh.model or cfg.models[0], device=cfg.device, dtype=cfg.dtype, cache_dir=study.cache_dir)
    texts = _texts(study, dataset, max(oh.n_texts))
    base = cfg.extraction_config(dataset)
    repeats = oh.repeats
    layers = overhead.sample_layers(loaded.n_hidden_states, oh.n_layers_sample)
    frames = [
        overhead.scaling(loaded, texts, base, "n_texts", list(oh.n_texts), repeats=repeats),
        overhead.scaling(loaded, texts, base, "max_length", list(oh.max_length or [base.max_length]), repeats=repeats),
        overhead.scaling(loaded, texts, base, "token_budget", list(oh.token_budget or [base.token_budget]),
                         repeats=repeats),
        overhead.scaling(loaded, texts, base, "layers", layers, repeats=repeats),
    ]
    out = pd.concat(frames, ignore_index=True)
    out["dataset"] = dataset
    return pd.DataFrame([_clean(r) for r in out.to_dict("records")])


def deployment_costs(study: Study, summary: pd.DataFrame, n_texts: int | None = None) -> pd.DataFrame:
    """Per model x dataset: seconds per 1k texts for the full model and for stopping at the validation-best layer."""
    cfg = study.config
    n = int(n_texts or cfg.overhead.deploy_n_texts)
    best = summary[summary["pooling"] == cfg.primary_pooling].set_index(["model", "dataset"])["best_layer"]
    rows = []
    for model in cfg.models:
        loaded = models.load(model, device=cfg.device, dtype=cfg.dtype, cache_dir=study.cache_dir)
        for dataset in cfg.datasets:
            texts = _texts(study, dataset, n)
            base = cfg.extraction_config(dataset)
            layer = int(best[(model, dataset)])
            for setting, config in (("full model", base.__class__(**{**base.as_dict(), "layers": None})),
                                    ("stop at best layer", base.__class__(**{**base.as_dict(), "layers": (layer,)}))):
                cost = overhead.extraction_cost(loaded, texts, config, repeats=1, warmup=1)
                rows.append(_clean({"model": model, "dataset": dataset, "setting": setting, "best_layer": layer,
                                    "n_layers": loaded.n_hidden_states - 1,
                                    "seconds_per_1k": 1000 * cost["seconds"] / cost["n_texts"], **cost}))
        del loaded
    return pd.DataFrame(rows)


def scaling_table(study: Study, deploy: pd.DataFrame) -> pd.DataFrame:
    """The chapter's scaling curves: extraction cost against texts, length, budget and layers (``scaling_curves``),
    and against the number of models fused (``models_scaling`` on the measured dataset)."""
    return pd.concat([scaling_curves(study), models_scaling(deploy, measured_dataset(study))], ignore_index=True)


def texts_linearity(curves: pd.DataFrame) -> dict[str, float]:
    """How linear extraction time is in the number of texts (least squares on the fastest repeat)."""
    return overhead.linearity(curves[curves["vary"] == "n_texts"], x="value", y="seconds_min")


def models_scaling(deploy: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Cost of fusing the first k models (profile order) at their best layers: sum of each model's measured cost."""
    df = deploy[(deploy["dataset"] == dataset) & (deploy["setting"] == "stop at best layer")]
    seconds = np.cumsum(df["seconds_per_1k"].to_numpy())
    return pd.DataFrame({"vary": "models", "value": np.arange(1, len(df) + 1), "seconds": seconds,
                         "models": ["+".join(df["model"].iloc[: k + 1]) for k in range(len(df))],
                         "dataset": dataset})


def fit_costs(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    """Wall time of fitting the all-layer probe (per model) and a concatenation fusion of all models.

    Measured on the overhead dataset of the profile (fits on the other datasets scale with their sizes).
    """
    cfg = study.config
    rows = []
    for dataset in [measured_dataset(study)]:
        y = {s: study.labels(dataset, s) for s in ("train", "validation")}
        for model in cfg.models:
            X = {s: study.layer_stack(model, dataset, s) for s in ("train", "validation")}
            start = time.perf_counter()
            probe.LayerwiseProbe(**cfg.probe.params(), random_state=cfg.seed).fit(
                X["train"], y["train"], X["validation"], y["validation"])
            rows.append({"dataset": dataset, "what": "all-layer probe", "models": model,
                         "n_layers": X["train"].shape[1], "seconds": time.perf_counter() - start})
        best = summary[(summary["pooling"] == cfg.primary_pooling) & (summary["dataset"] == dataset)].set_index("model")
        Xs = {s: [study.layer_matrix(m, dataset, s, int(best.loc[m, "best_layer"])) for m in cfg.models]
              for s in ("train", "validation")}
        start = time.perf_counter()
        fusion.FusionClassifier(operator="concat", proj_dim=cfg.fusion.proj_dim, epochs=cfg.fusion.epochs,
                                random_state=cfg.seed).fit(Xs["train"], y["train"], Xs["validation"], y["validation"])
        rows.append({"dataset": dataset, "what": "concat fusion of all models", "models": "+".join(cfg.models),
                     "n_layers": 1, "seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


def accuracy_vs_cost(comparisons: pd.DataFrame, runs: pd.DataFrame, deploy: pd.DataFrame) -> pd.DataFrame:
    """Every single model and fusion with its test accuracy and inference cost per 1k texts (best layers only)."""
    cost = deploy[deploy["setting"] == "stop at best layer"].set_index(["model", "dataset"])["seconds_per_1k"]
    singles = runs[runs["k"] == 1].assign(combo=runs["models"].map(tuple))
    singles = singles.groupby(["dataset", "combo"])["test_accuracy"].mean().reset_index()
    singles["operator"] = "single"
    fused = comparisons.assign(combo=comparisons["models"].map(tuple))[["dataset", "combo", "operator", "test_mean"]]
    fused = fused.rename(columns={"test_mean": "test_accuracy"})
    rows = pd.concat([singles, fused], ignore_index=True)
    rows["cost"] = [sum(cost[(m, d)] for m in combo) for combo, d in zip(rows["combo"], rows["dataset"])]
    rows["label"] = rows["combo"].map(models.combo_label) + " " + rows["operator"]
    rows["k"] = rows["combo"].map(len)
    rows["models"] = rows.pop("combo").map(list)
    return rows.rename(columns={"test_accuracy": "accuracy"})


def pareto(table: pd.DataFrame) -> pd.DataFrame:
    """The Pareto front (lower cost, higher accuracy) of ``accuracy_vs_cost`` per dataset."""
    return pd.concat([overhead.pareto_front(g, cost="cost", score="accuracy") for _, g in
                      table.groupby("dataset", sort=False)], ignore_index=True)


def deployment_table(deploy: pd.DataFrame) -> pd.DataFrame:
    """Seconds per 1k texts, full model vs stopping at the best layer, and the saving, per model x dataset."""
    wide = deploy.pivot_table(index=["model", "dataset", "best_layer", "n_layers"], columns="setting",
                              values="seconds_per_1k").reset_index()
    wide["time saved"] = 1 - wide["stop at best layer"] / wide["full model"]
    return wide
