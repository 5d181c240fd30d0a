"""Extraction on a Ray cluster, into the same content-addressed cache as the single-process path.

``RayExecutor`` is an ``embeddings.Executor``: pass it as ``executor=`` to ``embeddings.embed`` / ``embed_all`` (or
``embeddings.embed``). The driver plans every entry and its missing shards under the entries' locks, as without Ray.
Each missing shard becomes one row of a Ray dataset (plan index, shard index, the shard's texts); a pool of Ray Data
actors, each of which loads the model once, runs ``embeddings.compute_shard`` on its rows, so every shard is batched
exactly as in one process and written atomically into the cache folder by the actor that computed it. The actor
returns the shard's manifest record; the driver, the only manifest writer, records each one as it arrives and marks
the entries complete at the end.

The cache is the checkpoint, not Ray: a shard whose computation raises is retried by its actor up to ``max_retries``
times; a worker process that dies is restarted by Ray Data and its shard computed again; when a shard's retries run
out the run raises, and every shard recorded until then stays in the cache, so a re-run, with or without Ray,
computes only what is missing. The cache folder must be one filesystem that the driver and every worker see.

Ray is an optional dependency (``pip install "layerfusion[distributed]"``), imported only when a ``RayExecutor`` is
created.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerfusion import embeddings, extract
from layerfusion.progress import progress_bar

INSTALL_HINT = 'pip install "layerfusion[distributed]"'
logger = logging.getLogger(__name__)


def require_ray() -> Any:
    """Import and return ``ray`` (with Ray Data); if it is missing, raise ImportError naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part of the extra used here
    except ImportError as err:
        raise ImportError(f"Ray is not installed; distributed extraction needs the 'distributed' extra: "
                          f"{INSTALL_HINT} (everything else in layerfusion works without it)") from err
    return ray


@dataclass(frozen=True)
class Resources:
    """What one run asks of the cluster: ``workers`` actors, each with ``cpus`` and ``gpus``, on ``device``,
    with ``threads`` torch CPU threads (None: leave Ray's setting)."""

    workers: int
    cpus: float
    gpus: float
    device: str
    threads: int | None


