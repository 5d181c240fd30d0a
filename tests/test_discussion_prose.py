"""The discussion chapter's prose helpers: the paper <-> book map, the practitioner's facts and the limitations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from layerfusion.study.chapters import discussion


def _claims(verdicts: list[str], p: list[float], q: list[float]) -> pd.DataFrame:
    n = len(verdicts)
    return pd.DataFrame({"claim": [f"c{i}" for i in range(n)], "verdict": verdicts, "test": ["t"] * n,
                         "where": ["ch"] * n, "p_value": p, "p_opposite": q}, index=range(1, n + 1))


def test_paper_book_has_every_claim_and_labels_summaries() -> None:
    table = discussion.paper_book(_claims(["supported", "contradicted", "inconclusive", "inconclusive"],
                                          [0.01, 0.9, 0.2, np.nan], [0.9, 0.01, 0.6, np.nan]))
    tied = discussion.paper_book(_claims(["inconclusive"] * 4, [0.5] * 4, [0.5] * 4))
    assert tied.loc[1, "direction agrees"] == "no lean either way, not significant"
    assert len(table) == len(discussion.PAPER_CLAIMS)
    assert table["direction agrees"].tolist()[:4] == [
        "yes (significant in the paper's direction)", "no (significant against the paper)",
        "leans the paper's way, not significant", "undetermined (no test)"]
    assert "third-party" in table.loc[3, "source"]  # claim 3 comes from summaries, said next to it
    assert "third-party summaries" in table.loc[1, "paper (wording from research/paper.md)"]
    assert table.loc[5, "verdict"].startswith("no verdict")


def _summary() -> pd.DataFrame:
    rows = []
    for model, dataset, best, last, acc, pad in (("a", "x", 3, 6, 0.80, 0.78), ("a", "y", 6, 6, 0.70, 0.71),
                                                 ("b", "x", 2, 4, 0.90, 0.85)):
        rows.append({"model": model, "dataset": dataset, "pooling": "mean", "best_is_last": best == last,
                     "best_rel_depth": best / last, "delta_best_minus_last": 0.01 * (last - best),
                     "best_test_accuracy": acc})
        rows.append({"model": model, "dataset": dataset, "pooling": "mean_pad", "best_is_last": False,
                     "best_rel_depth": 0.5, "delta_best_minus_last": 0.0, "best_test_accuracy": pad})
    return pd.DataFrame(rows)


def test_practice_facts_and_pooling_sentence() -> None:
    facts = discussion.practice_facts(_summary(), "mean", "mean_pad")
    assert facts["practice_cells"] == 3 and facts["not_last"] == 2
    assert facts["median_depth"] == pytest.approx(0.5)
    assert facts["pooling_median_diff"] == pytest.approx(2.0)
    assert facts["pooling_min_diff"] == pytest.approx(-1.0) and facts["pooling_max_diff"] == pytest.approx(5.0)
    assert "ahead of the mean over padding by a median of 2.00" in discussion.pooling_verdict(facts, 1.0)
    assert "about as well as" in discussion.pooling_verdict(facts, 2.5)


def test_spans_collapse_and_sst2_sentence_follows_the_profile() -> None:
    facts = {"has_sst2": False, "smallest_params_m": 134.5, "largest_params_m": 494.0, "smaller_min": 14.2,
             "smaller_max": 52.0, "overhead_min_texts": 16, "overhead_max_texts": 16}
    out = discussion.limitation_sentences(facts)
    assert out["decoder_params"] == "134–494 million" and out["times_smaller"] == "14–52"
    assert out["overhead_texts"] == "16"
    assert "does not include SST-2" in out["sst2_sentence"]
    out = discussion.limitation_sentences({**facts, "has_sst2": True, "sst2_train_words": 7.0,
                                           "sst2_test_words": 19.0})
    assert "median 7 words" in out["sst2_sentence"] and "median 19 words" in out["sst2_sentence"]


def _view(verdicts: list[str]) -> pd.DataFrame:
    n = len(verdicts)
    return pd.DataFrame({"verdict": verdicts, "test": ["t"] * n, "effect [CI]": ["0.5 [0.1, 0.9]"] * n,
                         "unit": ["points"] * n, "p claimed": ["0.01"] * n}, index=range(1, n + 1))


@pytest.mark.parametrize("verdict, advice", [
    ("supported", "makes accuracy depend less"), ("partly supported", "only in part"),
    ("contradicted", "widened"), ("not supported", "for stability alone"), ("inconclusive", "for stability alone")])
def test_stability_advice_follows_claim_3s_verdict(verdict: str, advice: str) -> None:
    facts = discussion.evidence_facts(_view(["supported", "supported", verdict, "supported"]))
    assert advice in facts["stability_advice"]


def test_more_data_sentence_names_the_inconclusive_claims_or_says_there_are_none() -> None:
    open_ = discussion.evidence_facts(_view(["supported", "inconclusive", "inconclusive", "supported"]))
    assert open_["more_data_effect"].startswith("claims 2, 3, inconclusive here")
    closed = discussion.evidence_facts(_view(["supported"] * 4))
    assert closed["more_data_effect"].startswith("no claim is inconclusive here")
