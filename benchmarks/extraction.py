"""Extraction speed: our engine against a re-implementation of the authors' loop, timed in one run.

``python -m benchmarks.extraction --model smollm2-135m --dataset mr --n 256``

The authors' loop (their released code, extended to nothing): ``AutoModelForCausalLM`` in fp32 from the same
weights, texts in dataset order in batches of 2, ``padding=True`` (pad to the longest of the pair),
``output_hidden_states=True``, and ``hidden_states[-1].mean(dim=1)`` over every position. Our engine runs
``layerfusion.extract.extract_texts`` (``AutoModel``, length-sorted token-budget batches, every layer pooled three
ways). Both see the same texts, in the same process, one after the other; the ratio of their times is what to read
(absolute times move with the load on a shared machine). The achieved rate is also put beside the machine's fp32
matmul rate measured in the same run (the best of square 1024 and 2048 products, measured before and after every
timed loop): 2 x non-embedding params x real tokens / time / matmul FLOP/s.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from layerfusion import extract, models, paths


def load_texts(dataset: str, n: int, seed: int = 0) -> list[str]:
    """``n`` training texts of ``dataset``, a seeded random sample (MR lists all positives first)."""
    path = paths.data_dir() / dataset / "train.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {paths.OBTAIN_DATA_HINT}")
    with open(path, encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh if line.strip()]
    if not 1 <= n <= len(texts):
        raise ValueError(f"--n {n} must be in [1, {len(texts)}] (the size of {dataset} train)")
    picked = np.random.default_rng(seed).choice(len(texts), size=n, replace=False)
    return [texts[i] for i in picked]


def matmul_flops(size: int = 1024, seconds: float = 1.0) -> float:
    """Measured fp32 matmul rate of this machine (FLOP/s), with torch's current thread setting."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2.0 * size**3 * count / (time.perf_counter() - start)


def peak_matmul_flops(sizes: tuple[int, ...] = (1024, 2048)) -> float:
    """The machine's fp32 matmul rate: the best of ``matmul_flops`` over square ``sizes``.

    ``run`` measures it before the warm-up and after every timed loop and keeps the largest value, so a shared
    machine that is slow for a while does not lower the reference and inflate the matmul fraction.
    """
    return max(matmul_flops(size) for size in sizes)


def authors_loop(model: Any, tokenizer: Any, texts: list[str], max_length: int = 512) -> np.ndarray:
    """The authors' extraction: batch 2, unsorted, pad to longest, last hidden state mean over all positions."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(texts), 2):
            enc = tokenizer(texts[start:start + 2], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            states = model(**enc, output_hidden_states=True).hidden_states
            out.append(states[-1].mean(dim=1).float().numpy())
    return np.concatenate(out)


def _non_embedding_params(model: Any) -> int:
    embedding = model.get_input_embeddings()
    skip = {id(p) for p in embedding.parameters()}
    return int(sum(p.numel() for p in model.parameters() if id(p) not in skip))


def run(model_key: str, dataset: str, n: int, token_budgets: tuple[int, ...] = (1024,), max_length: int = 512
        ) -> list[dict[str, Any]]:
    """Time the authors' loop and our engine (once per token budget) on the same ``n`` texts; one row per budget."""
    from transformers import AutoModelForCausalLM

    spec = models.get_spec(model_key)
    if spec.arch != "decoder":
        raise ValueError(f"model {model_key!r} is an encoder; the authors' loop needs a decoder LM")
    texts = load_texts(dataset, n)
    loaded = models.load(spec, device="cpu", dtype="float32")
    weights_dir, _ = models.weights_location(spec, None)
    causal = AutoModelForCausalLM.from_pretrained(weights_dir, dtype="float32").eval()
    tokenizer = loaded.tokenizer
    configs = [extract.ExtractionConfig(max_length=max_length, poolings=("mean", "last", "mean_pad"),
                                        token_budget=int(b), device="cpu", dtype="float32") for b in token_budgets]
    flops_before = peak_matmul_flops()
    warm = texts[:4]
    authors_loop(causal, tokenizer, warm, max_length)
    extract.extract_texts(loaded, warm, configs[0], progress=False)

    start = time.perf_counter()
    authors_loop(causal, tokenizer, texts, max_length)
    authors_s = time.perf_counter() - start
    timed, rates = [], [flops_before, peak_matmul_flops()]
    for config in configs:
        start = time.perf_counter()
        ours = extract.extract_texts(loaded, texts, config, progress=False)
        timed.append((config, ours, time.perf_counter() - start))
        rates.append(peak_matmul_flops())
    flops = max(rates)

    params = _non_embedding_params(loaded.model)
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    lengths = [len(x) for x in ids]
    authors_padded = sum(len(lengths[i:i + 2]) * max(lengths[i:i + 2]) for i in range(0, len(lengths), 2))
    rows = []
    for config, ours, ours_s in timed:
        real = int(ours.real_tokens)
        achieved = 2.0 * params * real / ours_s
        rows.append({
            "model": model_key, "dataset": dataset, "loop": f"layerfusion budget {config.token_budget}", "n": n,
            "token_budget": config.token_budget, "real_tokens": real, "padded_tokens": int(ours.padded_tokens),
            "batches": int(ours.n_batches), "authors_padded_tokens": authors_padded, "authors_s": authors_s,
            "ours_s": ours_s,
            "authors_tokens_per_s": real / authors_s, "ours_tokens_per_s": real / ours_s,
            "speedup": authors_s / ours_s, "non_embedding_params": params, "matmul_gflops": flops / 1e9,
            "achieved_gflops": achieved / 1e9, "matmul_fraction_ratio": achieved / flops,
            "layers_pooled": len(ours.layers),
        })
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]] | None:
    """Parse arguments, run, print a table and the ratios; return the measurements (None if the model is absent)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.extraction", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="mr")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--token-budget", type=int, nargs="+", default=[1024, 16384],
                        help="one or more token budgets for our engine (CPU is fastest near 512-1024)")
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args(argv)
    if not models.available(args.model):
        print(f"model {args.model!r} is not installed here; install it with `{models.INSTALL_HINT}`")
        return None
    rows = run(args.model, args.dataset, args.n, tuple(args.token_budget), args.max_length)
    first = rows[0]
    print(f"{first['model']} on {first['dataset']}: {first['n']} texts, {first['real_tokens']} real tokens, CPU fp32, "
          f"{first['non_embedding_params'] / 1e6:.0f}M non-embedding params, fp32 matmul "
          f"{first['matmul_gflops']:.1f} GFLOP/s measured")
    print("| loop | token budget | batches | padded tokens | seconds | real tokens/s | speedup | matmul fraction |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| authors (CausalLM, batch 2, unsorted, last layer) | - | {-(-first['n'] // 2)} "
          f"| {first['authors_padded_tokens']} "
          f"| {first['authors_s']:.2f} | {first['authors_tokens_per_s']:.0f} | 1.00 | - |")
    for r in rows:
        print(f"| layerfusion ({r['layers_pooled']} layers x 3 poolings) | {r['token_budget']} | {r['batches']} "
              f"| {r['padded_tokens']} | {r['ours_s']:.2f} | {r['ours_tokens_per_s']:.0f} | {r['speedup']:.2f} "
              f"| {r['matmul_fraction_ratio']:.3f} |")
    return rows


if __name__ == "__main__":
    main()
