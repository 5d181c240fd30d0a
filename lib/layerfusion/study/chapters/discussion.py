"""Chapter 5: each claim of the paper judged from this build's results files, and the reproduction gap between the
authors' protocol and ours. The verdict rules live in ``layerfusion.study.claims``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from layerfusion import pooling as pooling_mod
from layerfusion.study import claims, report
from layerfusion.study.verdicts import Levels

def _label(name: str) -> str:
    """How the chapter's tables name a pooling: its registry label (``pooling.POOLINGS``), else its name."""
    spec = pooling_mod.POOLINGS.get(name)
    return spec.label if spec is not None else name


def verdicts(load: claims.Loader, pooling: str, levels: Levels) -> pd.DataFrame:
    """The claims table (``claims.evaluate`` at the profile's ``levels``), numbered from 1 as the prose numbers the
    claims."""
    table = claims.evaluate(load, pooling, levels)
    table.index = table.index + 1
    return table


def beyond_the_paper(load: claims.Loader, levels: Levels) -> pd.DataFrame:
    """The automated layer search (the authors' future work), descriptive, not a verdict
    (``claims.beyond_the_paper``), rounded for reading: gains and intervals in points over test items."""
    table = claims.beyond_the_paper(load("fusion_greedy"), load("layers_greedy"), load("fusion_comparisons"), levels)
    for column in ("gain", "low", "high", "mde"):
        table[column] = table[column].round(2)
    table["p_holm"] = table["p_holm"].map(lambda p: f"{p:.2g}" if np.isfinite(p) else "–")
    return table.rename(columns={"low": "gain low", "high": "gain high", "p_holm": "McNemar p (Holm)",
                                 "same_as_claim2": "same models as claim 2's chosen fusion"})


def _number(value: Any, fmt: str) -> str:
    return "" if value is None or not np.isfinite(value) else format(value, fmt)


