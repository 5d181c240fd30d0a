"""Extraction speed: the authors' loop against our engine in fp32 and bf16, each against its own dtype's matmul rate.

``python -m benchmarks.extraction --model smollm2-135m --dataset mr --n 256``
``python -m benchmarks.extraction --shape llama-2-7b --synthetic short --device cuda --n 1024`` (random weights)

The authors' loop (their released code, extended to nothing): ``AutoModelForCausalLM`` in fp32 from the same
weights, texts in dataset order in batches of 2, ``padding=True`` (pad to the longest of the pair),
``output_hidden_states=True``, and ``hidden_states[-1].mean(dim=1)`` over every position, padding included. Our
engine runs ``layerfusion.extract.extract_texts`` (``AutoModel``, length-sorted token-budget batches, every layer
pooled three ways) once per dtype and token budget: fp32 always, bf16 where it is native (a GPU, or a CPU with
``amx_bf16``/``avx512_bf16``; ``--dtypes`` overrides). Every loop sees the same texts in the same process, one after
the other; the ratios of their times are what to read (absolute times move with the load on a shared machine).
Figures are steady state (issue #21): each loop and configuration first runs one full untimed pass over its texts
(the first pass over new shapes picks kernels and fills the allocator's caches: it made bf16 look slower than fp32
on a GPU), then ``--repeats`` timed passes, whose median is reported. ``--authors-n`` times the authors' loop on the
first texts only (its rate per token does not depend on how many it sees); speed-ups are ratios of tokens/s.

Each loop's achieved rate, 2 x non-embedding params x real tokens / seconds, is set against the matmul rate of its
own dtype on this device, measured in the same run: the best of square products (1024 and 2048 on a CPU, 4096 and
8192 on a GPU) measured before the first loop and again after each timed loop, so a machine that is slow for a while
does not lower the reference. The targets (issue #14) are printed as ratios: with bf16, at least 5x the authors'
loop on a CPU with native bf16 (20x on a GPU), and at least 0.70 of the matmul rate of the dtype used.

``--shape`` builds a model of a published configuration with random weights (no download) and ``--synthetic``
feeds it generated texts of SST-2-like (``short``) or Reuters-like (``long``, 256 tokens) length; speed does not
depend on the weights, so this times the paper's 7B shapes on a GPU with no network.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from typing import Any

import numpy as np

from layerfusion import devices, extract, models, paths, pooling, provenance, testing
from layerfusion.study import workspace

TARGET_SPEEDUP = {"cpu": 5.0, "cuda": 20.0}
TARGET_MATMUL_FRACTION = 0.70
TARGET_BF16_OVER_FP32 = 1.3
SHAPES = {
    "llama-2-7b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
                   "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
    "qwen2.5-0.5b": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
                     "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": True},
    "mistral-7b": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
                   "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "sliding_window": 4096},
    "qwen2.5-7b": {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                   "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": False},
    "falcon3-7b": {"model_type": "llama", "hidden_size": 3072, "intermediate_size": 23040, "num_hidden_layers": 28,
                   "num_attention_heads": 12, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 131072,
                   "max_position_embeddings": 32768, "rms_norm_eps": 1e-6},
    "gemma-2-2b": {"model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                   "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 256000,
                   "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "query_pre_attn_scalar": 256,
                   "sliding_window": 4096, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                   "hidden_activation": "gelu_pytorch_tanh"},
    "tiny": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64, "max_position_embeddings": 512},
}
"""Configurations to build with random weights (the published ``config.json`` values that set memory and time):
the paper's backbones Llama-2-7B, Mistral-7B (v0.1), Qwen2.5-7B, Falcon3-7B (a Llama architecture) and Gemma-2-2B,
the study's Qwen2.5-0.5B (the shape of the shipped Qwen2.5-Coder-0.5B), and a toy Llama for tests."""
SYNTHETIC_WORDS = {"short": (10, 25), "long": (300, 400)}
"""Words per synthetic text (one token each with the test tokenizer): SST-2-like phrases, or Reuters-like documents
that ``--max-length 256`` truncates, as the study does."""


def load_texts(dataset: str, n: int, seed: int = 0) -> list[str]:
    """``n`` training texts of ``dataset``, a seeded random sample (MR lists all positives first)."""
    path = workspace.data_dir() / dataset / "train.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {paths.OBTAIN_DATA_HINT}")
    with open(path, encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh if line.strip()]
    if not 1 <= n <= len(texts):
        raise ValueError(f"--n {n} must be in [1, {len(texts)}] (the size of {dataset} train)")
    picked = np.random.default_rng(seed).choice(len(texts), size=n, replace=False)
    return [texts[i] for i in picked]


