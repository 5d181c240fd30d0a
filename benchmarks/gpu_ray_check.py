"""GPU check of the Ray path: two Ray actors sharing one GPU write the same shard files as one process does.

``python -m benchmarks.gpu_ray_check`` (called from ``benchmarks/gpu_check.sh``; ``--device cpu`` runs the same
check without a GPU)

A tiny randomly initialised model (``layerfusion.testing``, unless ``--model`` names a registered one) embeds the
same seeded synthetic texts twice on the device, into two temp caches: in this process, then with
``RayExecutor(workers=2, gpus_per_worker=0.5)`` on a local Ray instance (CUDA), so both actors run on the one GPU.
It prints one line per shard and a verdict, and exits 1 if any shard differs; without CUDA (and no ``--device``) it
says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from layerfusion import embeddings, extract, models, testing


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts of 3-40 words from the tiny models' vocabulary (every word is a known token)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(testing.VOCAB_WORDS, size=int(rng.integers(3, 41)))) for _ in range(n)]


def check(spec: Any, texts: list[str], device: str, shard_size: int, root: Path) -> list[tuple[str, bool]]:
    """(shard file, identical?) for every shard of the single-process and the two-actor Ray run."""
    from layerfusion.distributed import RayExecutor

    config = extract.ExtractionConfig(poolings=("mean", "last"), shard_size=shard_size, max_length=64,
                                      token_budget=512, device=device)
    single = embeddings.embed(spec, texts, "texts", config, cache_dir=root / "single", progress=False)
    gpus = 0.5 if device.startswith("cuda") else 0.0
    with RayExecutor(workers=2, gpus_per_worker=gpus) as executor:
        on_ray = embeddings.embed(spec, texts, "texts", config, cache_dir=root / "ray", progress=False,
                                  executor=executor)
    ours = {p.name: p.read_bytes() for p in on_ray.path.glob("shard-*.npy")}
    return [(p.name, ours.get(p.name) == p.read_bytes()) for p in sorted(single.path.glob("shard-*.npy"))]


def main(argv: list[str] | None = None) -> list[dict[str, Any]] | None:
    """Run the check; print each shard and the verdict; exit 1 on a mismatch (None when there is no GPU)."""
    import torch

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_ray_check", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a registered model key (default: a tiny random model)")
    parser.add_argument("--device", default=None, help="default: cuda (the check is skipped without a GPU)")
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--shard-size", type=int, default=16)
    args = parser.parse_args(argv)
    device = args.device or "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_ray_check: no CUDA GPU here; nothing checked")
        return None
    with tempfile.TemporaryDirectory(prefix="lf-gpu-ray-") as tmp:
        spec = (models.get_spec(args.model) if args.model
                else testing.tiny_spec(Path(tmp) / "tiny", arch="llama", n_layers=4, hidden=64))
        results = check(spec, synthetic_texts(args.n), device, args.shard_size, Path(tmp))
    for name, same in results:
        print(f"{name}: {'identical' if same else 'DIFFERS'}")
    matched = sum(same for _, same in results)
    where = torch.cuda.get_device_name() if device.startswith("cuda") else device
    print(f"gpu_ray_check: {spec.key} on {where}, two Ray actors: {matched} of {len(results)} shards identical to "
          f"the single-process path")
    if matched != len(results):
        sys.exit(1)
    return [{"check": "ray shards identical", "shards": len(results), "matched": matched}]


if __name__ == "__main__":
    main()
