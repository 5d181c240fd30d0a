"""All-layer extraction: one pooled vector per text per layer, fast and batch-invariant.

``extract_texts`` is the engine: it tokenizes once, sorts texts by token length into batches bounded by a token
budget (padded tokens = batch size x longest), runs the ``AutoModel`` under ``torch.inference_mode``, pools every
kept layer as soon as the layer has run (so only one batch's token states of one layer are alive at a time), stops
after the deepest requested layer, and restores the input order. On out-of-memory it halves the batch and retries.
A model that produces NaN or inf fails at once, naming the model, the layer and the text.

``embed`` and ``LayerEmbeddings``, the cached one-call API the notebooks use, live in ``layerfusion.embeddings``.
Progress (texts/s, ETA) goes to the output, or to the file ``$LAYERFUSION_PROGRESS_FILE`` names
(``layerfusion.progress``).

Hidden-state indices follow ``output_hidden_states``: 0 is the embedding layer (the input of block 0), i is the
output of block i, and the last index L is ``last_hidden_state`` (after the final norm in Llama-family models).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from layerfusion import pooling as pooling_mod
from layerfusion.checks import texts as check_texts
from layerfusion.devices import dtype_name
from layerfusion.models.blocks import block_list
from layerfusion.models.spec import format_texts
from layerfusion.progress import progress_bar

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class ExtractionConfig:
    """What to extract and how to batch it.

    ``layers`` are hidden-state indices (None = all L+1; negatives count from the end); ``token_budget`` bounds
    padded tokens per batch; ``stop_at_deepest`` skips the blocks above the deepest kept layer; ``shard_size`` is the
    number of texts per cache shard; ``dtype``/``device`` None follow ``layerfusion.devices`` (bf16 on CUDA and on
    CPUs with native bf16, fp32 elsewhere). ``max_padding`` caps the fraction of a batch's token positions that are
    padding (a batch closes before a text that would exceed it; 1.0 turns the cap off): without it a large token
    budget over few texts pads short texts to the longest of hundreds (2.75x the real tokens on 400 SST-2 texts
    at a budget of 16384).
    """

    max_length: int = 512
    poolings: tuple[str, ...] = ("mean", "last")
    layers: tuple[int, ...] | None = None
    token_budget: int = 16384
    max_batch_size: int = 256
    max_padding: float = 0.1
    stop_at_deepest: bool = True
    shard_size: int = 2048
    dtype: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "poolings", pooling_mod.check_poolings(self.poolings))
        if self.layers is not None:
            layers = tuple(int(x) for x in self.layers)
            if not layers:
                raise ValueError("ExtractionConfig.layers is empty; pass None for all layers or some indices")
            object.__setattr__(self, "layers", layers)
        for name in ("max_length", "token_budget", "max_batch_size", "shard_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ExtractionConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.max_padding, bool) or not isinstance(self.max_padding, (int, float)) \
                or not 0.0 <= self.max_padding <= 1.0:
            raise ValueError(f"ExtractionConfig.max_padding must be a fraction in [0, 1], got {self.max_padding!r}")
        if self.dtype is not None and not isinstance(self.dtype, str):
            object.__setattr__(self, "dtype", dtype_name(self.dtype))
        if self.device is not None and not isinstance(self.device, str):
            object.__setattr__(self, "device", str(self.device))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (manifests, provenance)."""
        out = asdict(self)
        out["poolings"] = list(self.poolings)
        out["layers"] = None if self.layers is None else list(self.layers)
        return out


def resolve_layers(layers: Sequence[int] | None, n_hidden_states: int) -> tuple[int, ...]:
    """Kept hidden-state indices, sorted and de-duplicated, negatives resolved; out-of-range raises ValueError."""
    if layers is None:
        return tuple(range(n_hidden_states))
    bad = [x for x in layers if not -n_hidden_states <= int(x) < n_hidden_states]
    if bad:
        raise ValueError(f"layers {bad} are out of range for a model with {n_hidden_states} hidden states "
                         f"(0..{n_hidden_states - 1}, or negative from the end)")
    return tuple(sorted({int(x) % n_hidden_states for x in layers}))


# --- tokenizing and batching -------------------------------------------------------------------------------------


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> tuple[list[list[int]], np.ndarray]:
    """Token ids per text (special tokens added, truncated to ``max_length``) and a bool mask of truncated texts."""
    full = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    truncated = np.array([len(ids) > max_length for ids in full], dtype=bool)
    if truncated.any():
        which = np.flatnonzero(truncated)
        cut = tokenizer([texts[i] for i in which], add_special_tokens=True, truncation=True,
                        max_length=max_length)["input_ids"]
        for i, ids in zip(which, cut):
            full[i] = ids
    return [list(ids) for ids in full], truncated