def synthetic_texts(n: int, kind: str = "short", seed: int = 0) -> list[str]:
    """``n`` texts of random words from ``layerfusion.testing.VOCAB_WORDS``, lengths drawn from ``SYNTHETIC_WORDS``."""
    low, high = SYNTHETIC_WORDS[kind]
    rng = np.random.default_rng(seed)
    words = np.asarray(testing.VOCAB_WORDS)
    return [" ".join(rng.choice(words, size=int(rng.integers(low, high + 1)))) for _ in range(n)]


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(size: int = 1024, seconds: float = 1.0, dtype: Any = None, device: Any = "cpu") -> float:
    """Measured matmul rate (FLOP/s) of square ``size`` products in ``dtype`` (default fp32) on ``device``."""
    import torch

    dtype = dtype or torch.float32
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    torch.mm(a, b)
    _sync(a.device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
        if count % 8 == 0:
            _sync(a.device)
    _sync(a.device)
    return 2.0 * size**3 * count / (time.perf_counter() - start)


def peak_matmul_flops(dtype: Any = None, device: Any = "cpu", sizes: tuple[int, ...] | None = None,
                      seconds: float = 1.0) -> float:
    """The device's matmul rate in ``dtype``: the best of ``matmul_flops`` over square ``sizes``.

    ``run`` measures it before the first loop and after every timed loop and keeps the largest value, so a shared
    machine that is slow for a while does not lower the reference and inflate the matmul fraction.
    """
    import torch

    if sizes is None:
        sizes = (4096, 8192) if torch.device(device).type == "cuda" else (1024, 2048)
    return max(matmul_flops(size, seconds, dtype, device) for size in sizes)


def authors_loop(model: Any, tokenizer: Any, texts: list[str], max_length: int = 512) -> np.ndarray:
    """The authors' extraction: batch 2, unsorted, pad to longest, last hidden state mean over all positions."""
    import torch

    out = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(texts), 2):
            enc = tokenizer(texts[start:start + 2], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt").to(device)
            states = model(**enc, output_hidden_states=True).hidden_states
            out.append(states[-1].mean(dim=1).float().cpu().numpy())
    return np.concatenate(out)


def _non_embedding_params(model: Any) -> int:
    embedding = model.get_input_embeddings()
    skip = {id(p) for p in embedding.parameters()}
    return int(sum(p.numel() for p in model.parameters() if id(p) not in skip))


def default_dtypes(device: Any) -> tuple[str, ...]:
    """fp32 always; bf16 too on a GPU or a CPU with native bf16 (where ``devices`` would choose it)."""
    auto = devices.choose_dtype(None, device).name
    return ("float32",) if auto == "float32" else ("float32", auto)


def setup_registry(model_key: str, dtypes: tuple[str, ...], device: Any) -> tuple[Any, dict[str, Any]]:
    """The authors' ``AutoModelForCausalLM`` (fp32) and our ``LoadedModel`` per dtype, from a registry model."""
    from transformers import AutoModelForCausalLM

    spec = models.get_spec(model_key)
    if spec.arch != "decoder":
        raise ValueError(f"model {model_key!r} is an encoder; the authors' loop needs a decoder LM")
    ours = {dt: models.load(spec, device=device, dtype=dt) for dt in dtypes}
    weights_dir, _ = models.weights_location(spec, None)
    causal = AutoModelForCausalLM.from_pretrained(weights_dir, dtype="float32").to(device).eval()
    return causal, ours


def wordlevel_tokenizer() -> Any:
    """The WordLevel tokenizer of ``layerfusion.testing`` (one token per word, right padding), for random models."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = AutoTokenizer.from_pretrained(testing.tiny_model_dir(tmp, n_layers=1))
    tokenizer.padding_side = "right"
    return tokenizer


def random_config(shape: str, **overrides: Any) -> Any:
    """The transformers config of ``SHAPES[shape]`` (``overrides`` win, e.g. ``num_hidden_layers=4``)."""
    import transformers

    settings = {**SHAPES[shape], **overrides}
    return transformers.AutoConfig.for_model(settings.pop("model_type"), **settings, pad_token_id=0,
                                             bos_token_id=2, eos_token_id=3)


def random_spec(config: Any, shape: str) -> models.ModelSpec:
    """A ``ModelSpec`` naming a random-weight model built from ``config``."""
    return models.ModelSpec(key=f"random-{shape}", hf_id=f"random-init/{shape}", source="local", arch="decoder",
                            path=f"<random weights in memory: {shape}>",
                            n_layers=config.num_hidden_layers, hidden_size=config.hidden_size,
                            padding_side="right", licence="none (random weights)")


def setup_random(shape: str, dtypes: tuple[str, ...], device: Any) -> tuple[Any, dict[str, Any]]:
    """A model of ``SHAPES[shape]`` with random weights built on ``device`` (fp32 ``AutoModelForCausalLM`` for the
    authors' loop; our ``LoadedModel`` per dtype shares its base model in fp32 and copies it for other dtypes), with
    ``wordlevel_tokenizer``."""
    import torch
    from transformers import AutoModelForCausalLM

    device = torch.device(device)
    tokenizer = wordlevel_tokenizer()
    config = random_config(shape)
    torch.manual_seed(0)
    with device:
        causal = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    spec = random_spec(config, shape)
    ours = {}
    for dt in dtypes:
        choice = devices.choose_dtype(dt, device)
        base = causal.base_model if choice.name == "float32" else copy.deepcopy(causal.base_model).to(choice.dtype)
        ours[dt] = models.LoadedModel(model=base.eval(), tokenizer=tokenizer, spec=spec, device=device,
                                      dtype=choice.dtype, fingerprint="random-init", dtype_reason=choice.reason)
    return causal, ours


def steady_seconds(fn: Any, device: Any, repeats: int = 2) -> tuple[Any, list[float]]:
    """Run ``fn`` once untimed (a full warm-up pass: kernels chosen, allocator and pinned-memory caches filled for
    every shape it meets), then ``repeats`` timed passes, the device synchronised around each; return the last
    result and the timed seconds (their median is the steady-state figure)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    fn()
    seconds, result = [], None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return result, seconds


def run(model_key: str | None, dataset: str, n: int, token_budgets: tuple[int, ...] = (1024,), max_length: int = 512,
        *, dtypes: tuple[str, ...] | None = None, device: str | None = None, shape: str | None = None,
        synthetic: str | None = None, matmul_seconds: float = 1.0, matmul_sizes: tuple[int, ...] | None = None,
        repeats: int = 2, authors_n: int | None = None,
        max_batch_sizes: tuple[int, ...] = (256,)) -> list[dict[str, Any]]:
    """Time the authors' loop and our engine (per dtype, token budget and batch-size cap) in steady state.

    Every loop and configuration gets a full untimed warm-up pass over its texts, then ``repeats`` timed passes; a
    row reports their median (and every pass). The authors' loop runs on the first ``authors_n`` texts (default:
    all; its rate per token does not depend on how many texts it sees, since it neither sorts nor batches beyond
    pairs), so speed-ups are ratios of real tokens per second. One row per loop: the authors' first, then ours;
    each with its seconds, real tokens/s, speed-up over the authors' loop, and achieved rate as a fraction of its
    dtype's matmul rate measured in the same run (square products of ``matmul_sizes``, default
    ``peak_matmul_flops``'s; a toy run passes small ones, since one 2048-square product in emulated bf16 takes about
    20 s on an AVX2 CPU).
    """
    import torch

    dev = devices.resolve_device(device)
    dtypes = tuple(devices.choose_dtype(dt, dev).name for dt in (dtypes or default_dtypes(dev)))
    texts = synthetic_texts(n, synthetic) if synthetic else load_texts(dataset, n)
    authors_texts = texts[:max(1, min(authors_n or n, n))]
    causal, ours = setup_random(shape, dtypes, dev) if shape else setup_registry(model_key, dtypes, dev)
    tokenizer = next(iter(ours.values())).tokenizer
    configs = {dt: [extract.ExtractionConfig(max_length=max_length, poolings=tuple(pooling.POOLINGS),
                                             token_budget=int(b), max_batch_size=int(m), device=str(dev), dtype=dt)
                    for b in token_budgets for m in max_batch_sizes]
               for dt in dtypes}
    names = sorted({"float32", *dtypes})
    rates = {dt: [peak_matmul_flops(getattr(torch, dt), dev, matmul_sizes, matmul_seconds)] for dt in names}

    _, authors_passes = steady_seconds(lambda: authors_loop(causal, tokenizer, authors_texts, max_length), dev,
                                       repeats)
    rates["float32"].append(peak_matmul_flops(torch.float32, dev, matmul_sizes, matmul_seconds))
    runs = []
    for dt in dtypes:
        for config in configs[dt]:
            result, passes = steady_seconds(lambda: extract.extract_texts(ours[dt], texts, config, progress=False),
                                            dev, repeats)
            runs.append((dt, config, result, passes))
            rates[dt].append(peak_matmul_flops(getattr(torch, dt), dev, matmul_sizes, matmul_seconds))
    flops = {dt: max(values) for dt, values in rates.items()}

    params = _non_embedding_params(next(iter(ours.values())).model)
    lengths = [len(x) for x in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    real = int(sum(lengths))
    authors_lengths = lengths[:len(authors_texts)]
    authors_real = int(sum(authors_lengths))
    authors_s = float(np.median(authors_passes))
    authors_rate = authors_real / authors_s
    hw = provenance.hardware()
    common = {"model": model_key or f"random {shape}", "dataset": f"synthetic {synthetic}" if synthetic else dataset,
              "n": n, "device": str(dev), "device_name": hw["gpu"] if dev.type == "cuda" else hw["cpu"],
              "cpu_flags": " ".join(hw["cpu_flags"]), "native_bf16": devices.native_bf16_flag() or "",
              "non_embedding_params": params, "authors_n": len(authors_texts), "authors_s": authors_s,
              "authors_tokens_per_s": authors_rate, "repeats": repeats, "warmup": "one full untimed pass"}

    def row(loop: str, dt: str, budget: Any, batches: int, padded: int, passes: list[float], tokens: int,
            layers: int, max_batch: int | None = None) -> dict[str, Any]:
        seconds = float(np.median(passes))
        achieved = 2.0 * params * tokens / seconds
        return {**common, "loop": loop, "dtype": dt, "token_budget": budget, "batches": batches,
                "real_tokens": tokens, "padded_tokens": padded, "seconds": seconds,
                "seconds_passes": [float(x) for x in passes], "tokens_per_s": tokens / seconds,
                "speedup": tokens / seconds / authors_rate, "matmul_gflops": flops[dt] / 1e9,
                "achieved_gflops": achieved / 1e9, "matmul_fraction_ratio": achieved / flops[dt],
                "layers_pooled": layers, "max_batch_size": max_batch}

    authors_padded = sum(len(authors_lengths[i:i + 2]) * max(authors_lengths[i:i + 2])
                         for i in range(0, len(authors_lengths), 2))
    rows = [row("authors", "float32", None, -(-len(authors_texts) // 2), authors_padded, authors_passes,
                authors_real, 1)]
    rows += [row("layerfusion", dt, config.token_budget, int(res.n_batches), int(res.padded_tokens), passes, real,
                 len(res.layers), config.max_batch_size) for dt, config, res, passes in runs]
    return rows


def targets(rows: list[dict[str, Any]], fraction: float = TARGET_MATMUL_FRACTION,
            bf16_over_fp32: float = TARGET_BF16_OVER_FP32) -> list[str]:
    """The issues' targets as ratio lines: bf16 speed-up over the authors' loop (where bf16 is native), the matmul
    fraction of our engine in each dtype (best token budget) against ``fraction``, and, when both dtypes ran, our
    bf16 speed over our fp32 (issue #21: >= 1.3 on the Qwen2.5-0.5B shape)."""
    ours = [r for r in rows if r["loop"] == "layerfusion"]
    device = rows[0]["device"].split(":")[0]
    lines = []
    bf16 = [r for r in ours if r["dtype"] == "bfloat16"]
    native = device == "cuda" or bool(rows[0]["native_bf16"])
    if bf16 and native:
        best, goal = max(r["speedup"] for r in bf16), TARGET_SPEEDUP.get(device, TARGET_SPEEDUP["cpu"])
        lines.append(f"target bf16 speed-up over the authors' loop >= {goal:g}: {best:.2f} "
                     f"({'met' if best >= goal else 'not met'})")
    elif not native:
        lines.append("target bf16 speed-up: not applicable (no native bf16 on this CPU; fp32 is the dtype used)")
    for dt in dict.fromkeys(r["dtype"] for r in ours):
        best = max(r["matmul_fraction_ratio"] for r in ours if r["dtype"] == dt)
        lines.append(f"target matmul fraction in {dt} >= {fraction:.2f}: {best:.3f} "
                     f"({'met' if best >= fraction else 'not met'})")
    fp32 = [r for r in ours if r["dtype"] == "float32"]
    if bf16 and fp32 and native:
        ratio = max(r["tokens_per_s"] for r in bf16) / max(r["tokens_per_s"] for r in fp32)
        lines.append(f"target bf16 over fp32 (our engine) >= {bf16_over_fp32:g}: {ratio:.2f} "
                     f"({'met' if ratio >= bf16_over_fp32 else 'not met'})")
    elif bf16 and fp32:
        lines.append(f"target bf16 over fp32 (our engine) >= {bf16_over_fp32:g}: not applicable (bf16 is emulated "
                     "on this CPU, no avx512_bf16/amx_bf16)")
    return lines


def main(argv: list[str] | None = None) -> list[dict[str, Any]] | None:
    """Parse arguments, run, print a table and the targets; return the measurements (None if the model is absent)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.extraction", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="a registry key (ignored with --shape)")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this configuration instead")
    parser.add_argument("--dataset", default="mr")
    parser.add_argument("--synthetic", choices=sorted(SYNTHETIC_WORDS), help="generated texts instead of --dataset")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--token-budget", type=int, nargs="+", default=[1024, 16384],
                        help="one or more token budgets for our engine (CPU is fastest near 512-1024)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-batch-size", type=int, nargs="+", default=[256],
                        help="caps on texts per batch to compare (ExtractionConfig.max_batch_size; short texts on a "
                             "GPU fill a large token budget only with a large cap)")
    parser.add_argument("--dtypes", nargs="+", help="our engine's dtypes (default: fp32, and bf16 where native)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--matmul-seconds", type=float, default=1.0, help="seconds per matmul-rate measurement")
    parser.add_argument("--matmul-sizes", type=int, nargs="+",
                        help="square matmul sizes for the rate measurement (default: 1024 2048 on CPU, 4096 8192 on "
                             "GPU; small ones for a toy dry run)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes after the warm-up pass (median kept)")
    parser.add_argument("--authors-n", type=int, help="texts for the authors' loop (default: all --n)")
    parser.add_argument("--target-fraction", type=float, default=TARGET_MATMUL_FRACTION,
                        help="the matmul-fraction target to report against")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.shape is None and not models.available(args.model):
        print(f"model {args.model!r} is not installed here; install it with `{models.INSTALL_HINT}`")
        return None
    rows = run(args.model if args.shape is None else None, args.dataset, args.n, tuple(args.token_budget),
               args.max_length, dtypes=tuple(args.dtypes) if args.dtypes else None, device=args.device,
               shape=args.shape, synthetic=args.synthetic, matmul_seconds=args.matmul_seconds,
               matmul_sizes=tuple(args.matmul_sizes) if args.matmul_sizes else None, repeats=args.repeats,
               authors_n=args.authors_n, max_batch_sizes=tuple(args.max_batch_size))
    first = rows[0]
    print(f"{first['model']} on {first['dataset']}: {first['n']} texts, {rows[-1]['real_tokens']} real tokens "
          f"(the authors' loop: the first {first['authors_n']}), {first['non_embedding_params'] / 1e6:.0f}M "
          f"non-embedding params; device {first['device']} ({first['device_name']}); CPU flags: "
          f"{first['cpu_flags'] or 'none listed'}; steady state: median of {first['repeats']} timed passes after "
          "one full untimed pass per loop and configuration")
    print("| loop | dtype | token budget | batches | padded tokens | seconds | real tokens/s | speedup "
          "| matmul GFLOP/s (its dtype) | matmul fraction ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        name = ("authors (CausalLM, batch 2, unsorted, last layer)" if r["loop"] == "authors"
                else f"layerfusion ({r['layers_pooled']} layers x {len(pooling.POOLINGS)} poolings, "
                     f"<= {r['max_batch_size']} texts a batch)")
        print(f"| {name} | {r['dtype']} | {r['token_budget'] or '-'} | {r['batches']} | {r['padded_tokens']} "
              f"| {r['seconds']:.2f} | {r['tokens_per_s']:.0f} | {r['speedup']:.2f} | {r['matmul_gflops']:.1f} "
              f"| {r['matmul_fraction_ratio']:.3f} |")
    for line in targets(rows, args.target_fraction):
        print(f"{line} [{first['model']}, {first['dataset']}]")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1, default=str)
    return rows


if __name__ == "__main__":
    main()