def claims_view(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table for reading: verdict; the registered test (name, unit, claimed direction, null, family);
    effect with its ``1 - alpha`` interval; one-sided p in the claimed and in the opposite direction (corrected in
    the family); the minimum detectable effect at the profile's power and the power to detect an effect the size of
    the margin; the TOST p against the margin; then the
    evidence; numbers to three significant digits. Under the ci profile a claim judged from measurements
    (``claims.MEASURED_CLAIMS``) shows its row marked (``report.mark_rows``)."""
    effect = [f"{_number(e, '.3g')} [{_number(lo, '.3g')}, {_number(hi, '.3g')}]" if lo is not None and
              np.isfinite(lo) else _number(e, ".3g") for e, lo, hi in
              zip(table["effect"], table["effect_low"], table["effect_high"])]
    view = pd.DataFrame({
        "claim": table["claim"], "verdict": table["verdict"], "test": table["test"].fillna(""),
        "unit": table["unit"].fillna(""), "claimed": table["direction"].fillna(""),
        "null": table["null"].fillna(""), "family": table["family"].fillna(""),
        "effect [CI]": effect, "p claimed": [_number(p, ".2g") for p in table["p_value"]],
        "p opposite": [_number(p, ".2g") for p in table["p_opposite"]],
        "MDE": [_number(m, ".3g") for m in table["mde"]],
        "power at margin": [_number(p, ".2f") for p in table["power"]],
        "TOST p (margin)": [f"{_number(p, '.2g')} (±{_number(m, '.3g')})" if m is not None and np.isfinite(m)
                            else "no margin" for p, m in zip(table["tost_p"], table["margin"])],
        "evidence": table["evidence"],
    }, index=table.index)
    return report.mark_rows(view, table["claim"].isin(claims.MEASURED_CLAIMS))


def verdict_facts(table: pd.DataFrame) -> dict[str, str]:
    """Each claim's verdict, keyed ``claim<N>_verdict`` for the prose (a claim judged from measurements marked
    under the ci profile, ``report.mark_rows``)."""
    shown = report.mark_rows(table[["claim", "verdict"]], table["claim"].isin(claims.MEASURED_CLAIMS))
    return {f"claim{i}_verdict": verdict for i, verdict in shown["verdict"].items()}


def reproduction_gap(load: claims.Loader, pooling: str) -> pd.DataFrame:
    """The authors' protocol (max test over epochs, their pooling; mean over its seeds) against ours, per model x
    dataset.

    Ours is the selected layer of the primary ``pooling``, and the same protocol with the authors' pooling (read from
    the ``layers_authors`` table).
    """
    per_seed = load("layers_authors")
    theirs = str(per_seed["pooling"].iloc[0])
    authors = per_seed.groupby(["model", "dataset"], sort=False).agg(
        seeds=("seed", "nunique"), max_test_accuracy=("max_test_accuracy", "mean"),
        val_selected_test_accuracy=("val_selected_test_accuracy", "mean"), optimism=("optimism", "mean"),
        optimism_sd=("optimism", "std")).reset_index()
    summary = load("layers_summary")
    ours = summary[summary["pooling"] == pooling][["model", "dataset", "best_layer", "best_test_accuracy"]]
    pad = summary[summary["pooling"] == theirs][["model", "dataset", "best_test_accuracy"]]
    out = authors.merge(ours, on=["model", "dataset"]).merge(pad, on=["model", "dataset"], suffixes=("", "_theirs"))
    return pd.DataFrame({
        "model": out["model"], "dataset": out["dataset"], "seeds": out["seeds"],
        "authors: max test over epochs": out["max_test_accuracy"].round(4),
        "authors: epoch chosen on val": out["val_selected_test_accuracy"].round(4),
        "optimism (points)": (out["optimism"] * 100).round(2),
        "optimism sd (points)": (out["optimism_sd"] * 100).round(2),
        f"ours: selected layer, {_label(pooling)}": out["best_test_accuracy"].round(4),
        f"ours, same protocol with {_label(theirs)}": out["best_test_accuracy_theirs"].round(4),
    })


def gap_facts(gap: pd.DataFrame) -> dict[str, Any]:
    """The numbers the prose quotes: the median (over model x dataset) of the mean optimism of selecting the epoch
    on test, in points, and the number of seeds behind each mean."""
    return {"median_optimism": float(gap["optimism (points)"].median()), "authors_seeds": int(gap["seeds"].min())}


# -- the paper <-> book map --------------------------------------------------------------------------------------------

PAPER_CLAIMS = (
    ("Different layers of a decoder LLM differ in how useful they are for classification; the critical layer depends "
     "on the dataset", "abstract (as recorded in research/paper.md)",
     "quality tends to rise with depth and then drop at the final layer, so mid-to-late layers often beat the last: "
     "from third-party summaries of the full text, not the paper's own wording",
     "7B decoders have 26-32 layers and wider states; the selected depth and its gap to the last layer may differ"),
    ("Combining embeddings of several frozen LLMs (no fine-tuning) improves accuracy when the models are "
     "complementary", "abstract (as recorded in research/paper.md)", "",
     "stronger, more diverse backbones and full training sets change both the single-model baseline and the room a "
     "fusion has; an MLP head may use the extra dimensions better than a linear one"),
    ("Fusing three or more models makes performance more stable", "third-party summaries of the full text (not the "
     "paper's own wording)", "", "with full training sets each model's accuracy varies less across seeds, which "
     "leaves less spread for a fusion to remove"),
    ("Memory and inference time grow with the number of models and layers fused; the paper weighs this overhead",
     "abstract (as recorded in research/paper.md)", "",
     "on a GPU with 7B weights memory is dominated by the weights; see the GPU table of the overhead chapter"),
    ("Future work named by the authors: automating layer selection", "abstract (as recorded in research/paper.md)",
     "", "not a claim: the book's greedy search is descriptive (\"Beyond the paper\")"),
)
"""Per claim or contribution of the paper: its wording as ``research/paper.md`` records it (the paper's tables are
not available, so no number of the paper appears), where that wording comes from, a part attributed to summaries,
and what running at the paper's scale would change. In the order of the claims table; the last is no claim."""


def _agreement(row: pd.Series) -> str:
    """Whether the book's result points the paper's way: from the verdict, then from which one-sided p is smaller."""
    verdict = str(row["verdict"])
    if verdict in ("supported", "partly supported"):
        return "yes (significant in the paper's direction)"
    if verdict == "contradicted":
        return "no (significant against the paper)"
    if verdict == "not supported":
        return "no effect (equivalent within the margin)"
    p, q = row.get("p_value"), row.get("p_opposite")
    if p is None or q is None or not (np.isfinite(p) and np.isfinite(q)):
        return "undetermined (no test)"
    if p == q:
        return "no lean either way, not significant"
    return "leans the paper's way, not significant" if p < q else "leans against the paper, not significant"