def plan_batches(lengths: np.ndarray, token_budget: int, max_batch_size: int, start: int = 0,
                 order: np.ndarray | None = None, max_padding: float = 1.0) -> Iterator[np.ndarray]:
    """Yield index arrays of batches, longest texts first, each with batch x longest <= ``token_budget`` (a text
    longer than the budget goes alone), at most ``max_batch_size`` texts and at most ``max_padding`` of its token
    positions padding (1.0: no limit). ``overhead.padded_tokens`` counts with this plan."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable") if order is None else order
    pos = start
    while pos < len(order):
        batch = _next_batch(order, lengths, pos, token_budget, max_batch_size, max_padding)
        yield batch
        pos += len(batch)


def _next_batch(order: np.ndarray, lengths: np.ndarray, pos: int, token_budget: int, max_batch_size: int,
                max_padding: float = 1.0) -> np.ndarray:
    longest = int(lengths[order[pos]])
    size = max(1, min(max_batch_size, token_budget // max(longest, 1), len(order) - pos))
    if max_padding < 1.0 and size > 1:
        # Lengths fall along ``order``, so the padded fraction of the first k texts grows with k: keep the longest
        # prefix whose real tokens are at least (1 - max_padding) of its padded positions.
        real = np.cumsum(lengths[order[pos:pos + size]])
        size = int(np.sum(real >= (1.0 - max_padding) * longest * np.arange(1, size + 1)))
    return order[pos:pos + size]


def _pad(ids: list[list[int]], pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) padded to the longest sequence on ``side``."""
    width = max(len(x) for x in ids)
    out = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        sl = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        out[row, sl] = seq
        mask[row, sl] = 1
    return out, mask


# --- the forward pass with layer taps ----------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised from a hook once the deepest requested layer has been pooled."""


