"""Claim 4 at the paper's scale: peak GPU memory and steady-state time of all-layer extraction on the paper's backbones.

``python -m benchmarks.gpu_overhead`` (one CUDA GPU; about 3-4 minutes on an H200, ``--budget-s`` caps it)
``python -m benchmarks.gpu_overhead --dry-run`` (a CPU: toy versions of the same architectures, the same code path;
``tests/test_benchmarks.py`` runs it)

What it measures. Each backbone of the paper -- Llama-2-7B, Mistral-7B, Qwen2.5-7B, Falcon3-7B and Gemma-2-2B, their
published configurations written out in ``benchmarks.extraction.SHAPES`` -- is built from its configuration with
random weights, in bf16, on the GPU, one at a time (the previous one freed first), and the library's engine
(``extract.extract_texts``, every pooling in ``pooling.POOLINGS``) extracts synthetic texts of an exact token count.
Every configuration gets one untimed warm-up pass and ``--repeats`` (>= 3) timed passes; each timed pass is one row
with its seconds (CUDA events around the call, which returns only once every vector is on the host) and its peak
GPU memory (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; the weights are included, and
``weights_bytes`` says how much of it they are). The grid:

- layers kept: 1, 4, 8 and all hidden states, evenly spaced and always including the last, so the forward pass is the
  same and only the cost of keeping layers varies (``--texts`` texts of ``--tokens`` tokens);
- texts and tokens: the same all-layer extraction for more texts, and for longer texts (``--sizes``);
- models fused: the fusion classifier (``fusion.FusionClassifier``, concatenation + the paper's MLP head, fixed
  epochs, no early stop) trained on the GPU on the first k backbones' last-layer mean vectors, k = 2..5, timed and
  measured the same way (kind ``fusion_fit``); a ``fused`` row per repeat r is the sum over those backbones of their
  repeat-r all-layer extraction seconds plus the repeat-r fusion seconds (the backbones run one after another, so
  its peak memory is the largest of theirs and the fusion's).

Why random weights are fine: memory is the weights, the activations and the engine's buffers, whose sizes follow
from the configuration, the dtype and the batch shapes alone; time is the work of dense kernels (matrix products,
attention, norms, pooling) whose cost does not depend on the values they multiply, and these decoders have no
data-dependent control flow (every text runs every block; lengths are fixed by construction). So a randomly
initialised model of the published shape uses the memory and time of the released one; no download is needed, and
the machine can be offline. (Values matter only for NaN/inf, which the standard initialisation does not produce.)

Output: one row per measurement (kind, gpu, model shape, dtype, layers kept, texts, tokens per text, repeat,
seconds, peak bytes, weights bytes, torch / transformers versions, git sha) in ``gpu_overhead.csv`` and
``gpu_overhead.json`` (rows plus run metadata) under ``--out``, else ``$OUT``, else a temporary folder. Both files
are rewritten after every measurement, so a run cut short still leaves a table; before each configuration the script
estimates its time from the passes so far and stops cleanly (noting what it skipped) when ``--budget-s`` would be
exceeded.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.extraction import SHAPES, random_config, random_spec, wordlevel_tokenizer
from layerfusion import devices, extract, models, pooling, provenance, testing

PAPER_SHAPES = ("llama-2-7b", "mistral-7b", "qwen2.5-7b", "falcon3-7b", "gemma-2-2b")
"""The paper's backbones, in the order they are measured and fused (their configurations: ``SHAPES``)."""
TOY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 9, "num_attention_heads": 4,
       "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 64}
"""The dry run's overrides: each paper architecture at toy width and depth (its own code path, a CPU's time)."""
LAYERS_KEPT = (1, 4, 8, None)
"""Numbers of hidden states kept (None: all), evenly spaced and always including the last."""
COLUMNS = ("kind", "gpu", "device", "model_shape", "dtype", "layers_kept", "layer_indices", "poolings", "n_texts",
           "tokens", "real_tokens", "repeat", "seconds", "wall_seconds", "peak_bytes", "weights_bytes",
           "torch", "transformers", "git_sha")


