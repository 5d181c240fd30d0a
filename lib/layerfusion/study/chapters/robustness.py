"""Chapter 6: do the verdicts move when the features move by the rounding error of the other dtype?

A profile with ``dtype: null`` extracts in bf16 on CPUs with native bf16 and in fp32 elsewhere, and the two
extractions differ by the error the extraction chapter measures (its ``dtype_agreement`` table: per layer, the mean
relative error of bf16 vectors against fp32 ones). Extracting everything again in the other dtype costs hours;
instead every cached vector is perturbed at the measured level (``resolve``: by default the worst layer's error, the
profile's ``robustness`` block, ``RobustnessSettings``)
and what the verdicts depend on is recomputed with the chapters' own functions, on a ``Study`` whose features pass
through the perturbation (``Study(transform=...)``):

- the layer chapter's probe and best-vs-last summary for the primary pooling (chosen layers, C, McNemar tests);
- the fusion chapter's concatenations with the profile's seeds, with their ensembles, comparisons, stability and
  complementarity tables (``analyse_fusion(..., operators=("concat",), extras=False)``: the other operators, the
  controls and the greedy search are left out).

The claims table is then built by ``claims.evaluate`` twice, from the chapters' tables and from the recomputed ones,
each side restricted alike: the primary pooling with Holm over its cells, and concatenation only (tables not
recomputed are read as their chapters wrote them, on both sides). A verdict that differs between the two has moved.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from layerfusion import stats
from layerfusion.study import claims, report
from layerfusion.study.chapters import fusion, layer_analysis
from layerfusion.study.features import Study
from layerfusion.study.results import TableSet
from layerfusion.study.settings import RobustnessSettings
from layerfusion.study.verdicts import Levels
from layerfusion.study.warnlog import WarningLog

RECOMPUTED = ("layers_summary", "layers_per_layer", "fusion_runs", "fusion_ensembles", "fusion_comparisons",
              "fusion_stability", "fusion_complementarity")
"""The results tables this chapter recomputes; every other table is read as its chapter wrote it."""


@dataclass
class RobustnessAnalysis(TableSet):
    """Tables produced by ``analyse_robustness`` (original beside perturbed)."""

    layers: pd.DataFrame
    per_layer: pd.DataFrame
    fusion: pd.DataFrame
    claims: pd.DataFrame
    cost: pd.DataFrame
    warnings: pd.DataFrame


def perturb(vectors: np.ndarray, settings: RobustnessSettings, key: str) -> np.ndarray:
    """float32 copy of ``vectors`` perturbed as ``settings`` says; the noise is seeded by ``settings.seed`` and
    ``key`` (model, dataset and split), so every read of one entry gives the same vectors."""
    x = np.asarray(vectors, dtype=np.float32).copy()
    if settings.kind == "round":
        import torch

        return torch.from_numpy(x).to(getattr(torch, settings.dtype)).float().numpy()
    rng = np.random.default_rng([settings.seed, zlib.crc32(key.encode())])
    factor = rng.random(x.shape, dtype=np.float32)
    factor *= 2 * settings.relative_scale
    factor += 1 - settings.relative_scale
    x *= factor
    return x


def perturbation(settings: RobustnessSettings, pooling: str) -> Callable[[str, str, str, Any], Any]:
    """A ``Study`` transform: the embeddings with only ``pooling``, perturbed (the other poolings are not read)."""
    def transform(model: str, dataset: str, split: str, emb: Any) -> Any:
        vectors = {pooling: perturb(emb.vectors[pooling], settings, f"{model}|{dataset}|{split}")}
        return dataclasses.replace(emb, vectors=vectors)
    return transform


def resolve(settings: RobustnessSettings, load: claims.Loader | None = None) -> RobustnessSettings:
    """``settings`` with its noise ``scale`` fixed: as given, or from the extraction chapter's ``dtype_agreement``
    table (read through ``load``) as ``match`` asks. Uniform noise ``u`` in ``[-s, s]`` multiplies each value, so a
    vector's relative error is about ``s / sqrt(3)`` (the RMS of ``u``): ``s = sqrt(3) * e`` for the measured mean
    relative error ``e`` of the worst layer (``measured_max``) or the median layer (``measured_median``) in
    ``settings.dtype``. The measured error is not independent noise (it grows with depth and is larger for some
    texts), so matching the worst layer's mean is the conservative reading. ``roundoff`` or a ``kind: round`` leave
    the settings as they are."""
    if settings.scale is not None or settings.match == "roundoff" or settings.kind != "noise":
        return settings
    if load is None:
        raise ValueError(f"robustness.match is {settings.match!r}: pass the chapter's loader so the extraction "
                         "chapter's dtype_agreement table can be read, or set robustness.scale in the profile")
    agreement = load("dtype_agreement")
    rows = agreement[agreement["dtype"] == settings.dtype]["rel_error_mean"].dropna()
    if rows.empty:
        raise ValueError(f"results table dtype_agreement has no {settings.dtype} rows: run the extraction chapter "
                         "first, or set robustness.scale (or match: roundoff) in the profile")
    error = float(rows.max() if settings.match == "measured_max" else rows.median())
    return dataclasses.replace(settings, scale=min(float(np.sqrt(3.0) * error), 0.5))


def perturbed_study(study: Study, settings: RobustnessSettings | None = None) -> Study:
    """The same profile over the same cache, every features read perturbed (``settings`` default to the profile's)."""
    cfg = study.config
    return Study(cfg, cache_dir=study.cache_dir, progress=False,
                 transform=perturbation(settings or cfg.robustness, cfg.primary_pooling), fits=study.fits)


def primary(summary: pd.DataFrame, pooling: str) -> pd.DataFrame:
    """The layer summary's rows of ``pooling``, with Holm over those cells only (the same family on both sides)."""
    rows = summary[summary["pooling"] == pooling].reset_index(drop=True)
    rows["p_best_vs_last_holm"] = stats.holm(rows["p_best_vs_last"].to_numpy())
    return rows


def layer_tables(study: Study, pooling: str, log: WarningLog | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The layer chapter's per-layer rows, best-vs-last summary (Holm over these cells) and bootstrap selection
    frequencies for one pooling on every model x dataset, from one fit per cell under the profile's protocol
    (``fit_probe``, ``probe_layers``, ``summarise``, ``selection_rows``); warnings go to ``log`` as in chapter 2."""
    cfg = study.config
    log = log or WarningLog()
    per_layer, summary, selection = [], [], []
    for dataset in cfg.datasets:
        for model in cfg.models:
            with log.capture(model=model, dataset=dataset, step="probe"):
                fitted = layer_analysis.fit_probe(study, model, dataset, pooling, cfg.selection.protocol)
                rows, arrays = layer_analysis.probe_layers(study, model, dataset, pooling, fitted)
                per_layer.append(rows)
                summary.append(layer_analysis.summarise(model, dataset, pooling, arrays, cfg.power.alpha,
                                                        cfg.power.power))
                selection.append(layer_analysis.selection_rows(model, dataset, pooling, cfg.selection.protocol,
                                                               fitted[0], arrays["layers"], cfg.selection.n_boot,
                                                               cfg.seed))
    return (pd.concat(per_layer, ignore_index=True), primary(pd.DataFrame(summary), pooling),
            pd.concat(selection, ignore_index=True))


def _overlay(load: claims.Loader, tables: dict[str, pd.DataFrame]) -> claims.Loader:
    return lambda name: tables[name] if name in tables else load(name)


def _side_by_side(original: pd.DataFrame, perturbed: pd.DataFrame, keys: list[str], values: list[str]
                  ) -> pd.DataFrame:
    merged = original[keys + values].merge(perturbed[keys + values], on=keys, suffixes=("_original", "_perturbed"))
    return merged[keys + [f"{v}_{side}" for v in values for side in ("original", "perturbed")]]


def _claims_side_by_side(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"claim": before["claim"], "verdict_original": before["verdict"],
                        "verdict_perturbed": after["verdict"]})
    out["moved"] = out["verdict_original"] != out["verdict_perturbed"]
    for column in ("test", "p_value", "effect"):
        if column in before:
            out[f"{column}_original"], out[f"{column}_perturbed"] = before[column], after[column]
    return out


def analyse_robustness(study: Study, load: claims.Loader, shaken: Study | None = None) -> RobustnessAnalysis:
    """Recompute the verdicts' inputs on perturbed features and set every verdict beside its recomputation.

    ``load`` reads the tables the earlier chapters wrote (``Chapter.load``); ``shaken`` is the study to recompute on
    (default ``perturbed_study`` at the measured error, ``resolve``; the tests pass one that leaves the features as
    they are).
    """
    cfg = study.config
    levels = Levels.of(cfg)
    pooling, shaken = cfg.primary_pooling, shaken or perturbed_study(study, resolve(cfg.robustness, load))
    cost, start = [], time.perf_counter()
    log = WarningLog()
    per_layer, summary, selection = layer_tables(shaken, pooling, log)
    cost.append({"step": "layer probes and best-vs-last tests (reading and perturbing the features included)",
                 "seconds": time.perf_counter() - start})
    start = time.perf_counter()
    with log.capture(model="", dataset="", step="fusion"):
        fused = fusion.analyse_fusion(shaken, summary, per_layer, operators=("concat",), extras=False)
    cost.append({"step": f"concatenations and ensembles, {len(cfg.fusion.seeds)} seeds",
                 "seconds": time.perf_counter() - start})
    start = time.perf_counter()
    original = {"layers_summary": primary(load("layers_summary"), pooling),
                "layers_per_layer": load("layers_per_layer").query("pooling == @pooling"),
                "layers_selection": load("layers_selection").query("pooling == @pooling"),
                "fusion_comparisons": load("fusion_comparisons").query("operator == 'concat'")}
    recomputed = {"layers_summary": summary, "layers_per_layer": per_layer, "layers_selection": selection,
                  "fusion_runs": fused.runs,
                  "fusion_ensembles": fused.ensembles, "fusion_comparisons": fused.comparisons,
                  "fusion_stability": fused.stability, "fusion_complementarity": fused.complementarity}
    verdicts = _claims_side_by_side(claims.evaluate(_overlay(load, original), pooling, levels),
                                    claims.evaluate(_overlay(load, recomputed), pooling, levels))
    cost.append({"step": "claims table, twice", "seconds": time.perf_counter() - start})
    layers = _side_by_side(original["layers_summary"], summary, ["model", "dataset"],
                           ["best_layer", "delta_best_minus_last", "p_best_vs_last_holm"])
    layers["layer_moved"] = layers["best_layer_original"] != layers["best_layer_perturbed"]
    comparisons = [frame.assign(combo=frame["models"].map("+".join))
                   for frame in (original["fusion_comparisons"], fused.comparisons)]
    return RobustnessAnalysis(
        layers=layers,
        per_layer=_side_by_side(original["layers_per_layer"], per_layer, ["model", "dataset", "layer"],
                                ["test_accuracy", "C"]),
        fusion=_side_by_side(*comparisons, ["dataset", "combo", "k"], ["test_mean", "gain", "p_value"]),
        claims=verdicts, cost=pd.DataFrame(cost), warnings=log.table())


def verdict_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The claims side by side for reading: both verdicts, whether they moved, and the decisive test's p-value and
    effect on each side (``–`` where the claim's rule reports none); a claim judged from measurements is marked
    under the ci profile (``report.mark_rows``)."""
    table = pd.DataFrame({"claim": verdicts["claim"], "verdict (original)": verdicts["verdict_original"],
                          "verdict (perturbed)": verdicts["verdict_perturbed"], "moved": verdicts["moved"]})
    for column, label in (("p_value", "p"), ("effect", "effect")):
        for side in ("original", "perturbed"):
            values = verdicts.get(f"{column}_{side}", pd.Series(np.nan, index=verdicts.index))
            table[f"{label} ({side})"] = values.map(lambda v: f"{v:.2g}" if pd.notna(v) else "–")
    table.index = table.index + 1
    return report.mark_rows(table, table["claim"].isin(claims.MEASURED_CLAIMS))


def headline(analysis: RobustnessAnalysis, settings: RobustnessSettings, alpha: float) -> dict[str, Any]:
    """The numbers the chapter's prose quotes (``settings`` as ``resolve`` fixed them; ``alpha``: the profile's
    ``power.alpha``)."""
    layers, per_layer, fused, verdicts = analysis.layers, analysis.per_layer, analysis.fusion, analysis.claims
    significant = {side: (layers[f"p_best_vs_last_holm_{side}"] < alpha) & (layers[f"delta_best_minus_last_{side}"] > 0)
                   for side in ("original", "perturbed")}
    accuracy_change = (per_layer["test_accuracy_perturbed"] - per_layer["test_accuracy_original"]).abs() * 100
    gain_change = (fused["gain_perturbed"] - fused["gain_original"]).abs() * 100
    fused_sig = {side: fused[f"p_value_{side}"] < alpha for side in ("original", "perturbed")}
    moved = verdicts[verdicts["moved"]]
    return {
        "kind": settings.kind, "dtype": settings.dtype, "scale": f"{settings.relative_scale:.3g}",
        "match": settings.match, "rms_relative": f"{settings.relative_scale / np.sqrt(3):.3g}",
        "n_cells": int(len(layers)), "n_layers_moved": int(layers["layer_moved"].sum()),
        "n_significant_original": int(significant["original"].sum()),
        "n_significant_perturbed": int(significant["perturbed"].sum()),
        "n_layer_rows": int(len(per_layer)), "n_accuracy_changed": int((accuracy_change > 1e-9).sum()),
        "max_accuracy_change": f"{accuracy_change.max():.2f}" if len(per_layer) else "n/a",
        "n_C_changed": int((per_layer["C_original"] != per_layer["C_perturbed"]).sum()),
        "n_fusions": int(len(fused)), "max_gain_change": f"{gain_change.max():.2f}" if len(fused) else "n/a",
        "n_fusion_significance_changed": int((fused_sig["original"] != fused_sig["perturbed"]).sum()),
        "n_claims": int(len(verdicts)), "n_moved": int(len(moved)),
        "moved_claims": "; ".join(f"“{r.claim}” ({r.verdict_original} → {r.verdict_perturbed})"
                                  for r in moved.itertuples()) or "none",
        "seconds": f"{analysis.cost['seconds'].sum():.0f}",
    }
