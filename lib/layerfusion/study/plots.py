"""Figures drawn from results tables only (never from raw arrays), so every figure is traceable to a results file."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from layerfusion.models import combo_label

FIGSIZE_PANEL = 3.4


def _panels(n: int, ncols: int = 4, height: float = 2.9, sharey: bool = False, width: float = FIGSIZE_PANEL):
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             sharey=sharey, constrained_layout=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def norms_per_layer(norms: pd.DataFrame):
    """Mean pooled-vector norm per layer against relative depth: one panel per dataset, one line per model."""
    datasets = list(dict.fromkeys(norms["dataset"]))
    fig, axes = _panels(len(datasets))
    for ax, dataset in zip(axes, datasets):
        for model, grp in norms[norms["dataset"] == dataset].groupby("model", sort=False):
            ax.plot(grp["rel_depth"], grp["norm"], marker=".", label=model)
        ax.set_yscale("log")
        ax.set_title(dataset)
        ax.set_xlabel("relative depth (layer / L)")
    axes[0].set_ylabel("mean ‖h̄‖ (log scale)")
    axes[0].legend(fontsize=7)
    return fig


def layer_curves(per_layer: pd.DataFrame, pooling: str, metric: str = "test_accuracy"):
    """Accuracy per layer with its bootstrap CI band, against relative depth: a panel per dataset, a line per model.

    The test curve is description only; the selected layer (the profile's selection protocol) is marked with a dot.
    """
    df = per_layer[per_layer["pooling"] == pooling]
    datasets = list(dict.fromkeys(df["dataset"]))
    fig, axes = _panels(len(datasets), ncols=2, width=3.7)
    low, high = f"{metric}_low", f"{metric}_high"
    for ax, dataset in zip(axes, datasets):
        for model, grp in df[df["dataset"] == dataset].groupby("model", sort=False):
            line, = ax.plot(grp["rel_depth"], grp[metric], label=model, lw=1.4)
            if low in grp and high in grp:
                ax.fill_between(grp["rel_depth"], grp[low], grp[high], color=line.get_color(), alpha=0.15, lw=0)
            best = grp.loc[grp["val_accuracy"].idxmax()]
            ax.plot([best["rel_depth"]], [best[metric]], "o", color=line.get_color(), ms=5)
        ax.set_title(f"{dataset} ({pooling} pooling)")
        ax.set_xlabel("relative depth (layer / L)")
    axes[0].set_ylabel(metric.replace("_", " "))
    axes[0].legend(fontsize=7)
    return fig


def best_layer_heatmap(summary: pd.DataFrame, pooling: str):
    """Relative depth of the selected layer, model x dataset (annotated with the layer index)."""
    df = summary[summary["pooling"] == pooling]
    depth = df.pivot(index="model", columns="dataset", values="best_rel_depth")
    layer = df.pivot(index="model", columns="dataset", values="best_layer")
    n_layers = df.pivot(index="model", columns="dataset", values="n_layers")
    fig, ax = plt.subplots(figsize=(1.3 * depth.shape[1] + 2.5, 0.55 * depth.shape[0] + 1.4), constrained_layout=True)
    im = ax.imshow(depth.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(depth.shape[1]), depth.columns)
    ax.set_yticks(range(depth.shape[0]), depth.index)
    for i in range(depth.shape[0]):
        for j in range(depth.shape[1]):
            ax.text(j, i, f"{int(layer.iat[i, j])}/{int(n_layers.iat[i, j]) - 1}", ha="center", va="center",
                    color="white" if depth.iat[i, j] < 0.6 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, label="relative depth of best layer")
    ax.set_title(f"Selected layer, {_protocol_words(df)} (index / last index)")
    return fig


PROTOCOL_WORDS = {"cv": "chosen by cross-validation on train + validation",
                  "validation": "chosen on the validation split"}
"""How a title names each selection protocol of ``layers_summary``."""


def _protocol_words(summary: pd.DataFrame) -> str:
    """The selection protocol of ``summary`` in words (a table without the column: "selected on held-out data")."""
    if "protocol" not in summary.columns or summary["protocol"].dropna().empty:
        return "chosen on held-out data"
    protocol = str(summary["protocol"].dropna().iloc[0])
    return PROTOCOL_WORDS.get(protocol, f"chosen by {protocol}")


def pooling_comparison(summary: pd.DataFrame):
    """Best-layer test accuracy per pooling, model x dataset, as grouped bars with CIs where available."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    fig, axes = _panels(len(datasets), ncols=2, width=3.7)
    for ax, dataset in zip(axes, datasets):
        df = summary[summary["dataset"] == dataset]
        models = list(dict.fromkeys(df["model"]))
        poolings = list(dict.fromkeys(df["pooling"]))
        width = 0.8 / len(poolings)
        for j, pooling in enumerate(poolings):
            sub = df[df["pooling"] == pooling].set_index("model").reindex(models)
            x = np.arange(len(models)) + j * width
            err = np.vstack([sub["best_test_accuracy"] - sub["best_test_low"],
                             sub["best_test_high"] - sub["best_test_accuracy"]])
            ax.bar(x, sub["best_test_accuracy"], width, yerr=err, label=pooling, capsize=2)
        ax.set_xticks(np.arange(len(models)) + 0.4 - width / 2, models, rotation=30, ha="right", fontsize=7)
        ax.set_title(dataset)
        lo = float(df["best_test_low"].min())
        ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    axes[0].set_ylabel("test accuracy at the selected layer")
    axes[0].legend(fontsize=7)
    return fig


def fusion_gains(comparisons: pd.DataFrame, alpha: float):
    """Gain of each fusion over the validation-best single model, per dataset: model combinations x operators.

    Each cell is the mean test-accuracy gain over seeds in points (diverging colours, one scale for all panels,
    saturating at ±10 points so that small gains stay visible beside large losses);
    ``*`` marks a Holm-corrected p < ``alpha`` (the profile's ``power.alpha``) against that single model, a gain or
    a loss alike; blank cells were not run. Two panels per row
    with the combinations named once per row, so four datasets fit the book's column.
    """
    datasets = list(dict.fromkeys(comparisons["dataset"]))
    table = comparisons.assign(combo=comparisons["models"].map(combo_label), points=comparisons["gain"] * 100)
    operators = list(dict.fromkeys(table["operator"]))
    combos = list(dict.fromkeys(table.sort_values(["k", "combo"])["combo"]))
    largest = float(np.nanmax(np.abs(table["points"])))
    limit = min(max(largest, 1.0), 10.0)
    fig, axes = _panels(len(datasets), ncols=2, height=max(2.2, 0.27 * len(combos) + 1.2), width=3.9)
    for i, (ax, dataset) in enumerate(zip(axes, datasets)):
        df = table[table["dataset"] == dataset]
        grid = df.pivot_table(index="combo", columns="operator", values="points").reindex(index=combos,
                                                                                      columns=operators)
        sig = df.pivot_table(index="combo", columns="operator", values="p_holm").reindex(index=combos,
                                                                                     columns=operators)
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        for (r, c), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(value):
                star = "*" if sig.iat[r, c] < alpha else ""
                ax.text(c, r, f"{value:+.1f}{star}", ha="center", va="center", fontsize=7,
                        color="white" if abs(value) > 0.6 * limit else "black")
        ax.set_xticks(range(len(operators)), operators, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(combos)), combos, fontsize=7)
        ax.tick_params(labelleft=i % 2 == 0)
        ax.set_title(f"{dataset}: vs best single ({df['best_single'].iloc[0]})", fontsize=8)
    saturated = ", colours saturate at ±10" if largest > limit else ""
    bar = fig.colorbar(image, ax=axes, shrink=0.9, aspect=30)
    bar.set_label(f"gain (points){saturated}", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return fig


def stability(stab: pd.DataFrame):
    """Spread and accuracy against the number of models, one column per dataset: every combination's std over
    seeds (top) and mean test accuracy (bottom), its concatenation beside the ensemble of its single-model
    classifiers (offset to the right); lines join the means over combinations of each size."""
    datasets = list(dict.fromkeys(stab["dataset"]))
    fig, axes = plt.subplots(2, len(datasets), figsize=(min(2.1 * len(datasets) + 0.6, 8.4), 4.6), squeeze=False,
                             sharex=True, constrained_layout=True)
    styles = {"single": ("tab:gray", 0.0), "concatenation": ("tab:blue", -0.1), "ensemble": ("tab:orange", 0.1)}
    for j, dataset in enumerate(datasets):
        df = stab[stab["dataset"] == dataset]
        for row, column in enumerate(("test_seed_std", "test_mean")):
            ax = axes[row, j]
            for method, (colour, shift) in styles.items():
                sub = df[df["method"] == method]
                if sub.empty:
                    continue
                means = sub.groupby("k")[column].mean() * 100
                ax.scatter(sub["k"] + shift, sub[column] * 100, s=12, color=colour, alpha=0.6, lw=0)
                ax.plot(means.index + shift, means.to_numpy(), color=colour, lw=1.2, label=method)
            ax.tick_params(labelsize=7)
        axes[0, j].set_title(dataset, fontsize=9)
        axes[1, j].set_xlabel("models combined", fontsize=8)
        axes[1, j].set_xticks(sorted(df["k"].unique()))
    axes[0, 0].set_ylabel("std over seeds (points)", fontsize=8)
    axes[1, 0].set_ylabel("test accuracy (%)", fontsize=8)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


def complementarity(compl: pd.DataFrame, x: str = "kappa"):
    """Fusion gain of each model pair against a complementarity diagnostic (one colour per dataset)."""
    fig, ax = plt.subplots(figsize=(4.6, 3.4), constrained_layout=True)
    for dataset, grp in compl.groupby("dataset", sort=False):
        ax.scatter(grp[x], grp["gain_over_better"] * 100, label=dataset)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel(x.replace("_", " ") + " (validation)")
    ax.set_ylabel("concat gain over the better model (points)")
    ax.legend(fontsize=7)
    return fig


def robustness(per_layer: pd.DataFrame, fused: pd.DataFrame):
    """What the perturbation moved, per dataset: every layer's test accuracy (left) and every concatenation's gain
    over the best single model (right), perturbed minus original, in points (jittered horizontally)."""
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.0), constrained_layout=True)
    rng = np.random.default_rng(0)
    panels = ((per_layer, "test_accuracy", "per-layer test accuracy"), (fused, "gain", "concatenation gain"))
    for ax, (df, column, title) in zip(axes, panels):
        datasets = list(dict.fromkeys(df["dataset"]))
        for i, dataset in enumerate(datasets):
            sub = df[df["dataset"] == dataset]
            change = (sub[f"{column}_perturbed"] - sub[f"{column}_original"]) * 100
            ax.scatter(i + rng.uniform(-0.2, 0.2, len(sub)), change, s=10, alpha=0.6, lw=0)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(datasets)), datasets, fontsize=8)
        ax.set_xlim(-0.6, len(datasets) - 0.4)
        ax.set_title(f"{title}: perturbed − original", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("change (points)", fontsize=8)
    return fig


def greedy_path(greedy: pd.DataFrame, label: str = "dataset"):
    """Validation score along each greedy search path (step = units added)."""
    fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
    for name, grp in greedy.groupby(label, sort=False):
        ax.plot(range(1, len(grp) + 1), grp["score"], marker="o", label=str(name))
    ax.set_xlabel("units chosen")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize=7)
    return fig