class _Taps:
    """Forward hooks that pool kept hidden states as each block finishes and stop after the deepest one.

    Every kept layer's poolings go into one float32 buffer per batch, (n_poolings, B, n_kept, d), on the model's
    device. On a CPU the exact kernels fill it (``pooling.pool``: bit-identical to the reference). On an
    accelerator the ``Pooling.fast`` kernels read the states in the compute dtype and accumulate in float32 (no
    float32 copy of the states), the divisions happen once per batch, and ``run`` returns without waiting: the
    finite-check reduction and the copy into pinned host memory are queued behind the forward pass and an event
    marks their end, so the host waits only when it needs the numbers (``_Batch.wait``), after it has queued the
    next batch's forward pass. No host synchronisation happens per layer.
    """

    def __init__(self, model: Any, layers: tuple[int, ...], poolings: tuple[str, ...], stop: bool) -> None:
        self.model = model
        self.blocks = block_list(model)
        self.n_blocks = len(self.blocks)
        self.layers = layers
        self.column = {layer: i for i, layer in enumerate(layers)}
        self.poolings = poolings
        self.deepest = max(layers)
        self.tie_last = bool(getattr(model.config, "tie_last_hidden_states", True))
        self.stop = stop and self.deepest < self.n_blocks
        self.mask: Any = None
        self.buffer: Any = None
        self.fast = False
        self.handles: list[Any] = []

    def __enter__(self) -> "_Taps":
        self.handles.append(self.blocks[0].register_forward_pre_hook(self._pre_hook, with_kwargs=True))
        for i, block in enumerate(self.blocks[: self.deepest]):
            self.handles.append(block.register_forward_hook(self._make_hook(i + 1)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _pool(self, index: int, hidden: Any) -> None:
        col = self.column[index]
        pooling_mod.pool_into(hidden, self.mask, self.poolings, self.buffer[:, :, col], self.fast)

    def _pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        if 0 in self.column:
            self._pool(0, args[0] if args else kwargs["hidden_states"])
        if self.stop and self.deepest == 0:
            raise _StopForward

    def _make_hook(self, index: int) -> Any:
        def hook(module: Any, args: tuple, output: Any) -> None:
            if index in self.column and not (index == self.n_blocks and self.tie_last):
                self._pool(index, output[0] if isinstance(output, tuple) else output)
            if self.stop and index == self.deepest:
                raise _StopForward
        return hook

    def run(self, input_ids: Any, mask: Any, kwargs: dict[str, Any]) -> "_Batch":
        """Forward one padded batch; return its pooled vectors (n_poolings, B, n_kept, d) on their way to the host."""
        import torch

        hidden = int(self.model.config.hidden_size)
        self.fast = _fast_kernels(input_ids.device)
        self.mask = pooling_mod.mask_info(mask)
        self.buffer = torch.empty(len(self.poolings), len(input_ids), len(self.layers), hidden,
                                  dtype=torch.float32, device=input_ids.device)
        try:
            try:
                result = self.model(input_ids=input_ids, attention_mask=mask, **kwargs)
            except _StopForward:
                result = None
            if result is not None and self.n_blocks in self.column and self.tie_last:
                self._pool(self.n_blocks, result.last_hidden_state)
            if self.fast:
                pooling_mod.finish_fast(self.buffer, self.mask, self.poolings, int(input_ids.shape[1]))
            return _Batch.ship(self.buffer)
        finally:
            self.mask = self.buffer = None


def _fast_kernels(device: Any) -> bool:
    """Whether to pool with ``Pooling.fast`` (compute-dtype reads, float32 accumulation) on ``device``: on every
    accelerator; not on a CPU, where the exact kernels keep caches bit-identical to earlier versions."""
    return getattr(device, "type", str(device)) != "cpu"


class _Batch:
    """One batch's pooled vectors (n_poolings, B, n_kept, d) float32 and its (B, n_kept) finite mask, on the host
    or on their way there (an asynchronous copy into pinned memory and the event that marks its end)."""

    def __init__(self, vectors: Any, finite: Any, event: Any = None) -> None:
        self.vectors, self.finite, self.event = vectors, finite, event

    @classmethod
    def ship(cls, buffer: Any) -> "_Batch":
        """Start moving ``buffer`` to the host: a CPU buffer as is; a CUDA one by a non-blocking copy into pinned
        memory (one per batch from torch's caching host allocator, so batch k's copy overlaps batch k+1's forward);
        another device synchronously."""
        import torch

        finite = torch.isfinite(buffer).all(dim=-1).all(dim=0)
        if buffer.device.type == "cpu":
            return cls(buffer, finite)
        if buffer.device.type != "cuda":
            return cls(buffer.cpu(), finite.cpu())
        host = torch.empty(buffer.shape, dtype=buffer.dtype, pin_memory=True)
        host_finite = torch.empty(finite.shape, dtype=finite.dtype, pin_memory=True)
        host.copy_(buffer, non_blocking=True)
        host_finite.copy_(finite, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return cls(host, host_finite, event)

    def wait(self) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, finite) as numpy arrays, once the copy has landed (blocks only on this batch's event)."""
        if self.event is not None:
            self.event.synchronize()
        return self.vectors.numpy(), self.finite.numpy()


def _forward_kwargs(model: Any) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


class Extraction(dict):
    """pooling -> float32 array (n, n_layers_kept, d) in input order, plus run statistics as attributes."""

    def __init__(self, vectors: dict[str, np.ndarray], *, layers: tuple[int, ...], truncated: np.ndarray,
                 real_tokens: int, padded_tokens: int, seconds: float, n_batches: int) -> None:
        super().__init__(vectors)
        self.layers = layers
        self.truncated = truncated
        self.n_truncated = int(truncated.sum())
        self.real_tokens = real_tokens
        self.padded_tokens = padded_tokens
        self.seconds = seconds
        self.n_batches = n_batches


def _is_oom(err: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
    return isinstance(err, oom) or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def _free_memory(device: Any) -> None:
    import gc

    import torch

    gc.collect()
    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def extract_texts(loaded: Any, texts: Sequence[str], config: ExtractionConfig, progress: bool = True, *,
                  bar: Any = None) -> Extraction:
    """Pooled vectors of ``texts`` for every kept layer and pooling: pooling -> float32 (n, n_layers_kept, d).

    ``loaded`` is a ``models.LoadedModel`` (its device and dtype are used as loaded). Texts are length-sorted into
    token-budget batches and the output is in input order. A batch that runs out of memory is halved and retried
    (the budget stays halved for the rest of the run); only a single text that does not fit raises. ``bar`` lets a
    caller share one progress bar across calls. The result also carries ``n_truncated``, ``real_tokens``,
    ``padded_tokens``, ``seconds`` and ``layers``.
    """
    import torch

    texts = check_texts(texts)
    texts = format_texts(loaded.spec, texts, loaded.tokenizer)  # the model's text prefix / template, if any
    layers = resolve_layers(config.layers, int(loaded.model.config.num_hidden_layers) + 1)
    tok = loaded.tokenizer
    ids, truncated = tokenize(tok, texts, config.max_length)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    hidden = int(loaded.model.config.hidden_size)
    out = {p: np.empty((len(texts), len(layers), hidden), dtype=np.float32) for p in config.poolings}
    accepted = _forward_kwargs(loaded.model)
    side = getattr(tok, "padding_side", "right")
    own_bar = bar is None
    if own_bar:
        bar = progress_bar(len(texts), f"extract {getattr(loaded.spec, 'key', '')}".strip(), progress)
    order = np.argsort(-lengths, kind="stable")
    budget, pos, padded, n_batches, real_done = int(config.token_budget), 0, 0, 0, 0
    start = time.perf_counter()
    pending: tuple[np.ndarray, _Batch] | None = None

    def land(batch: np.ndarray, shipped: _Batch) -> None:
        # Wait for one batch's vectors (queued before the batch now running), check them and put them in place.
        nonlocal real_done
        vectors, finite = shipped.wait()
        _check_finite(loaded, finite, batch, layers, texts)
        for i, name in enumerate(config.poolings):
            out[name][batch] = vectors[i]
        real_done += int(lengths[batch].sum())
        bar.update(len(batch))
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(tok_s=f"{real_done / elapsed:,.0f}", refresh=False)

    try:
        with _Taps(loaded.model, layers, config.poolings, config.stop_at_deepest) as taps, torch.inference_mode():
            while pos < len(order):
                batch = _next_batch(order, lengths, pos, budget, config.max_batch_size, config.max_padding)
                try:
                    shipped = _run_batch(taps, loaded, [ids[i] for i in batch], side, accepted)
                except Exception as err:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                    if not _is_oom(err):
                        raise
                    _free_memory(loaded.device)
                    if len(batch) == 1:
                        raise RuntimeError(f"out of memory on a single text of {lengths[batch[0]]} tokens; lower "
                                           "ExtractionConfig.max_length or use a larger device") from err
                    budget = max(1, (len(batch) // 2) * int(lengths[batch[0]]))
                    logger.warning("out of memory on a batch of %d texts; retrying with token budget %d",
                                   len(batch), budget)
                    continue
                if pending is not None:  # the previous batch lands while this one runs on the device
                    land(*pending)
                pending = (batch, shipped)
                pos += len(batch)
                n_batches += 1
                padded += len(batch) * int(lengths[batch[0]])
            if pending is not None:
                land(*pending)
    finally:
        if own_bar:
            bar.close()
    return Extraction(out, layers=layers, truncated=truncated, real_tokens=int(lengths.sum()),
                      padded_tokens=padded, seconds=time.perf_counter() - start, n_batches=n_batches)


def _check_finite(loaded: Any, finite: np.ndarray, batch: np.ndarray, layers: tuple[int, ...],
                  texts: list[str]) -> None:
    """Raise ValueError naming the model, the hidden-state layer and the text where the model produced NaN or inf.

    Checked per batch on the pooled vectors (what would be stored; ``finite`` (B, n_kept) says where every pooling's
    vector is finite, reduced on the device), so a model that overflows its dtype fails at once instead of filling
    the cache with NaN; the first affected text (input order) and its shallowest bad layer are named.
    """
    bad = ~np.asarray(finite, dtype=bool)
    if not bad.any():
        return
    rows = np.flatnonzero(bad.any(axis=1))
    row = rows[np.argmin(batch[rows])]
    text, layer = int(batch[row]), layers[int(np.argmax(bad[row]))]
    dtype = dtype_name(getattr(loaded, "dtype", "?"))
    advice = ("load it in float32 (ExtractionConfig(dtype='float32') or models.load(..., dtype='float32'))"
              if dtype != "float32" else "check its weights and this input; float32 did not help")
    raise ValueError(f"model {getattr(loaded.spec, 'key', '?')!r} produced NaN/inf at hidden-state layer {layer} "
                     f"for text {text} ({texts[text][:40]!r}; {len(rows)} of the {len(batch)} texts in its batch "
                     f"affected) running in {dtype}; {advice}")


def _run_batch(taps: _Taps, loaded: Any, ids: list[list[int]], side: str, accepted: set[str]) -> _Batch:
    import torch

    input_ids, mask = _pad(ids, int(loaded.tokenizer.pad_token_id), side)
    device = torch.device(loaded.device)
    if device.type == "cuda":  # pinned and non-blocking: a pageable copy would wait for the batch still running
        input_ids = torch.from_numpy(input_ids).pin_memory().to(device, non_blocking=True)
        mask = torch.from_numpy(mask).pin_memory().to(device, non_blocking=True)
    else:
        input_ids = torch.from_numpy(input_ids).to(device)
        mask = torch.from_numpy(mask).to(device)
    kwargs: dict[str, Any] = {}
    if "position_ids" in accepted:
        # Real tokens get positions 0..n-1 whatever the padding side (HF's default arange shifts left-padded texts).
        arange = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        kwargs["position_ids"] = torch.where(mask.bool(), mask.cumsum(dim=1) - 1, arange)
    if "use_cache" in accepted:
        kwargs["use_cache"] = False
    return taps.run(input_ids, mask, kwargs)