def paper_book(table: pd.DataFrame) -> pd.DataFrame:
    """The paper <-> book map: each claim or contribution as ``research/paper.md`` records it (source labelled), the
    book's registered test and chapter, the verdict and direction from the claims ``table`` (``verdicts``), and what
    the paper's scale would change."""
    rows = []
    for i, (wording, source, summary_part, scale) in enumerate(PAPER_CLAIMS, start=1):
        paper = wording + (f" [{summary_part}]" if summary_part else "")
        if i in table.index:
            row = table.loc[i]
            rows.append({"paper (wording from research/paper.md)": paper, "source": source,
                         "book's test": str(row["test"] or "") or "rule in claims.py", "chapter": str(row["where"]),
                         "verdict": str(row["verdict"]), "direction agrees": _agreement(row),
                         "what the paper's scale would change": scale})
        else:
            rows.append({"paper (wording from research/paper.md)": paper, "source": source,
                         "book's test": "greedy layer search, descriptive", "chapter": "fusion, layer analysis",
                         "verdict": "no verdict (beyond the paper)", "direction agrees": "not applicable",
                         "what the paper's scale would change": scale})
    out = pd.DataFrame(rows, index=pd.RangeIndex(1, len(rows) + 1, name="#"))
    measured = [i in table.index and table.loc[i, "claim"] in claims.MEASURED_CLAIMS for i in out.index]
    return report.mark_rows(out, measured, keep=tuple(c for c in out.columns if c not in ("verdict",
                                                                                          "direction agrees")))


# -- what a practitioner should do -----------------------------------------------------------------------------------

def practice_facts(summary: pd.DataFrame, pooling: str, authors_pooling: str) -> dict[str, Any]:
    """The numbers the recommendations quote, from the layer chapter's ``summary`` (``layers_summary``, one row per model x dataset x
    pooling): how often the selected layer is not the last, the median relative depth of the selected layer, the
    median gain of the selected over the last layer (points), and the median difference between the primary and
    the authors' pooling at each one's selected layer (points)."""
    ours = summary[summary["pooling"] == pooling]
    pad = summary[summary["pooling"] == authors_pooling][["model", "dataset", "best_test_accuracy"]]
    paired = ours.merge(pad, on=["model", "dataset"], suffixes=("", "_pad"))
    diff = (paired["best_test_accuracy"] - paired["best_test_accuracy_pad"]) * 100
    return {
        "practice_cells": int(len(ours)), "not_last": int((~ours["best_is_last"].astype(bool)).sum()),
        "median_depth": float(ours["best_rel_depth"].median()),
        "median_gain_last": float(ours["delta_best_minus_last"].median() * 100),
        "pooling_label": _label(pooling), "authors_pooling_label": _label(authors_pooling),
        "pooling_median_diff": float(diff.median()), "pooling_min_diff": float(diff.min()),
        "pooling_max_diff": float(diff.max()), "pooling_cells": int(len(paired)),
    }


def pooling_verdict(facts: dict[str, Any], margin: float) -> str:
    """One sentence on pooling from ``practice_facts``: the same within ``margin`` points, or which one is ahead.
    Descriptive (medians over cells), not a registered test."""
    median = facts["pooling_median_diff"]
    if abs(median) <= margin:
        return (f"the authors' {facts['authors_pooling_label']} performs about as well as the "
                f"{facts['pooling_label']} (median difference within ±{margin:g} points)")
    ahead, behind = ((facts["pooling_label"], facts["authors_pooling_label"]) if median > 0
                     else (facts["authors_pooling_label"], facts["pooling_label"]))
    return f"the {ahead} is ahead of the {behind} by a median of {abs(median):.2f} points"


# -- limitations -------------------------------------------------------------------------------------------------------

PAPER_BACKBONE_PARAMETERS = 7e9
"""The nominal size in the names of the paper's main decoders (Qwen2.5-7B, Llama-2-7b, Falcon3-7B, Mistral-7B)."""


def _median_words(texts: Any) -> float:
    return float(np.median([len(str(t).split()) for t in texts]))


def limitation_facts(load: claims.Loader, config: Any, data: Any = None, gpu_table: pd.DataFrame | None = None,
                     cores: int | None = None) -> dict[str, Any]:
    """The numbers the limitations quote, computed from the profile and the results: training texts per dataset and
    the width of the all-model concatenation (``extraction``: per-model ``dim``) with its dimension/rows ratio;
    median words of SST-2's train and test texts when ``data`` (``Study.data``) and SST-2 are given; the decoders'
    parameter counts (``overhead_footprint``) against the paper's 7B; the overhead sweep's sizes and cores; whether a
    GPU table at the paper's scale is committed (``gpu_table``); ``cores``: the
    logical cores of the overhead run (its run record)."""
    extraction = load("extraction")
    train = extraction[extraction["split"] == "train"]
    first = train["dataset"].iloc[0]
    dims = train[train["dataset"] == first].drop_duplicates("model")
    rows = int(train["n"].max())
    concat = int(dims["dim"].sum())
    facts: dict[str, Any] = {"train_texts": rows, "n_models": int(len(dims)), "concat_dim": concat,
                             "dim_per_row": concat / rows, "has_sst2": False}
    if data is not None and "sst2" in config.datasets:
        sst2 = data("sst2")
        facts.update(has_sst2=True, sst2_train_words=_median_words(sst2["train"]["text"]),
                     sst2_test_words=_median_words(sst2["test"]["text"]))
    footprint = load("overhead_footprint")
    from layerfusion.models import registry
    decoders = footprint[[registry.REGISTRY[m].arch == "decoder" if m in registry.REGISTRY else False
                          for m in footprint["model"]]]
    counts = decoders["n_parameters"].astype(float) if len(decoders) else footprint["n_parameters"].astype(float)
    facts.update(smallest_params_m=float(counts.min() / 1e6), largest_params_m=float(counts.max() / 1e6),
                 smaller_min=float(PAPER_BACKBONE_PARAMETERS / counts.max()),
                 smaller_max=float(PAPER_BACKBONE_PARAMETERS / counts.min()))
    sizes = list(config.overhead.n_texts)
    facts.update(overhead_min_texts=int(min(sizes)), overhead_max_texts=int(max(sizes)))
    facts["overhead_cores"] = str(cores) if cores is not None else "an unrecorded number of"
    has_gpu = gpu_table is not None and len(gpu_table) > 0
    facts["gpu_table"] = (f"a GPU table at the paper's scale is committed (measured on "
                          f"{', '.join(sorted(str(g) for g in gpu_table['gpu'].dropna().unique()))})" if has_gpu
                          else "no GPU table at the paper's scale is committed yet")
    return facts


