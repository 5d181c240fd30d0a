"""Book numbers against an uncached refit: for chosen model x dataset cells of a profile, fit the layer probe again
with the fit cache off, recompute the cell's per-layer rows and its selected-vs-last summary, and compare them with
the results the book shows (``results/<profile>/layers_per_layer.json`` and ``layers_summary.json``).

``python -m benchmarks._fit_cache_identity --profile default --cell smollm2-135m:sst2 --cell minilm-l6:r52``

Prints one line per cell (selected layer, its test accuracy, p against the last layer, the largest difference over
every per-layer column) and exits 1 when any value differs. The book's run read its fits from the cache; this
refits them, so agreement shows the cache returns what fitting returns. Not a benchmark module (the leading
underscore keeps ``python -m benchmarks`` off it).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from layerfusion import fitcache
from layerfusion.study import results
from layerfusion.study.chapters import layer_analysis
from layerfusion.study.features import Study
from layerfusion.study.settings import StudyConfig

SUMMARY_COLUMNS = ("best_layer", "best_val_accuracy", "best_test_accuracy", "best_test_low", "best_test_high",
                   "last_test_accuracy", "delta_best_minus_last", "p_best_vs_last", "n_tied_with_best",
                   "unconverged", "max_iterations")


def compare_cell(study: Study, stored: pd.DataFrame, stored_layers: pd.DataFrame, model: str, dataset: str
                 ) -> dict[str, object]:
    """Refit one cell (primary pooling, the protocol the book's run used) and return its differences."""
    cfg = study.config
    pooling = cfg.primary_pooling
    book = stored[(stored["model"] == model) & (stored["dataset"] == dataset) & (stored["pooling"] == pooling)]
    if len(book) != 1:
        raise SystemExit(f"_fit_cache_identity: no stored summary row for {model} x {dataset} x {pooling}")
    book = book.iloc[0]
    fitted = layer_analysis.fit_probe(study, model, dataset, pooling, book["protocol"])
    per_layer, arrays = layer_analysis.probe_layers(study, model, dataset, pooling, fitted)
    summary = layer_analysis.summarise(model, dataset, pooling, arrays, cfg.power.alpha, cfg.power.power)
    mismatched = [c for c in SUMMARY_COLUMNS if c in summary and not np.isclose(summary[c], book[c], rtol=0, atol=0)]
    mine = per_layer.set_index("layer").sort_index()
    theirs = stored_layers[(stored_layers["model"] == model) & (stored_layers["dataset"] == dataset)
                           & (stored_layers["pooling"] == pooling)].set_index("layer").sort_index()
    numeric = [c for c in mine.columns if mine[c].dtype.kind == "f" and c in theirs]
    gap = float(np.max(np.abs(mine[numeric].to_numpy() - theirs.loc[mine.index, numeric].to_numpy())))
    return {"cell": f"{model} x {dataset}", "protocol": book["protocol"], "best_layer": summary["best_layer"],
            "book_best_layer": int(book["best_layer"]), "best_test_accuracy": summary["best_test_accuracy"],
            "p_best_vs_last": summary["p_best_vs_last"], "per_layer_max_abs_diff": gap,
            "summary_mismatches": mismatched}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._fit_cache_identity",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--cell", action="append", required=True, help="model:dataset (repeatable)")
    parser.add_argument("--results-dir", default=None, help="defaults to results/<profile>")
    args = parser.parse_args(argv)
    cfg = StudyConfig.from_profile(args.profile)
    results_dir = args.results_dir or f"results/{cfg.profile}"
    stored, _ = results.read("layers_summary", results_dir)
    stored_layers, _ = results.read("layers_per_layer", results_dir)
    study = Study(cfg, progress=False, fits=fitcache.FitCache("unused", enabled=False))
    failed = False
    for cell in args.cell:
        model, _, dataset = cell.partition(":")
        row = compare_cell(study, stored, stored_layers, model, dataset)
        same = row["per_layer_max_abs_diff"] == 0 and not row["summary_mismatches"]
        failed |= not same
        print(f"{row['cell']} ({row['protocol']}): selected layer {row['best_layer']} (book {row['book_best_layer']}), "
              f"test accuracy {row['best_test_accuracy']:.6f}, p {row['p_best_vs_last']:.6g}, per-layer max |diff| "
              f"{row['per_layer_max_abs_diff']:.3g}, summary columns differing: {row['summary_mismatches'] or 'none'}"
              f" -> {'identical' if same else 'DIFFERENT'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
