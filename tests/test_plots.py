"""Figures: what a reader reads off them matches the results table they are drawn from."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from layerfusion.study import plots  # noqa: E402


def test_fusion_gains_heatmap_cells_match_the_table():
    rows = []
    for dataset, best in (("sst2", "c-1"), ("mr", "a-1")):
        for models, op, gain, p in ((["a-1", "b-2"], "concat", 0.068, 0.01), (["a-1", "b-2"], "product", -0.30, 0.001),
                                    (["a-1", "b-2", "c-3"], "concat", 0.004, 0.9)):
            rows.append({"dataset": dataset, "models": models, "k": len(models), "operator": op, "best_single": best,
                         "gain": gain, "p_holm": p, "test_std": 0.01})
    fig = plots.fusion_gains(pd.DataFrame(rows), 0.05)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["sst2: vs best single (c-1)", "mr: vs best single (a-1)"]
    texts = sorted(t.get_text() for t in axes[0].texts)
    assert texts == ["+0.4", "+6.8*", "-30.0*"]
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["a+b", "a+b+c"]
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["concat", "product"]
    assert "saturate at ±10" in fig.axes[-1].get_ylabel()
    matplotlib.pyplot.close(fig)
