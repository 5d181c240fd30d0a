"""Extraction on a local Ray instance against the single-process path: start-up cost and texts/s, in one run.

``python -m benchmarks.distributed --model minilm-l6 --dataset mr --n 512 --workers 1 2``

Every path embeds the same texts (a seeded stratified sample of the training split, ``data.load``) with the same
settings into a cold cache of its own (a temp folder): first in this process (``embeddings.embed``), then on Ray
(``RayExecutor``) once per worker count. Times are wall-clock times of the whole call, model loads included (each
Ray actor loads the model once); ``compute_s`` is the extraction time summed over the shards (from the manifest),
so ``seconds - compute_s / workers`` is roughly what scheduling, start-up and loading cost. ``ray_init_s`` is the
start of the local Ray instance, paid once per process. The speed-up is single-process seconds / Ray seconds: on a
machine with few cores expect none, since one process already uses every core. ``identical`` says whether the shard
files equal the single-process ones byte for byte. Read the ratios; absolute times move with the load of a shared
machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from layerfusion import data, embeddings, extract, models, pooling


def _shard_bytes(emb: embeddings.LayerEmbeddings) -> list[bytes]:
    return [p.read_bytes() for p in sorted(emb.path.glob("shard-*.npy"))]


def run(model_key: str, dataset: str, n: int, workers: tuple[int, ...] = (1, 2), shard_size: int = 64,
        max_length: int = 128, token_budget: int = 1024, threads_per_worker: int | None = None
        ) -> list[dict[str, Any]]:
    """Time the single-process path and a Ray run per worker count on the same ``n`` texts; one row each."""
    from layerfusion.distributed import RayExecutor

    spec = models.get_spec(model_key)
    split = data.load(dataset, max_train=n, seed=0)["train"]
    config = extract.ExtractionConfig(max_length=max_length, poolings=tuple(pooling.POOLINGS),
                                      token_budget=token_budget, shard_size=shard_size, device="cpu",
                                      dtype="float32")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lf-bench-ray-") as tmp:
        def timed(name: str, executor: Any = None) -> tuple[embeddings.LayerEmbeddings, float]:
            start = time.perf_counter()
            emb = embeddings.embed(spec, split, "train", config, dataset_name=dataset, cache_dir=Path(tmp) / name,
                                   progress=False, executor=executor)
            return emb, time.perf_counter() - start

        single, single_s = timed("single")
        reference = _shard_bytes(single)
        rows.append({"path": "single process", "workers": 1, "n": len(split), "shards": len(reference),
                     "seconds": single_s, "compute_s": single.provenance["extraction"]["seconds"],
                     "texts_per_s": len(split) / single_s, "speedup": 1.0, "ray_init_s": float("nan"),
                     "identical": True})
        start = time.perf_counter()
        with RayExecutor() as instance:
            instance.connect()
            init_s = time.perf_counter() - start
            for k in workers:
                executor = RayExecutor(workers=k, threads_per_worker=threads_per_worker)
                emb, seconds = timed(f"ray-{k}", executor)
                rows.append({"path": f"ray, {k} worker{'s' if k > 1 else ''}", "workers": k, "n": len(split),
                             "shards": len(reference), "seconds": seconds,
                             "compute_s": emb.provenance["extraction"]["seconds"],
                             "texts_per_s": len(split) / seconds, "speedup": single_s / seconds,
                             "ray_init_s": init_s, "identical": _shard_bytes(emb) == reference})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]] | None:
    """Parse arguments, run, print a table with the speed-up ratios; return the rows (None if the model is absent)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--dataset", default="mr")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to time")
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--token-budget", type=int, default=1024)
    parser.add_argument("--threads-per-worker", type=int, default=None,
                        help="torch threads per Ray worker (default: this process's, so shards are identical)")
    args = parser.parse_args(argv)
    if not models.available(args.model):
        print(f"model {args.model!r} is not installed here; install it with `{models.INSTALL_HINT}`")
        return None
    rows = run(args.model, args.dataset, args.n, tuple(args.workers), args.shard_size, args.max_length,
               args.token_budget, args.threads_per_worker)
    print(f"{args.model} on {args.dataset}: {rows[0]['n']} texts in {rows[0]['shards']} shards of "
          f"{args.shard_size}, CPU fp32; local Ray instance started in {rows[-1]['ray_init_s']:.1f} s")
    print("| path | workers | seconds | compute seconds | texts/s | speedup | identical shards |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['path']} | {r['workers']} | {r['seconds']:.2f} | {r['compute_s']:.2f} | {r['texts_per_s']:.1f} "
              f"| {r['speedup']:.2f} | {'yes' if r['identical'] else 'NO'} |")
    return rows


if __name__ == "__main__":
    main()