@dataclass
class Run:
    """Where the rows go, the clock and the budget."""

    out_dir: Path
    budget_s: float
    meta: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    estimates: dict[str, float] = field(default_factory=dict)
    """Seconds per token of the last extraction pass and seconds of the last fusion fit (for the budget)."""
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fits(self, estimate_s: float, what: str) -> bool:
        """Whether ``what`` (about ``estimate_s`` seconds) ends within the budget; else note it as skipped."""
        if self.elapsed() + estimate_s <= self.budget_s:
            return True
        self.skipped.append(f"{what} (needs ~{estimate_s:.0f} s, {self.budget_s - self.elapsed():.0f} s left)")
        return False

    def add(self, row: dict[str, Any]) -> None:
        """Append one measurement and rewrite the CSV and JSON files (a cut-short run keeps its table)."""
        self.rows.append({**{k: None for k in COLUMNS}, **self.meta, **row})
        self.write()

    def write(self, finished: bool = False) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, body in (("gpu_overhead.csv", self._csv()), ("gpu_overhead.json", self._json(finished))):
            tmp = self.out_dir / f".{name}.tmp"
            tmp.write_text(body, encoding="utf-8")
            os.replace(tmp, self.out_dir / name)

    def _csv(self) -> str:
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buf.getvalue()

    def _json(self, finished: bool) -> str:
        return json.dumps({"meta": {**self.meta, "budget_s": self.budget_s, "elapsed_s": round(self.elapsed(), 1),
                                    "finished": finished, "skipped": self.skipped},
                           "rows": self.rows}, indent=1, default=str)


def kept_layers(n_states: int, k: int | None) -> tuple[int, ...]:
    """``k`` hidden-state indices evenly spaced over ``0..n_states-1``, always ending at the last (None: all)."""
    if k is None or k >= n_states:
        return tuple(range(n_states))
    return tuple(sorted({int(round(x)) for x in np.linspace(n_states - 1, 0, k, endpoint=False)[::-1]}
                        | {n_states - 1}))[-k:]


def exact_texts(n: int, tokens: int, seed: int = 0) -> list[str]:
    """``n`` texts of random vocabulary words, long enough that ``max_length=tokens`` truncates each to exactly
    ``tokens`` tokens (one token per word with ``wordlevel_tokenizer``)."""
    rng = np.random.default_rng(seed)
    words = np.asarray(testing.VOCAB_WORDS)
    return [" ".join(rng.choice(words, size=tokens + 4)) for _ in range(n)]


class Clock:
    """Seconds and peak memory of one call: CUDA events and the allocator's peak on a GPU, wall time on a CPU."""

    def __init__(self, device: Any) -> None:
        self.cuda = getattr(device, "type", str(device)) == "cuda"

    def __call__(self, fn: Any) -> tuple[Any, float, float, int | None]:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            wall = time.perf_counter()
            start.record()
            result = fn()
            end.record()
            end.synchronize()
            wall = time.perf_counter() - wall
            return result, start.elapsed_time(end) / 1e3, wall, int(torch.cuda.max_memory_allocated())
        wall = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - wall
        return result, wall, wall, None


def build(shape: str, device: Any, dry_run: bool) -> tuple[Any, int | None]:
    """A ``LoadedModel`` of ``SHAPES[shape]`` (toy size in a dry run) with random weights in bf16 on ``device``, and
    the bytes allocated for it."""
    import torch
    from transformers import AutoModel

    config = random_config(shape, **(TOY if dry_run else {}))
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModel.from_config(config, dtype=torch.bfloat16).eval()
    choice = devices.choose_dtype("bfloat16", device)
    loaded = models.LoadedModel(model=model, tokenizer=wordlevel_tokenizer(), spec=random_spec(config, shape),
                                device=device, dtype=choice.dtype, fingerprint="random-init",
                                dtype_reason=choice.reason)
    weights = int(torch.cuda.memory_allocated()) if device.type == "cuda" else None
    return loaded, weights