class ShardWorker:
    """A Ray Data actor: loads the model once, then computes and writes the shards of the rows it is given.

    ``plans`` travel without their texts (each row carries its shard's texts); ``load`` is called as
    ``load(spec, device=..., dtype=..., cache_dir=...)``.
    """

    def __init__(self, plans: list[embeddings.EntryPlan], device: str, load: Callable[..., Any],
                 threads: int | None, max_retries: int) -> None:
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        first = plans[0]
        self.plans = plans
        self.max_retries = max_retries
        self.loaded = load(first.spec, device=device, dtype=first.model["dtype"], cache_dir=first.cache_dir)
        first.check(self.loaded)
        self.runs: dict[int, str] = {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Compute the batch's shards; one output row (job, shard, shard record, run record as JSON) per shard."""
        out: dict[str, list[Any]] = {"job": [], "shard": [], "record": [], "run": []}
        for k, i, texts in zip(batch["job"], batch["shard"], batch["texts"]):
            k, i = int(k), int(i)
            plan = self.plans[k]
            info = self._compute(plan, i, [str(t) for t in texts])
            if k not in self.runs:
                self.runs[k] = json.dumps(embeddings.run_record(self.loaded, plan, executor="ray"), default=str)
            out["job"].append(k)
            out["shard"].append(i)
            out["record"].append(json.dumps(info))
            out["run"].append(self.runs[k])
        return {key: np.asarray(values) for key, values in out.items()}

    def _compute(self, plan: embeddings.EntryPlan, i: int, texts: list[str]) -> dict[str, Any]:
        """``compute_shard`` with up to ``max_retries`` more attempts when it raises.

        Our own loop, because Ray Data's retry of a raising task (``DataContext.actor_task_retry_on_errors``) is
        bounded only by the actors' ``max_task_retries``, which Ray Data sets to unlimited: a shard that always
        fails would be retried forever.
        """
        failures = 0
        while True:
            try:
                return embeddings.compute_shard(self.loaded, plan, i, texts)
            except Exception as err:  # noqa: BLE001 - any failure of a shard is retried, then re-raised
                failures += 1
                if failures > self.max_retries:
                    raise
                logger.warning("shard %d of %s failed (%s: %s); retry %d of %d", i, plan.entry.path,
                               type(err).__name__, err, failures, self.max_retries)


def _default_load(spec: Any, **kwargs: Any) -> Any:
    from layerfusion import models

    return models.load(spec, **kwargs)


class RayExecutor:
    """Compute missing cache shards on a Ray cluster (an ``embeddings.Executor``); one actor pool per call.

    ``address``: a running cluster (``"auto"``, ``"host:6379"``, ``"ray://host:10001"``), or None for Ray's default
    (``$RAY_ADDRESS``, else a cluster ``ray start`` started on this machine, else a new local instance). If Ray is
    already initialised in this process it is used as is.
    ``workers``: actors (default: one per GPU, or one per node on CPUs). ``gpus_per_worker``: default 1 where the
    cluster has GPUs and ``device`` is not CPU, else 0. ``cpus_per_worker``: default a fraction of the cluster's
    CPUs that leaves room for Ray Data's own tasks (whole-CPU actors on all CPUs can hang, Ray issue #44687).
    ``threads_per_worker``: torch CPU threads of a CPU actor, default this process's ``torch.get_num_threads()``, so
    a shard's bytes equal those the single-process path writes here (fewer threads change the last bits).
    ``max_retries``: attempts after a failure per shard. ``load``: how an actor loads the model (picklable; default
    ``models.load``). ``init_kwargs`` go to ``ray.init``. A Ray instance this executor started is shut down by
    ``close()`` (or leaving a ``with`` block).
    """

    def __init__(self, address: str | None = None, *, workers: int | None = None,
                 gpus_per_worker: float | None = None, cpus_per_worker: float | None = None,
                 threads_per_worker: int | None = None, max_retries: int = 3,
                 load: Callable[..., Any] | None = None, init_kwargs: dict[str, Any] | None = None) -> None:
        require_ray()
        for name, value in (("workers", workers), ("threads_per_worker", threads_per_worker)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"RayExecutor {name} must be a positive integer or None, got {value!r}")
        for name, value in (("gpus_per_worker", gpus_per_worker), ("cpus_per_worker", cpus_per_worker)):
            if value is not None and not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"RayExecutor {name} must be a number >= 0 or None, got {value!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"RayExecutor max_retries must be an integer >= 0, got {max_retries!r}")
        self.address = address or None
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.cpus_per_worker = cpus_per_worker
        self.threads_per_worker = threads_per_worker
        self.max_retries = max_retries
        self.load = load or _default_load
        self.init_kwargs = dict(init_kwargs or {})
        self._started = False

    def connect(self) -> Any:
        """Initialise Ray in this process unless it already is; return the ``ray`` module."""
        ray = require_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, **{"logging_level": logging.WARNING, **self.init_kwargs})
            self._started = True
        return ray

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started:
            require_ray().shutdown()
            self._started = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def resources(self, requested_device: str | None = None) -> Resources:
        """Actors, CPUs, GPUs, device and threads a run would use on the connected cluster."""
        import torch

        ray = self.connect()
        total = ray.cluster_resources()
        total_gpus, total_cpus = float(total.get("GPU", 0)), float(total.get("CPU", 1))
        on_cpu = requested_device is not None and torch.device(requested_device).type == "cpu"
        gpus = self.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if total_gpus >= 1 and not on_cpu else 0.0
        if gpus > 0:
            if gpus > total_gpus:
                raise ValueError(f"RayExecutor gpus_per_worker={gpus} but the cluster has {total_gpus:g} GPUs; "
                                 "lower it, or pass gpus_per_worker=0 for CPU workers")
            workers = self.workers or max(1, int(total_gpus // gpus))
            device, threads = "cuda", self.threads_per_worker  # each actor sees its own GPU(s) from cuda:0
        else:
            nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
            workers = self.workers or max(1, nodes)
            device, threads = requested_device or "cpu", self.threads_per_worker or torch.get_num_threads()
        cpus = self.cpus_per_worker
        if cpus is None:
            cpus = math.floor(min(1.0, total_cpus / (workers + 1)) * 1000) / 1000
        return Resources(workers=workers, cpus=float(cpus), gpus=float(gpus), device=device, threads=threads)

    def device(self, requested: str | None) -> str:
        """The device the actors will run on: CUDA when they get GPUs, else ``requested`` or CPU."""
        return self.resources(requested).device

    def run(self, plans: list[embeddings.EntryPlan], record: embeddings.ShardDone, *, progress: bool = True
            ) -> None:
        """Compute every missing shard of ``plans`` (one model) on an actor pool and hand each back to ``record``."""
        ray = self.connect()
        from ray.data import ActorPoolStrategy, DataContext

        res = self.resources(plans[0].config.device)
        rows = [{"job": k, "shard": i, "texts": p.shard_texts(i)} for k, p in enumerate(plans) for i in p.missing]
        shipped = [dataclasses.replace(p, texts=[], labels=None) for p in plans]
        context = DataContext.get_current()
        saved = {name: getattr(context, name) for name in ("enable_progress_bars", "print_on_execution_start")}
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        try:
            dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                ShardWorker, batch_size=1,
                # One shard in flight per actor: a shard is seconds of work, so a queue behind a busy actor would
                # only leave the others idle at the end.
                compute=ActorPoolStrategy(size=min(res.workers, len(rows)), max_tasks_in_flight_per_actor=1),
                fn_constructor_kwargs={"plans": shipped, "device": res.device, "load": self.load,
                                       "threads": res.threads, "max_retries": self.max_retries},
                num_cpus=res.cpus, num_gpus=res.gpus or None)
        finally:
            for name, value in saved.items():
                setattr(context, name, value)
        done = 0
        total = sum(len(p.entry.rows(i)) for p in plans for i in p.missing)
        with progress_bar(total, f"embed {plans[0].spec.key} on Ray ({min(res.workers, len(rows))} workers)",
                          progress) as bar:
            try:
                for row in dataset.iter_rows():
                    k, i = int(row["job"]), int(row["shard"])
                    record(k, i, json.loads(row["record"]), json.loads(row["run"]))
                    done += 1
                    bar.update(len(plans[k].entry.rows(i)))
            except Exception as err:  # noqa: BLE001 - Ray wraps worker errors in its own types; say what was kept
                raise RuntimeError(f"Ray extraction of {plans[0].spec.key!r} stopped after {done} of {len(rows)} "
                                   f"shards ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                                   "the finished shards are in the cache and a re-run computes the rest") from err
