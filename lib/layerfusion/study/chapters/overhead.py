"""Chapter 4: what layer-aware fusion costs — memory per fresh process, time with intervals, bytes stored, and
accuracy against cost; the paper's-scale GPU table beside the CPU measurements when one is committed.

Memory comes from ``layerfusion.sweeps`` (one fresh process per measurement, ``layerfusion.meter``), time from
repeated in-process runs (median and percentile-bootstrap interval), storage from the cache's files.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerfusion import costmodel, fusion, meter, models, probe, sweeps, tradeoff
from layerfusion.study import workspace
from layerfusion.study.features import Study

MIB = 2**20
CALIBRATION_BYTES = 200 * MIB
"""The known allocation the memory meter is checked against in every run."""


def _hardware(row: dict[str, Any]) -> dict[str, Any]:
    hw = row.pop("hardware", None) or {}
    row["hardware"] = f"{hw.get('cpu', '?')}; GPU {hw.get('gpu') or 'none'}" if isinstance(hw, dict) else str(hw)
    return row


def measured_dataset(study: Study) -> str:
    """The dataset the overhead measurements use (the profile's ``overhead.dataset``, else its first dataset)."""
    return study.config.overhead.dataset or study.config.datasets[0]


def _texts(study: Study, dataset: str, n: int) -> list[str]:
    texts = study.data(dataset)["test"]["text"]
    return list(texts[: min(n, len(texts))])


# -- memory (fresh processes) ----------------------------------------------------------------------------------------

def calibration(study: Study) -> pd.DataFrame:
    """The meter checked on a known allocation: a 200 MiB torch tensor measured in a fresh process."""
    m = meter.peak_in_fresh_process("layerfusion.meter:allocation", {"n_bytes": CALIBRATION_BYTES, "kind": "torch"})
    return pd.DataFrame([{"allocated_bytes": int(m.result), "peak_bytes": m.peak_bytes, "memory_kind": m.memory_kind,
                          "hwm_reset": m.hwm_reset, "trimmed": m.trimmed}])


def footprints(study: Study) -> pd.DataFrame:
    """Load time, parameters and memory of each model of the profile, each loaded in its own fresh process."""
    cfg = study.config
    return pd.DataFrame([sweeps.model_footprint(m, device=cfg.device, dtype=cfg.dtype, cache_dir=study.cache_dir)
                         for m in cfg.models])


def memory_curves(study: Study) -> pd.DataFrame:
    """Peak memory of one extraction (fresh process each) as the deepest kept layer and the token budget vary."""
    cfg, oh = study.config, study.config.overhead
    dataset = measured_dataset(study)
    spec = models.get_spec(oh.model or cfg.models[0])
    texts = _texts(study, dataset, max(oh.n_texts))
    base = cfg.extraction_config(dataset)
    plan = {"layers": sweeps.sample_layers(spec.n_layers + 1, oh.n_layers_sample),
            "token_budget": list(oh.token_budget or [base.token_budget])}
    out = sweeps.memory_sweep(spec.key, texts, base, plan, device=cfg.device, dtype=cfg.dtype,
                              cache_dir=study.cache_dir)
    out.insert(0, "model", spec.key)
    out["dataset"] = dataset
    return out


# -- time (in-process, repeated) -------------------------------------------------------------------------------------

def time_curves(study: Study) -> pd.DataFrame:
    """Extraction time of one model (median of ``overhead.repeats`` after a warm-up, with its interval) as the
    number of texts, max_length, token budget and the deepest kept layer vary (each distinct setting timed once:
    ``sweeps.measure_plan``)."""
    cfg, oh = study.config, study.config.overhead
    dataset = measured_dataset(study)
    loaded = models.load(oh.model or cfg.models[0], device=cfg.device, dtype=cfg.dtype, cache_dir=study.cache_dir)
    texts = _texts(study, dataset, max(oh.n_texts))
    base = cfg.extraction_config(dataset)
    plan = {"n_texts": list(oh.n_texts), "max_length": list(oh.max_length or [base.max_length]),
            "token_budget": list(oh.token_budget or [base.token_budget]),
            "layers": sweeps.sample_layers(loaded.n_hidden_states, oh.n_layers_sample)}
    out = sweeps.sweep(loaded, texts, base, plan, repeats=oh.repeats, warmup=1)
    out["dataset"] = dataset
    return pd.DataFrame([_hardware(r) for r in out.to_dict("records")])


def scaling_table(times: pd.DataFrame, memory: pd.DataFrame) -> pd.DataFrame:
    """The chapter's scaling curves (``overhead_scaling``): one row per setting with its time (median, interval)
    and, for the layer and token-budget curves, the fresh-process peak memory of that setting (``peak_bytes``)."""
    mem = memory[["vary", "value", "peak_bytes", "memory_kind"]]
    out = times.merge(mem, on=["vary", "value"], how="left")
    out["peak_bytes"] = out["peak_bytes"].astype("Int64")
    return out


def texts_linearity(curves: pd.DataFrame) -> dict[str, float]:
    """How linear extraction time is in the number of texts (least squares on the medians)."""
    return tradeoff.linearity(curves[curves["vary"] == "n_texts"], x="value", y="seconds")


def deployment_costs(study: Study, summary: pd.DataFrame, n_texts: int | None = None) -> pd.DataFrame:
    """Per model x dataset: seconds per 1k texts (median of ``overhead.repeats``, interval) for the full model and
    for stopping at the selected layer, on the first ``overhead.deploy_texts(dataset)`` test texts (``n_texts``
    overrides it for every dataset).

    Both passes pool what the deployed classifier reads, one layer in the primary pooling: the full pass the last
    layer, the stopped pass the selected one, so the two differ only in depth (pooling every layer in every pooling,
    the study's extraction, would charge the full pass for work a deployment does not do). Where the selected layer
    is the last, stopping there runs the full model's forward pass: that row repeats the full model's measurement
    (``same_as`` "full model", time saved 0) instead of timing the same pass again."""
    cfg = study.config
    best = summary[summary["pooling"] == cfg.primary_pooling].set_index(["model", "dataset"])["best_layer"]
    rows = []
    for model in cfg.models:
        loaded = models.load(model, device=cfg.device, dtype=cfg.dtype, cache_dir=study.cache_dir)
        last = loaded.n_hidden_states - 1
        for dataset in cfg.datasets:
            texts = _texts(study, dataset, int(n_texts or cfg.overhead.deploy_texts(dataset)))
            base = dataclasses.replace(cfg.extraction_config(dataset), poolings=(cfg.primary_pooling,))
            layer = int(best[(model, dataset)])
            full = sweeps.extraction_cost(loaded, texts, dataclasses.replace(base, layers=(last,)),
                                          repeats=cfg.overhead.repeats, warmup=1)
            if layer == last:
                stop, stop_same_as = full, "full model"
            else:
                stop = sweeps.extraction_cost(loaded, texts, dataclasses.replace(base, layers=(layer,)),
                                              repeats=cfg.overhead.repeats, warmup=1)
                stop_same_as = None
            for setting, cost, same_as in (("full model", full, None), ("stop at selected layer", stop, stop_same_as)):
                per_1k = 1000 / cost["n_texts"]
                rows.append(_hardware({"model": model, "dataset": dataset, "setting": setting, "best_layer": layer,
                                       "n_layers": last, "same_as": same_as,
                                       "seconds_per_1k": per_1k * cost["seconds"],
                                       "seconds_per_1k_low": per_1k * cost["seconds_low"],
                                       "seconds_per_1k_high": per_1k * cost["seconds_high"], **cost}))
        del loaded
    return pd.DataFrame(rows)


def _head_cost(study: Study, dataset: str, chosen: list[str], best: pd.Series, n: int) -> dict[str, float]:
    """Fit a concatenation fusion head of ``chosen`` and time its prediction on ``n`` test texts (per 1k)."""
    cfg = study.config
    Xs = {s: [study.layer_matrix(m, dataset, s, int(best.loc[m])) for m in chosen]
          for s in ("train", "validation", "test")}
    y = {s: study.labels(dataset, s) for s in ("train", "validation")}
    head = fusion.FusionClassifier(operator="concat", proj_dim=cfg.fusion.proj_dim, epochs=cfg.fusion.epochs,
                                   random_state=cfg.seed).fit(Xs["train"], y["train"], Xs["validation"],
                                                              y["validation"])
    test = [X[:n] for X in Xs["test"]]
    m = meter.measure(lambda: head.predict(test), repeats=cfg.overhead.repeats, warmup=1)
    scale = 1000 / len(test[0])
    return {"head_seconds_all": [scale * s for s in m.seconds_all]}


def models_costs(study: Study, deploy: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Cost of fusing the first k models (profile order), each stopped at its selected layer: the cost of each model
    added (its own repeats, median and interval), the fusion head's own cost, and their total with an interval
    (each part resampled separately; ``meter.sum_interval``). No regression on running sums: the parts are given
    as measured."""
    cfg = study.config
    dataset = measured_dataset(study)
    df = deploy[(deploy["dataset"] == dataset) & (deploy["setting"] == "stop at selected layer")].set_index("model")
    best = summary[(summary["pooling"] == cfg.primary_pooling) & (summary["dataset"] == dataset)]
    best = best.set_index("model")["best_layer"]
    rows = []
    for k in range(1, len(cfg.models) + 1):
        chosen = list(cfg.models[:k])
        parts = [[1000 * s / df.loc[m, "n_texts"] for s in df.loc[m, "seconds_all"]] for m in chosen]
        head = (_head_cost(study, dataset, chosen, best, int(df["n_texts"].iloc[0]))["head_seconds_all"] if k > 1
                else [0.0])
        added = meter.median_interval(parts[-1])
        head_ci = meter.median_interval(head)
        total = meter.sum_interval(parts + [head])
        rows.append({"dataset": dataset, "k": k, "models": "+".join(chosen), "added_model": chosen[-1],
                     "added_per_1k": added[0], "added_per_1k_low": added[1], "added_per_1k_high": added[2],
                     "head_per_1k": head_ci[0], "head_per_1k_low": head_ci[1], "head_per_1k_high": head_ci[2],
                     "total_per_1k": total[0], "total_per_1k_low": total[1], "total_per_1k_high": total[2],
                     "repeats": len(parts[-1])})
    return pd.DataFrame(rows)


def fit_costs(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    """Wall time of fitting the all-layer probe (per model) and a concatenation fusion of all models, once each,
    on the overhead dataset of the profile."""
    cfg = study.config
    rows = []
    dataset = measured_dataset(study)
    y = {s: study.labels(dataset, s) for s in ("train", "validation")}
    for model in cfg.models:
        X = {s: study.layer_stack(model, dataset, s) for s in ("train", "validation")}
        m = meter.measure(lambda: probe.LayerwiseProbe(**cfg.probe.params(), random_state=cfg.seed).fit(
            X["train"], y["train"], X["validation"], y["validation"]), repeats=1, warmup=0)
        rows.append({"dataset": dataset, "what": "all-layer probe", "models": model,
                     "n_layers": int(X["train"].shape[1]), "seconds": m.seconds_median})
    best = summary[(summary["pooling"] == cfg.primary_pooling) & (summary["dataset"] == dataset)].set_index("model")
    Xs = {s: [study.layer_matrix(m, dataset, s, int(best.loc[m, "best_layer"])) for m in cfg.models]
          for s in ("train", "validation")}
    m = meter.measure(lambda: fusion.FusionClassifier(
        operator="concat", proj_dim=cfg.fusion.proj_dim, epochs=cfg.fusion.epochs, random_state=cfg.seed).fit(
        Xs["train"], y["train"], Xs["validation"], y["validation"]), repeats=1, warmup=0)
    rows.append({"dataset": dataset, "what": "concat fusion of all models", "models": "+".join(cfg.models),
                 "n_layers": 1, "seconds": m.seconds_median})
    return pd.DataFrame(rows)


# -- storage ---------------------------------------------------------------------------------------------------------

def storage(study: Study) -> pd.DataFrame:
    """Bytes the embedding cache holds per model x dataset x split, summed exactly from its files."""
    cfg = study.config
    rows = []
    for model in cfg.models:
        for dataset in cfg.datasets:
            for split in ("train", "validation", "test"):
                emb = study.features(model, dataset, split)
                if emb.path is None:
                    continue
                n, n_layers, width = next(iter(emb.vectors.values())).shape
                size = costmodel.storage_bytes(emb.path)
                rows.append({"model": model, "dataset": dataset, "split": split, "n_texts": int(n),
                             "n_layers": int(n_layers), "n_poolings": len(emb.vectors), "width": int(width),
                             "files": costmodel.storage_files(emb.path), "bytes": size,
                             "bytes_per_text": size / max(int(n), 1)})
    return pd.DataFrame(rows)


# -- accuracy against cost -------------------------------------------------------------------------------------------

def accuracy_vs_cost(comparisons: pd.DataFrame, runs: pd.DataFrame, deploy: pd.DataFrame) -> pd.DataFrame:
    """Every single model and fusion with its test accuracy and inference cost per 1k texts (selected layers)."""
    setting = deploy["setting"].replace({"stop at best layer": "stop at selected layer"})
    cost = deploy[setting == "stop at selected layer"].set_index(["model", "dataset"])["seconds_per_1k"]
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
    return pd.concat([tradeoff.pareto_front(g, cost="cost", score="accuracy") for _, g in
                      table.groupby("dataset", sort=False)], ignore_index=True)


# -- the paper's scale on a GPU (a committed table) -----------------------------------------------------------------

GPU_REQUIRED = ("gpu", "model", "layers_kept", "seconds", "peak_bytes")
GPU_ALIASES = {"model_shape": "model", "shape": "model", "backbone": "model", "git": "git_sha", "sha": "git_sha",
               "gpu_name": "gpu", "device_name": "gpu", "peak_memory_bytes": "peak_bytes", "n_tokens": "tokens",
               "real_tokens": "tokens", "texts": "n_texts"}
"""Column names of the GPU table (``python -m benchmarks.gpu_overhead``) accepted as other spellings."""


def _gpu_rows(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path)
    data = json.loads(path.read_text())
    rows = data.get("rows", data.get("measurements")) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of rows or {{'rows': [...]}}; fix the file or move it out of "
                         "results/gpu/")
    return pd.DataFrame(rows)


def gpu_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with column names normalised: lower case, ``_`` for spaces and dashes, ``GPU_ALIASES`` applied only
    where the table lacks the canonical name (gpu_overhead.csv has both ``tokens`` per text and ``real_tokens``: the
    second must not become a duplicate ``tokens``)."""
    names = [str(c).strip().lower().replace(" ", "_").replace("-", "_") for c in df.columns]
    return df.set_axis([GPU_ALIASES[c] if c in GPU_ALIASES and GPU_ALIASES[c] not in names else c for c in names],
                       axis=1)


def gpu_table(folder: str | Path) -> pd.DataFrame | None:
    """The measurements of every GPU table (``*.csv`` / ``*.json``, provenance files skipped) under ``folder``, with
    column names normalised (``gpu_columns``); None when there is none.
    Raises ``ValueError`` naming the file when a table lacks a column of ``GPU_REQUIRED``."""
    root = Path(folder)
    if not root.is_dir():
        return None
    frames = []
    for path in sorted(root.glob("*")):
        if path.suffix not in (".csv", ".json") or "provenance" in path.stem.lower():
            continue
        df = _gpu_rows(path)
        df = gpu_columns(df)
        missing = [c for c in GPU_REQUIRED if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: GPU table lacks column(s) {missing}; it has {list(df.columns)}")
        frames.append(df.assign(source=path.name))
    return pd.concat(frames, ignore_index=True) if frames else None


GPU_KINDS = {"extract": "extraction, every pooling", "fusion_fit": "fusion head training",
             "fused": "extraction of each backbone + fusion head"}
"""What each ``kind`` of row of ``benchmarks.gpu_overhead`` measures, in the reader's words."""

GPU_SUMMARY_COLUMNS = ("gpu", "model", "layers_kept", "repeats", "seconds", "seconds_low", "seconds_high",
                       "peak_bytes")


def gpu_summary(raw: pd.DataFrame | None) -> pd.DataFrame:
    """One row per kind of measurement x GPU x model x dtype x layers kept (x texts and tokens where given): repeats,
    median seconds and its interval, throughput (real tokens/s and texts/s at the median) and the largest peak memory
    (bytes) over the repeats. ``layers_kept`` stays as written (a count, or "all" for the fused rows). No table (None)
    gives an empty frame."""
    if raw is None:
        return pd.DataFrame(columns=list(GPU_SUMMARY_COLUMNS))
    keys = [c for c in ("kind", "gpu", "model", "dtype", "models_fused", "layers_kept", "n_texts", "tokens",
                        "max_length") if c in raw.columns]
    raw = raw.assign(layers_kept=raw["layers_kept"].astype(str))
    rows = []
    for key, grp in raw.groupby(keys, sort=False, dropna=False):
        seconds = grp["seconds"].dropna().astype(float).to_numpy()
        if len(seconds) == 0:
            continue
        med, low, high = meter.median_interval(seconds)
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row.update({"repeats": len(seconds), "seconds": med, "seconds_low": low, "seconds_high": high,
                    "peak_bytes": int(grp["peak_bytes"].max())})
        if row.get("kind") == "fusion_fit":
            pass  # the fusion head reads vectors, not tokens: no throughput in tokens
        elif "real_tokens" in grp and grp["real_tokens"].notna().any():
            row["tokens_per_s"] = float(grp["real_tokens"].median()) / med
        elif "tokens" in row and "n_texts" in row and pd.notna(row["tokens"]) and pd.notna(row["n_texts"]):
            row["tokens_per_s"] = float(row["tokens"]) * float(row["n_texts"]) / med
        if "n_texts" in row and pd.notna(row["n_texts"]):
            row["texts_per_s"] = float(row["n_texts"]) / med
        rows.append(row)
    return pd.DataFrame(rows)


def gpu_layer_sweep(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows of the layers-kept sweep: extraction rows (kind ``extract`` where the table has kinds) at each
    model's most common texts x tokens size, ``layers_kept`` as an integer; what the GPU figure draws."""
    if summary.empty:
        return summary
    rows = summary[summary["kind"] == "extract"] if "kind" in summary else summary
    rows = rows[pd.to_numeric(rows["layers_kept"], errors="coerce").notna()].copy()
    size = [c for c in ("n_texts", "tokens") if c in rows]
    if size:
        common = rows.groupby("model")[size].agg(lambda c: c.mode().iloc[0])
        rows = rows[(rows[size] == common.loc[rows["model"]].to_numpy()).all(axis=1)]
    return rows.assign(layers_kept=rows["layers_kept"].astype(int))


def gpu_names(raw: pd.DataFrame | None) -> str:
    """The GPUs of the table, for the prose ("" without a table)."""
    if raw is None:
        return ""
    return ", ".join(sorted(str(g) for g in raw["gpu"].dropna().unique()))


def gpu_folder(results_dir: str | Path) -> Path:
    """Where the committed GPU table lives: ``results/gpu/`` beside the profile's results folder."""
    return Path(results_dir).parent / "gpu"


def gpu_measurements(results_dir: str | Path) -> pd.DataFrame | None:
    """The committed GPU table for a profile's results: ``results/gpu/`` beside them (``gpu_folder``), else the
    checkout's ``results/gpu/`` (a ci or quick run may write its results elsewhere); None when neither has one."""
    folder = gpu_folder(results_dir)
    return gpu_table(folder if folder.is_dir() else workspace.repo_root() / "results" / "gpu")


def gpu_status(raw: pd.DataFrame | None) -> dict[str, str]:
    """The sentence the chapter shows about the GPU table."""
    if raw is None:
        return {"gpu_sentence": "No GPU table is committed under results/gpu/, so this build has no measurement at "
                                "the paper's scale; `python -m benchmarks.gpu_overhead` writes one on a GPU."}
    shas = sorted({str(s)[:12] for s in raw.get("git_sha", pd.Series(dtype=str)).dropna()})
    return {"gpu_sentence": f"Measured on {gpu_names(raw)} ({len(raw)} timed runs"
                            + (f", code at {', '.join(shas)}" if shas else "") + "): random weights of the paper's "
                            "backbones, whose memory and time do not depend on the weights."}


# -- tables for reading ----------------------------------------------------------------------------------------------

def _mib(values: pd.Series) -> pd.Series:
    return (values.astype(float) / MIB).round(1)


def _interval(med: pd.Series, low: pd.Series, high: pd.Series, digits: int = 2) -> list[str]:
    return [f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(lo) else f"{m:.{digits}f}"
            for m, lo, hi in zip(med.astype(float), low.astype(float), high.astype(float))]


def calibration_table(cal: pd.DataFrame) -> pd.DataFrame:
    """The meter's check for reading."""
    return pd.DataFrame({"allocated (MiB)": _mib(cal["allocated_bytes"]), "measured peak (MiB)": _mib(cal["peak_bytes"]),
                         "measured peak / allocated": (cal["peak_bytes"] / cal["allocated_bytes"]).round(3),
                         "meter": cal["memory_kind"]})


def footprint_table(fp: pd.DataFrame) -> pd.DataFrame:
    """Per model: dtype, parameters, their bytes, the memory the loaded model holds and the peak while loading."""
    return pd.DataFrame({"model": fp["model"], "dtype": fp["dtype"], "parameters": fp["n_parameters"].astype(int),
                         "parameter size (MiB)": _mib(fp["parameter_bytes"]),
                         "resident after load (MiB)": _mib(fp["resident_bytes"]),
                         "peak while loading (MiB)": _mib(fp["peak_load_bytes"]),
                         "load time (s)": fp["load_seconds"].astype(float).round(2)})


def memory_table(mem: pd.DataFrame) -> pd.DataFrame:
    """Peak memory of one extraction per setting (fresh process each) for reading."""
    what = {"layers": "deepest layer kept", "token_budget": "token budget (tokens per batch)"}
    return pd.DataFrame({"setting": mem["vary"].map(what), "value": mem["value"].astype(int),
                         "texts": mem["n_texts"].astype(int), "layers kept": mem["n_layers_kept"].astype(int),
                         "model loaded (MiB)": _mib(mem["setup_bytes"]),
                         "extraction peak above it (MiB)": _mib(mem["peak_bytes"]),
                         "extraction time (s, one run)": mem["seconds"].astype(float).round(2)})


def storage_table(store: pd.DataFrame) -> pd.DataFrame:
    """Cache bytes per model x dataset (splits summed) for reading."""
    g = store.groupby(["model", "dataset"], sort=False).agg(
        texts=("n_texts", "sum"), layers=("n_layers", "first"), poolings=("n_poolings", "first"),
        width=("width", "first"), files=("files", "sum"), size=("bytes", "sum")).reset_index()
    g["size (MiB)"] = _mib(g.pop("size"))
    g["bytes per text"] = (store.groupby(["model", "dataset"], sort=False)["bytes"].sum().to_numpy()
                           / g["texts"].to_numpy()).round().astype(int)
    return g


def deployment_table(deploy: pd.DataFrame) -> pd.DataFrame:
    """Seconds per 1k texts (median [95 % interval]) for the full model and for stopping at the selected layer,
    and the share of time saved (medians), per model x dataset. A stop at the last layer is the full pass, shown
    as such (``deployment_costs`` times it once)."""
    shown = _interval(deploy["seconds_per_1k"], deploy["seconds_per_1k_low"], deploy["seconds_per_1k_high"])
    same = deploy["same_as"].notna() if "same_as" in deploy else pd.Series(False, index=deploy.index)
    d = deploy.assign(shown=[("the full pass (last layer)" if s else x) for x, s in zip(shown, same)])
    wide = d.pivot_table(index=["model", "dataset", "best_layer", "n_layers"], columns="setting",
                         values=["shown", "seconds_per_1k"], aggfunc="first", sort=False)
    out = pd.DataFrame({"model": [i[0] for i in wide.index], "dataset": [i[1] for i in wide.index],
                        "selected layer / layers": [f"{i[2]} / {i[3]}" for i in wide.index],
                        "full model (s per 1k texts)": wide[("shown", "full model")].to_numpy(),
                        "stop at selected layer (s per 1k texts)": wide[("shown", "stop at selected layer")].to_numpy()})
    saved = 1 - wide[("seconds_per_1k", "stop at selected layer")] / wide[("seconds_per_1k", "full model")]
    out["time saved (%)"] = (100 * saved.to_numpy()).round(0).astype(int)
    return out


def models_table(costs: pd.DataFrame) -> pd.DataFrame:
    """Cost of fusing the first k models for reading: model added, its cost, the head's, the total."""
    return pd.DataFrame({"models fused": costs["k"].astype(int), "models": costs["models"],
                         "added model (s per 1k texts)": _interval(costs["added_per_1k"], costs["added_per_1k_low"],
                                                                   costs["added_per_1k_high"]),
                         "fusion head (s per 1k texts)": _interval(costs["head_per_1k"], costs["head_per_1k_low"],
                                                                   costs["head_per_1k_high"], digits=4),
                         "total (s per 1k texts)": _interval(costs["total_per_1k"], costs["total_per_1k_low"],
                                                             costs["total_per_1k_high"]),
                         "repeats": costs["repeats"].astype(int)})


def fits_table(fits: pd.DataFrame) -> pd.DataFrame:
    """Fitting times for reading."""
    return pd.DataFrame({"dataset": fits["dataset"], "what": fits["what"], "models": fits["models"],
                         "layers": fits["n_layers"].astype(int), "fit time (s, one run)": fits["seconds"].round(2)})


def pareto_table(front: pd.DataFrame) -> pd.DataFrame:
    """The Pareto front for reading."""
    return pd.DataFrame({"dataset": front["dataset"], "models and operator": front["label"],
                         "test accuracy": front["accuracy"].round(3),
                         "extraction cost (s per 1k texts)": front["cost"].round(1)})


def gpu_reader_table(summary: pd.DataFrame) -> pd.DataFrame | None:
    """The GPU summary for reading (None, which shows nothing, when there is no GPU table)."""
    if summary.empty:
        return None
    out = pd.DataFrame({"GPU": summary["gpu"], "backbone(s)": summary["model"]})
    if "kind" in summary:
        out.insert(0, "measured", summary["kind"].map(GPU_KINDS).fillna(summary["kind"]))
    for col in ("dtype", "models_fused", "n_texts", "tokens"):
        if col in summary:
            out[col.replace("_", " ").replace("n texts", "texts").replace("tokens", "tokens per text")] = summary[col]
    out["layers kept"] = summary["layers_kept"].astype(str)
    out["repeats"] = summary["repeats"].astype(int)
    out["time (s)"] = _interval(summary["seconds"], summary["seconds_low"], summary["seconds_high"], digits=3)
    out["peak memory (GiB)"] = (summary["peak_bytes"].astype(float) / 2**30).round(2)
    if "tokens_per_s" in summary:
        out["throughput (tokens/s)"] = summary["tokens_per_s"].round(0)
    return out