def evidence_facts(view: pd.DataFrame) -> dict[str, str]:
    """Per claim, for the prose: its registered test, its effect with interval and unit, and its p-value in the
    claimed direction (from ``claims_view``), keyed ``claim<N>_test`` / ``_effect`` / ``_p``, and the three as
    one phrase (``claim<N>_strength``); plus the claims left
    inconclusive, as words."""
    facts: dict[str, str] = {}
    for i, row in view.iterrows():
        facts[f"claim{i}_test"] = row["test"] or "no registered test"
        effect = str(row["effect [CI]"]).strip()
        facts[f"claim{i}_effect"] = (f"{effect} {row['unit']}".strip() if effect else "no effect measured")
        facts[f"claim{i}_p"] = row["p claimed"] or "–"
        facts[f"claim{i}_strength"] = (
            f"{facts[f'claim{i}_test']}; effect {facts[f'claim{i}_effect']}, p {facts[f'claim{i}_p']} in the "
            "claimed direction" if effect else f"{facts[f'claim{i}_test']}; no effect measured in this run")
    open_claims = [str(i) for i, v in view["verdict"].items() if v == "inconclusive"]
    facts["inconclusive_claims"] = ("claims " + ", ".join(open_claims)) if open_claims else "no claim"
    facts["more_data_effect"] = (
        f"{facts['inconclusive_claims']}, inconclusive here, could be decided either way" if open_claims
        else "no claim is inconclusive here, but verdicts whose interval reaches zero or whose power at the margin "
             "is low could still move either way")
    facts["stability_advice"] = STABILITY_ADVICE.get(
        str(view["verdict"].get(3, "")), "Do not fuse three or more models for stability alone:")
    return facts


STABILITY_ADVICE = {
    "supported": "Fusing three or more models makes accuracy depend less on which models were picked (a narrower "
                 "spread across combinations; optimiser noise is reported beside it):",
    "partly supported": "Fusing three or more models steadies accuracy only in part:",
    "contradicted": "Do not fuse three or more models for stability; the spread across combinations widened:",
}
"""The practitioner's advice on fusing for stability, by claim 3's verdict (``evidence_facts``); any other verdict
(not supported, inconclusive) advises against fusing for stability alone."""


def limitation_sentences(facts: dict[str, Any]) -> dict[str, str]:
    """The limitation phrases whose wording depends on the profile: SST-2 present or not, and ranges that collapse to
    one number when the profile has one decoder or one overhead size."""
    if facts.get("has_sst2"):
        sst2 = (f"SST-2's training texts are phrases (median {facts['sst2_train_words']:.0f} words) while its test "
                f"texts are sentences (median {facts['sst2_test_words']:.0f} words), so a probe is tested on longer "
                "inputs than it was fitted on.")
    else:
        sst2 = "This profile does not include SST-2, whose training texts are phrases and test texts sentences."
    return {"sst2_sentence": sst2,
            "decoder_params": _span(facts["smallest_params_m"], facts["largest_params_m"], ".0f") + " million",
            "times_smaller": _span(facts["smaller_min"], facts["smaller_max"], ".0f"),
            "overhead_texts": _span(facts["overhead_min_texts"], facts["overhead_max_texts"], "d")}


def _span(low: float, high: float, fmt: str) -> str:
    """``low–high`` formatted, or one number when both read the same."""
    a, b = format(low, fmt), format(high, fmt)
    return a if a == b else f"{a}–{b}"
