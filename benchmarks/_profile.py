"""Where extraction time goes: shares of one ``extract_texts`` call by kind of work, from ``torch.profiler``.

``python -m benchmarks._profile --model smollm2-135m --dataset sst2 --n 256 --max-length 64 --dtype bfloat16``
``python -m benchmarks._profile --shape qwen2.5-0.5b --dataset r8 --n 32 --max-length 256 --attn eager``

Shares of the call's wall time, not speeds, so that a loaded machine still gives a readable answer: matrix products
of the linear layers, attention (kernel and rotary embeddings), norms, MLP activations, copies and dtype conversions
(``copy_``/``to``, by region), our pooling (the hook that pools every layer, record included), Python time inside
the model's modules, tokenizing and padding, and the rest (Python outside any labelled region: the engine's loop,
the model's layer loop, mask building). Regions are labelled with ``torch.profiler.record_function`` from forward
hooks; the profiler adds a few microseconds per operation, so the shares of small operations are upper bounds.
Not a benchmark module (the leading underscore keeps ``python -m benchmarks`` off it); its findings are written up
in DESIGN.md ("Extraction speed").
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

import numpy as np

from benchmarks.extraction import SHAPES, load_texts, setup_random
from layerfusion import extract, models, pooling

MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_mkldnn_matmul",
              "aten::mkldnn_linear", "aten::_addmm_activation"}
CONVERSION_OPS = {"aten::to", "aten::_to_copy", "aten::copy_"}
ATTENTION_OPS = ("attention", "softmax")


def _region(module_name: str, module: Any) -> str | None:
    import torch

    if isinstance(module, torch.nn.Linear):
        return "linear"
    if module_name.endswith(("self_attn", ".attention", "attn")):
        return "attention"
    if module_name.endswith(".mlp"):
        return "mlp"
    if "norm" in type(module).__name__.lower():
        return "norm"
    return None


def label_modules(model: Any) -> list[Any]:
    """Forward hooks that open a ``lf:<region>`` profiler range around linear, attention, MLP and norm modules."""
    import torch

    handles = []
    for name, module in model.named_modules():
        region = _region(name, module)
        if region is None:
            continue
        stack: list[Any] = []

        def pre(mod: Any, args: Any, region: str = region, stack: list = stack) -> None:
            stack.append(torch.profiler.record_function(f"lf:{region}").__enter__())

        def post(mod: Any, args: Any, out: Any, stack: list = stack) -> None:
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def _labelled(fn: Any, label: str) -> Any:
    import torch

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.profiler.record_function(f"lf:{label}"):
            return fn(*args, **kwargs)
    return wrapper


def classify(event: Any) -> str:
    """The kind of work of one profiler event, from its own name and its nearest ``lf:`` ancestor."""
    region, parent = None, event.cpu_parent
    while parent is not None and region is None:
        if parent.name.startswith("lf:"):
            region = parent.name[3:]
        parent = parent.cpu_parent
    name = event.name
    if name.startswith("lf:"):
        own = {"tokenize": "tokenize + pad", "pool": "pooling (hook)"}
        return own.get(name[3:], f"python in {name[3:]} modules")
    if region in ("pool", "tokenize"):
        return "pooling (hook)" if region == "pool" else "tokenize + pad"
    if name in CONVERSION_OPS:
        return f"copies, dtype conversions ({region or 'other'})"
    if name in MATMUL_OPS:
        return "linear matmul" if region == "linear" else "attention" if region == "attention" else "other matmul"
    if region == "linear":
        return "linear (bias, views)"
    if region == "attention" or any(word in name for word in ATTENTION_OPS):
        return "attention"
    if region in ("mlp", "norm"):
        return f"{region} elementwise"
    return "other ops"


def profile_call(loaded: Any, texts: list[str], config: Any) -> tuple[dict[str, float], float, Any]:
    """Run ``extract_texts`` once under the profiler; return seconds per kind of work, wall seconds, the result."""
    import torch

    handles = label_modules(loaded.model)
    saved = (extract._Taps._pool, extract.tokenize, extract._pad)
    extract._Taps._pool = _labelled(saved[0], "pool")
    extract.tokenize, extract._pad = _labelled(saved[1], "tokenize"), _labelled(saved[2], "tokenize")
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            result = extract.extract_texts(loaded, texts, config, progress=False)
            wall = time.perf_counter() - start
    finally:
        extract._Taps._pool, extract.tokenize, extract._pad = saved
        for handle in handles:
            handle.remove()
    seconds: dict[str, float] = defaultdict(float)
    ops: dict[tuple[str, str], float] = defaultdict(float)
    for event in prof.events():
        kind = classify(event)
        seconds[kind] += event.self_cpu_time_total / 1e6
        ops[kind, event.name] += event.self_cpu_time_total / 1e6
    seconds["untracked (engine loop, model glue)"] = max(wall - sum(seconds.values()), 0.0)
    profile_call.ops = dict(ops)  # type: ignore[attr-defined]
    return dict(seconds), wall, result


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Profile one extraction and print the shares; return them."""
    import torch

    parser = argparse.ArgumentParser(prog="python -m benchmarks._profile", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this configuration instead")
    parser.add_argument("--dataset", default="sst2")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--token-budget", type=int, default=1024)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa")
    parser.add_argument("--poolings", nargs="+", default=list(pooling.POOLINGS), choices=list(pooling.POOLINGS))
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--top", type=int, default=0, help="also list the N operations that take most time")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.shape:
        _, ours = setup_random(args.shape, (args.dtype,), "cpu")
        loaded = next(iter(ours.values()))
    else:
        loaded = models.load(args.model, device="cpu", dtype=args.dtype)
    loaded.model.set_attn_implementation(args.attn)
    texts = load_texts(args.dataset, args.n)
    config = extract.ExtractionConfig(max_length=args.max_length, token_budget=args.token_budget,
                                      poolings=tuple(args.poolings))
    extract.extract_texts(loaded, texts[:8], config, progress=False)
    seconds, wall, result = profile_call(loaded, texts, config)
    shares = {k: v / wall for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}
    lengths = np.asarray([len(x) for x in extract.tokenize(loaded.tokenizer, texts, args.max_length)[0]])
    print(f"{args.shape or args.model} {args.dtype} {args.attn}, {args.dataset} n={args.n} max_length="
          f"{args.max_length} budget={args.token_budget}, {torch.get_num_threads()} threads: {result.n_batches} "
          f"batches, mean {lengths.mean():.1f} tokens, padded/real {result.padded_tokens / result.real_tokens:.3f}")
    print("| kind of work | share of wall time |")
    print("|---|---:|")
    for kind, share in shares.items():
        print(f"| {kind} | {share:.3f} |")
    if args.top:
        ops = sorted(profile_call.ops.items(), key=lambda kv: -kv[1])[:args.top]  # type: ignore[attr-defined]
        print("| kind of work | operation | share of wall time |")
        print("|---|---|---:|")
        for (kind, name), value in ops:
            print(f"| {kind} | {name} | {value / wall:.3f} |")
    return shares


if __name__ == "__main__":
    main()