def free(device: Any) -> None:
    """Release everything the last model held (called between backbones)."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def measure_model(run: Run, shape: str, device: Any, args: argparse.Namespace, features: dict[str, Any],
                  extract_seconds: dict[tuple[str, int, int], list[float]], peaks: dict[tuple, int | None]) -> None:
    """Every extraction configuration of one backbone (module docstring), within the budget."""
    loaded, weights = build(shape, device, args.dry_run)
    clock = Clock(device)
    n_states = int(loaded.model.config.num_hidden_layers) + 1
    configs = [(args.texts, args.tokens, k) for k in LAYERS_KEPT] + [(n, t, None) for n, t in args.sizes]
    per_token = run.estimates.get("per_token_s")  # the previous backbone's rate until this one has run
    try:
        for n, tokens, k in configs:
            layers = kept_layers(n_states, k)
            what = f"{shape}: {n} texts x {tokens} tokens, {len(layers)} layers"
            if per_token is not None and not run.fits(per_token * n * tokens * (1 + args.repeats), what):
                continue
            texts = exact_texts(n, tokens)
            config = extract.ExtractionConfig(max_length=tokens, poolings=tuple(pooling.POOLINGS), layers=layers,
                                              token_budget=args.token_budget, max_batch_size=args.max_batch_size,
                                              device=str(device), dtype="bfloat16")
            clock(lambda: extract.extract_texts(loaded, texts, config, progress=False))  # warm-up, untimed
            for repeat in range(args.repeats):
                result, seconds, wall, peak = clock(lambda: extract.extract_texts(loaded, texts, config,
                                                                                  progress=False))
                run.add({"kind": "extract", "model_shape": shape, "dtype": "bfloat16", "layers_kept": len(layers),
                         "layer_indices": " ".join(map(str, layers)), "poolings": " ".join(config.poolings),
                         "n_texts": n, "tokens": tokens, "real_tokens": int(result.real_tokens), "repeat": repeat,
                         "seconds": seconds, "wall_seconds": wall, "peak_bytes": peak, "weights_bytes": weights})
                per_token = max(seconds, wall) / max(n * tokens, 1)
                if k is None:
                    extract_seconds.setdefault((shape, n, tokens), []).append(seconds)
                    peaks[(shape, n, tokens)] = max(peaks.get((shape, n, tokens)) or 0, peak or 0) or None
                if (n, tokens, k) == (args.texts, args.tokens, None):
                    features[shape] = result["mean"][:, -1].copy()  # last layer, for the fusion classifier
    finally:
        if per_token is not None:
            run.estimates["per_token_s"] = per_token
        del loaded
        free(device)


def measure_fusion(run: Run, shapes: list[str], device: Any, args: argparse.Namespace, features: dict[str, Any],
                   extract_seconds: dict[tuple[str, int, int], list[float]], peaks: dict[tuple, int | None]) -> None:
    """The fusion classifier's own cost on the first k backbones' vectors, and the summed cost of fusing them."""
    from layerfusion.fusion import FusionClassifier

    clock = Clock(device)
    have = [s for s in shapes if s in features]
    y = np.random.default_rng(0).integers(0, 2, size=args.texts)
    for k in range(2, len(have) + 1):
        fused = have[:k]
        name = "+".join(fused)
        if not run.fits(run.estimates.get("fusion_s", 5.0) * (1 + args.repeats), f"fusion of {name}"):
            break
        Xs = [features[s] for s in fused]

        def fit() -> Any:
            return FusionClassifier(operator="concat", head="mlp", epochs=args.fusion_epochs, batch_size=256,
                                    patience=args.fusion_epochs, device=str(device), random_state=0).fit(Xs, y)

        clock(fit)  # warm-up
        fusion_s = []
        for repeat in range(args.repeats):
            _, seconds, wall, peak = clock(fit)
            fusion_s.append(seconds)
            run.estimates["fusion_s"] = max(seconds, wall)
            common = {"model_shape": name, "dtype": "float32", "n_texts": args.texts, "tokens": args.tokens,
                      "repeat": repeat, "layers_kept": 1, "poolings": "mean"}
            run.add({**common, "kind": "fusion_fit", "seconds": seconds, "wall_seconds": wall, "peak_bytes": peak})
            parts = [extract_seconds.get((s, args.texts, args.tokens), []) for s in fused]
            if all(len(p) > repeat for p in parts):
                part_peaks = [peaks.get((s, args.texts, args.tokens)) for s in fused] + [peak]
                known = [p for p in part_peaks if p is not None]
                run.add({**common, "kind": "fused", "dtype": "bfloat16 backbones, float32 fusion",
                         "layers_kept": "all", "poolings": " ".join(pooling.POOLINGS),
                         "seconds": sum(p[repeat] for p in parts) + seconds,
                         "peak_bytes": max(known) if known else None})


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Median seconds and peak GiB per configuration (the table printed at the end)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["model_shape"], r["layers_kept"], r["n_texts"], r["tokens"]), []).append(r)
    lines = ["| kind | model | layers kept | texts | tokens | repeats | median s | min-max s | tokens/s | peak GiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (kind, shape, layers, n, tokens), group in groups.items():
        secs = [g["seconds"] for g in group]
        peaks = [g["peak_bytes"] for g in group if g["peak_bytes"] is not None]
        peak = f"{max(peaks) / 2**30:.2f}" if peaks else "-"
        rate = n * tokens / float(np.median(secs)) if kind != "fusion_fit" else float("nan")
        lines.append(f"| {kind} | {shape} | {layers} | {n} | {tokens} | {len(secs)} | {np.median(secs):.3f} "
                     f"| {min(secs):.3f}-{max(secs):.3f} | {rate:,.0f} | {peak} |")
    return lines


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse arguments, measure within the budget, write the table; return the rows."""
    import torch
    import transformers

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="a CPU, toy versions of the architectures")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(PAPER_SHAPES))
    parser.add_argument("--texts", type=int, help="texts for the layers-kept sweep and fusion (default 512; dry 8)")
    parser.add_argument("--tokens", type=int, help="tokens per text there (default 64; dry 16)")
    parser.add_argument("--sizes", nargs="*", metavar="NxT",
                        help="more (texts x tokens) sizes, all layers kept (default 1024x64 256x256; dry 16x16 4x48)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per configuration (>= 3)")
    parser.add_argument("--token-budget", type=int, default=65536)
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--fusion-epochs", type=int, help="fusion classifier epochs (default 20; dry 2)")
    parser.add_argument("--budget-s", type=float, default=220.0, help="stop before this many seconds")
    parser.add_argument("--out", help="folder for gpu_overhead.csv/.json (default: $OUT, else a temporary one)")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (intervals need repeats)")
    dry = args.dry_run
    args.texts = args.texts or (8 if dry else 512)
    args.tokens = args.tokens or (16 if dry else 64)
    args.fusion_epochs = args.fusion_epochs or (2 if dry else 20)
    raw_sizes = args.sizes if args.sizes is not None else (["16x16", "4x48"] if dry else ["1024x64", "256x256"])
    try:
        args.sizes = [tuple(int(v) for v in s.lower().split("x")) for s in raw_sizes]
        if any(len(s) != 2 or min(s) < 1 for s in args.sizes):
            raise ValueError
    except ValueError:
        parser.error(f"--sizes {raw_sizes}: give sizes as TEXTSxTOKENS, e.g. 1024x64")
    if dry:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("gpu_overhead: no CUDA GPU here; run with --dry-run on a CPU")
        return []
    else:
        device = torch.device("cuda", torch.cuda.current_device())
    out_dir = Path(args.out or os.environ.get("OUT") or tempfile.mkdtemp(prefix="lf-gpu-overhead-"))
    hw = provenance.hardware()
    sha = os.environ.get("LAYERFUSION_GIT_SHA") or provenance.git_info(Path(__file__).resolve().parents[1])["sha"]
    meta = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else f"none (CPU: {hw['cpu']})",
            "device": str(device), "torch": torch.__version__, "transformers": transformers.__version__,
            "git_sha": sha}
    run = Run(out_dir, args.budget_s, meta)
    features: dict[str, Any] = {}
    extract_seconds: dict[tuple[str, int, int], list[float]] = {}
    peaks: dict[tuple, int | None] = {}
    print(f"gpu_overhead: {meta['gpu']}, torch {meta['torch']}, transformers {meta['transformers']}, "
          f"{'dry run (toy sizes)' if dry else 'paper shapes, bf16'}; budget {args.budget_s:.0f} s; "
          f"writing {out_dir}/gpu_overhead.csv", flush=True)
    for shape in args.shapes:
        if not run.fits(0.0 if dry else 15.0, f"{shape}: building it"):
            break
        t0 = run.elapsed()
        try:
            measure_model(run, shape, device, args, features, extract_seconds, peaks)
        except Exception as err:  # noqa: BLE001 - one backbone failing must not lose the others' rows
            run.skipped.append(f"{shape}: failed with {type(err).__name__}: {str(err)[:300]}")
            print(f"  {shape}: FAILED ({type(err).__name__}: {err})", flush=True)
            free(device)
        left = int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else 0
        if left > 2**30:
            run.skipped.append(f"after {shape}: {left / 2**30:.1f} GiB still allocated (later peaks include it)")
        print(f"  {shape}: done in {run.elapsed() - t0:.1f} s (elapsed {run.elapsed():.1f} s)", flush=True)
    try:
        measure_fusion(run, list(args.shapes), device, args, features, extract_seconds, peaks)
    except Exception as err:  # noqa: BLE001
        run.skipped.append(f"fusion: failed with {type(err).__name__}: {str(err)[:300]}")
        print(f"  fusion: FAILED ({type(err).__name__}: {err})", flush=True)
    run.write(finished=True)
    for line in summary(run.rows):
        print(line)
    for note in run.skipped:
        print(f"not measured: {note}")
    print(f"gpu_overhead: {len(run.rows)} rows in {out_dir}/gpu_overhead.csv ({run.elapsed():.0f} s)")
    return run.rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
