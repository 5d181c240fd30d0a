"""A real out-of-memory retry: a batch too big for the device, halved by the engine until it fits, vectors intact.

``python -m benchmarks._oom_check`` (on a CUDA GPU; ``benchmarks/gpu_check.sh`` runs it)
``python -m benchmarks._oom_check --dry-run`` (on a CPU: a toy model, the out-of-memory error simulated)

On the GPU a Llama-2-7B-wide model with random weights (``--layers`` blocks, bf16) is built, the allocator is capped
with ``torch.cuda.set_per_process_memory_fraction`` at what is allocated plus ``--headroom-gib``, and all ``--n``
texts of 256 tokens are sent as one batch: the caching allocator raises a genuine ``torch.OutOfMemoryError``, which
``extract_texts`` must catch, halve the batch and finish. The check passes when at least one retry was logged,
every vector is finite, and the first texts' mean vectors match those of a run with a small token budget (cosine
>= 0.999; bf16 products of other shapes round differently). Exit code 0 on pass, 1 on failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import numpy as np

from benchmarks.extraction import random_config, random_spec, synthetic_texts, wordlevel_tokenizer
from layerfusion import devices, extract, models

logger = logging.getLogger("layerfusion.extract")


class _Warnings(logging.Handler):
    """Collects the engine's out-of-memory warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "out of memory" in record.getMessage():
            self.messages.append(record.getMessage())


def _simulate_oom(limit: int) -> Any:
    """Make ``_Taps.run`` raise ``torch.OutOfMemoryError`` on batches of more than ``limit`` token positions (the
    dry run's stand-in for a full device); returns the original to restore."""
    import torch

    original = extract._Taps.run

    def run(self: Any, input_ids: Any, mask: Any, kwargs: dict[str, Any]) -> Any:
        if input_ids.numel() > limit:
            raise torch.OutOfMemoryError(f"simulated: {input_ids.numel()} positions > {limit}")
        return original(self, input_ids, mask, kwargs)

    extract._Taps.run = run
    return original


def check(device: str, shape: str, layers: int, n: int, headroom_gib: float, dry_run: bool) -> dict[str, Any]:
    """Run the out-of-memory retry once; return what happened (see the module docstring for the verdict)."""
    import torch
    from transformers import AutoModel

    dev = torch.device(device)
    # The allocator cap takes a device index ("cuda" alone has none: the H200 run of issue #21 crashed on it).
    index = (dev.index if dev.index is not None else torch.cuda.current_device()) if dev.type == "cuda" else None
    config = random_config(shape, num_hidden_layers=layers)
    torch.manual_seed(0)
    with dev:
        model = AutoModel.from_config(config, dtype=torch.bfloat16).eval()
    choice = devices.choose_dtype("bfloat16", dev)
    loaded = models.LoadedModel(model=model, tokenizer=wordlevel_tokenizer(), spec=random_spec(config, shape),
                                device=dev, dtype=choice.dtype, fingerprint="random-init", dtype_reason=choice.reason)
    texts = synthetic_texts(n, "long")
    small = extract.ExtractionConfig(max_length=256, poolings=("mean", "last"), token_budget=2048)
    reference = extract.extract_texts(loaded, texts[:8], small, progress=False)
    whole = extract.ExtractionConfig(max_length=256, poolings=("mean", "last"), token_budget=n * 256,
                                     max_batch_size=n, max_padding=1.0)
    handler = _Warnings()
    logger.addHandler(handler)
    restore = None
    try:
        if dry_run:
            restore = _simulate_oom(limit=max(256, n * 256 // 4))
        else:
            torch.cuda.empty_cache()
            total = torch.cuda.get_device_properties(index).total_memory
            cap = torch.cuda.memory_allocated(index) + headroom_gib * 2**30
            torch.cuda.set_per_process_memory_fraction(min(cap / total, 1.0), index)
        result = extract.extract_texts(loaded, texts, whole, progress=False)
    finally:
        logger.removeHandler(handler)
        if restore is not None:
            extract._Taps.run = restore
        elif not dry_run:
            torch.cuda.set_per_process_memory_fraction(1.0, index)
    a, b = reference["mean"], result["mean"][:8]
    cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    finite = bool(np.isfinite(result["mean"]).all() and np.isfinite(result["last"]).all())
    ok = bool(handler.messages) and finite and float(cosine.min()) >= 0.999 and result.n_batches > 1
    return {"device": str(dev), "simulated": dry_run, "texts": n, "tokens_per_text": 256, "layers": layers,
            "retries": len(handler.messages), "batches": int(result.n_batches), "finite": finite,
            "min_cosine_vs_small_batches": float(cosine.min()), "passed": ok, "log": handler.messages}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the check, print the outcome; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks._oom_check", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy model, simulated out-of-memory error")
    parser.add_argument("--layers", type=int, default=4, help="blocks of the 7B-wide model (memory is per layer)")
    parser.add_argument("--n", type=int, default=512, help="texts of 256 tokens, all in the first batch")
    parser.add_argument("--headroom-gib", type=float, default=3.0, help="memory allowed above the weights")
    args = parser.parse_args(argv)
    if args.dry_run:
        outcome = check("cpu", "tiny", 2, min(args.n, 16), args.headroom_gib, dry_run=True)
    else:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device: run with --dry-run on a CPU")
            return 2
        outcome = check("cuda", "llama-2-7b", args.layers, args.n, args.headroom_gib, dry_run=False)
    for key, value in outcome.items():
        print(f"{key}: {value}")
    print("out-of-memory retry:", "PASS" if outcome["passed"] else "FAIL")
    return 0 if outcome["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
