"""A separate process for the fault tests (``tests/test_faults.py``); not a test module.

``python tests/fault_worker.py embed MODEL_DIR CACHE_DIR ...`` extracts a toy dataset with a tiny model into a cache,
so a test can kill it, run two at once or break its disk. ``python tests/fault_worker.py results DIR`` rewrites a
large results file in a loop, so a test can kill it mid-write. The last stdout line is a JSON report.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

N_TEXTS = 20
SHARD_SIZE = 2


def toy_texts(n: int = N_TEXTS) -> list[str]:
    """``n`` short texts over the tiny tokenizer's vocabulary, of varied lengths, deterministic."""
    from layerfusion.testing import VOCAB_WORDS

    return [" ".join(VOCAB_WORDS[(7 * i + 3 * k) % len(VOCAB_WORDS)] for k in range(1 + i % 6)) for i in range(n)]


def config():
    """The extraction config every worker uses (two texts per shard, so a run has ten shards)."""
    from layerfusion.extract import ExtractionConfig

    return ExtractionConfig(poolings=("mean", "last"), shard_size=SHARD_SIZE, max_length=16)


def load(model_dir: str | Path):
    """The tiny model, in float32 on the CPU whatever the machine (the automatic dtype would be bf16 on a CPU with
    native bf16, a different cache key than a test process that pins the CPU flags)."""
    from layerfusion import models, testing

    return models.load(testing.tiny_spec(model_dir, arch="llama", key="tiny-fault"), device="cpu", dtype="float32")


def _fail_fsync_while(marker: Path) -> None:
    """Make ``os.fsync`` fail with ENOSPC while ``marker`` exists: a disk that fills up where no tmpfs can be
    mounted (the cache's writes go through ``files.atomic_write_bytes``, which fsyncs every file)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if marker.exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    os.fsync = fsync


def embed(args: argparse.Namespace) -> int:
    import numpy as np

    from layerfusion import embeddings, extract

    loaded = load(args.model)
    computed: list[int] = []

    def slow_forward(module, fargs, kwargs):
        computed.append(len(kwargs["input_ids"]))
        time.sleep(args.delay)

    loaded.model.register_forward_pre_hook(slow_forward, with_kwargs=True)
    if args.enospc_while:
        _fail_fsync_while(Path(args.enospc_while))
    if args.go_file:
        print("ready", flush=True)
        while not Path(args.go_file).exists():
            time.sleep(0.01)
    try:
        emb = embeddings.embed(loaded, toy_texts(), config=config(), dataset_name="toy", split="train",
                            cache_dir=args.cache, progress=False)
    except Exception as err:  # noqa: BLE001 - the report carries the error to the test
        print(json.dumps({"error": f"{type(err).__name__}: {err}", "texts_computed": sum(computed)}), flush=True)
        return 1
    if args.out:
        np.savez(args.out, **emb.vectors)
    print(json.dumps({"texts_computed": sum(computed), "path": str(emb.path)}), flush=True)
    return 0


def results(args: argparse.Namespace) -> int:
    from layerfusion.study import results as store

    rows = [{"i": i, "text": "x" * 200, "score": i / 7} for i in range(args.rows)]
    run = {"run_id": "fault-test", "chapter": "faults"}
    for round_ in range(10_000):
        store.write("big", [{**r, "round": round_} for r in rows], run, results_dir=args.dir)
        print(f"written {round_}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("embed")
    p.add_argument("model")
    p.add_argument("cache")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to sleep before each forward pass")
    p.add_argument("--out", help="write the vectors here (.npz)")
    p.add_argument("--go-file", help="print 'ready', then wait for this file before extracting")
    p.add_argument("--enospc-while", help="os.fsync fails with ENOSPC while this file exists")
    p.set_defaults(func=embed)
    p = sub.add_parser("results")
    p.add_argument("dir")
    p.add_argument("--rows", type=int, default=50_000)
    p.set_defaults(func=results)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