def scaling(df: pd.DataFrame, x: str, y: str = "seconds", title: str | None = None, logx: bool = False):
    """One scaling curve (e.g. seconds against number of texts)."""
    fig, ax = plt.subplots(figsize=(4.2, 3.0), constrained_layout=True)
    for name, grp in df.groupby("model", sort=False) if "model" in df else [("", df)]:
        ax.plot(grp[x], grp[y], marker="o", label=str(name))
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    if title:
        ax.set_title(title, fontsize=9)
    if "model" in df:
        ax.legend(fontsize=7)
    return fig


def pareto(df: pd.DataFrame, front: pd.DataFrame, cost: str = "cost", score: str = "accuracy",
           label: str = "label", xlabel: str = "extraction cost (s per 1,000 texts, log scale)",
           ylabel: str = "test accuracy"):
    """Accuracy against inference cost with the Pareto front drawn, one panel per dataset (log cost axis with
    plain-number ticks that do not overlap)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    datasets = list(dict.fromkeys(df["dataset"]))
    fig, axes = _panels(len(datasets), ncols=2, height=3.3, width=4.2)
    for ax, dataset in zip(axes, datasets):
        sub, fr = df[df["dataset"] == dataset], front[front["dataset"] == dataset].sort_values(cost)
        ax.scatter(sub[cost], sub[score], s=14, color="tab:gray", alpha=0.7)
        ax.plot(fr[cost], fr[score], "-o", color="tab:blue", ms=4)
        for row in fr.itertuples():
            ax.annotate(getattr(row, label), (getattr(row, cost), getattr(row, score)), fontsize=6,
                        xytext=(3, -8), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(dataset)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    return fig


def class_histograms(counts: pd.DataFrame):
    """Class histograms per dataset (train/validation/test side by side; log scale for the long-tailed Reuters)."""
    datasets = list(dict.fromkeys(counts["dataset"]))
    fig, axes = _panels(len(datasets), ncols=2, height=2.8)
    for ax, dataset in zip(axes, datasets):
        df = counts[counts["dataset"] == dataset].pivot_table(index="label", columns="split", values="count",
                                                              sort=False)
        df = df.loc[df.sum(axis=1).sort_values(ascending=False).index]
        x = np.arange(len(df))
        width = 0.8 / max(df.shape[1], 1)
        for j, split in enumerate(df.columns):
            ax.bar(x + j * width, df[split], width, label=split)
        ax.set_yscale("log")
        ax.set_xticks(x + 0.4 - width / 2, df.index, rotation=90, fontsize=5 if len(df) > 10 else 7)
        ax.set_title(f"{dataset} ({len(df)} classes)")
    axes[0].set_ylabel("texts (log scale)")
    axes[0].legend(fontsize=7)
    return fig


def scaling_panels(curves: pd.DataFrame, axes=None):
    """Cost curves of one model: seconds (median, 95 % interval over the repeats) against texts, max_length and the
    deepest layer kept; fresh-process peak memory of one extraction against the deepest layer kept and the token
    budget. Draws into ``axes`` (five) when given, else into a new one-row figure, which it returns."""
    fig = None
    if axes is None:
        fig, axes = plt.subplots(1, 5, figsize=(17, 3.2), constrained_layout=True)
    specs = (("n_texts", "seconds", "texts"), ("max_length", "seconds", "max_length (tokens)"),
             ("layers", "seconds", "deepest layer kept"), ("layers", "peak_bytes", "deepest layer kept"),
             ("token_budget", "peak_bytes", "token budget (tokens per batch)"))
    for ax, (vary, y, xlabel) in zip(axes, specs):
        df = curves[curves["vary"] == vary].sort_values("value")
        x = df["value"].astype(float)
        if y == "peak_bytes":
            ax.plot(x, df[y].astype(float) / 2**20, marker="o", color="tab:orange")
            ax.set_ylabel("extraction peak memory (MiB)")
        else:
            ax.plot(x, df[y], marker="o")
            if "seconds_low" in df:
                ax.fill_between(x, df["seconds_low"].astype(float), df["seconds_high"].astype(float), alpha=0.25)
            ax.set_ylabel("extraction time (s)")
        ax.set_xlabel(xlabel)
        ax.set_ylim(bottom=0)
    return fig


def gpu_overhead(summary: pd.DataFrame, gpu: str):
    """The paper's-scale GPU table: peak memory (GiB) and throughput (tokens/s) against layers kept, one line per
    backbone (and dtype), the GPU named in the title; nothing (None) when the summary is empty. ``summary`` is the
    layers-kept sweep (``chapters.overhead.gpu_layer_sweep``)."""
    if summary.empty:
        return None
    fig, (mem, thr) = plt.subplots(1, 2, figsize=(10, 3.4), constrained_layout=True)
    keys = [c for c in ("model", "dtype") if c in summary]
    for name, grp in summary.groupby(keys, sort=True):
        grp = grp.groupby("layers_kept", as_index=False).agg(
            peak_bytes=("peak_bytes", "max"), **({"tokens_per_s": ("tokens_per_s", "median")}
                                                 if "tokens_per_s" in grp else {}))
        label = " ".join(str(n) for n in (name if isinstance(name, tuple) else (name,)))
        mem.plot(grp["layers_kept"], grp["peak_bytes"] / 2**30, marker="o", label=label)
        if "tokens_per_s" in grp:
            thr.plot(grp["layers_kept"], grp["tokens_per_s"], marker="o", label=label)
    mem.set_xlabel("layers kept")
    mem.set_ylabel("peak GPU memory (GiB)")
    thr.set_xlabel("layers kept")
    thr.set_ylabel("throughput (tokens/s)")
    mem.legend(fontsize=7)
    fig.suptitle(gpu, fontsize=9)
    return fig


def selection_stability(selection: pd.DataFrame, summary: pd.DataFrame, pooling: str):
    """How often each layer is chosen when the selection items are resampled (bootstrap), per model x dataset.

    One panel per model: datasets as rows, the model's layers as columns, shade = share of resamples choosing that
    layer, under the protocol the summary selected with; an orange ring marks the layer actually selected, a dashed
    red frame the last layer. Two datasets whose rows put their mass on different layers choose differently by more than
    the luck of the selection split.
    """
    protocol = summary.loc[summary["pooling"] == pooling, "protocol"].iloc[0]
    df = selection[(selection["pooling"] == pooling) & (selection["protocol"] == protocol)]
    chosen = summary[summary["pooling"] == pooling].set_index(["model", "dataset"])["best_layer"]
    models = list(dict.fromkeys(df["model"]))
    datasets = list(dict.fromkeys(df["dataset"]))
    fig, axes = _panels(len(models), ncols=2, height=0.32 * len(datasets) + 1.1, width=3.7)
    for ax, model in zip(axes, models):
        grid = df[df["model"] == model].pivot_table(index="dataset", columns="layer", values="frequency",
                                                    fill_value=0.0).reindex(index=datasets)
        image = ax.imshow(grid.to_numpy(dtype=float), vmin=0, vmax=1, cmap="Blues", aspect="auto",
                          interpolation="nearest")
        layers = list(grid.columns)
        picked = [(layers.index(int(chosen[(model, d)])), i) for i, d in enumerate(datasets) if (model, d) in chosen]
        ax.plot(*zip(*picked), "o", ms=7, mfc="none", mec="tab:orange", mew=1.5)
        ax.add_patch(plt.Rectangle((len(layers) - 1.5, -0.5), 1, len(datasets), fill=False, ls="--",
                                   ec="tab:red", lw=1))
        ticks = sorted(set(range(0, len(layers), max(1, len(layers) // 7))) | {len(layers) - 1})
        ax.set_xticks(ticks, [str(layers[t]) for t in ticks], fontsize=8)
        ax.set_yticks(range(len(datasets)), datasets, fontsize=8)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("layer", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label=f"share of {protocol} resamples")
    return fig
