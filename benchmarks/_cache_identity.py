"""Cache bytes before and after an engine change: write real cache entries with whichever ``layerfusion`` is
imported, and print each shard's sha256 (run it twice, with two checkouts on ``PYTHONPATH``, and diff the outputs).

``PYTHONPATH=<old checkout>/lib python -m benchmarks._cache_identity --cache-dir /tmp/old > old.txt``
``PYTHONPATH=<new checkout>/lib:<new checkout> python -m benchmarks._cache_identity --cache-dir /tmp/new > new.txt``
``diff old.txt new.txt`` (empty: every shard file is byte-identical)

The entries are real: the shipped models (``--models``, each in fp32 and bf16 unless ``--dtypes`` says otherwise) on
the first ``--n`` training texts of shipped datasets, every pooling, small shards and a small token budget so that
several batches and shards are written. Issue #21 asks that the GPU output path leave CPU caches unchanged; the
cache key and file names include the extraction settings, so the same key in both runs is part of the check.
Not a benchmark module (the leading underscore keeps ``python -m benchmarks`` off it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from layerfusion import embeddings, extract, paths


def main(argv: list[str] | None = None) -> list[str]:
    """Write the entries, print one line per shard (model, dtype, dataset, entry, shard, sha256, dtype); return them."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks._cache_identity", description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", required=True, help="an empty folder for this run's cache")
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "minilm-l6"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--datasets", nargs="+", default=["sst2", "r8"])
    parser.add_argument("--n", type=int, default=300, help="training texts per dataset")
    args = parser.parse_args(argv)
    lines = []
    for dataset in args.datasets:
        with open(paths.data_dir() / dataset / "train.jsonl", encoding="utf-8") as fh:
            texts = [json.loads(line)["text"] for line in fh if line.strip()][:args.n]
        for model in args.models:
            for dtype in args.dtypes:
                config = extract.ExtractionConfig(poolings=("mean", "last", "mean_pad"), shard_size=128,
                                                  token_budget=2048, max_length=256, device="cpu", dtype=dtype)
                emb = embeddings.embed(model, texts, None, config, dataset_name=dataset, cache_dir=args.cache_dir,
                                       progress=False)
                for shard in sorted(Path(emb.path).glob("shard-*.npy")):
                    line = (f"{model} {dtype} {dataset} {Path(emb.path).name} {shard.name} "
                            f"{hashlib.sha256(shard.read_bytes()).hexdigest()} {np.load(shard).dtype}")
                    print(line, flush=True)
                    lines.append(line)
    return lines


if __name__ == "__main__":
    main()
