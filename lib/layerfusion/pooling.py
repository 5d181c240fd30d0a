"""Pool token states into one vector per text: pure functions on torch tensors, float32 out.

``hidden`` is (B, T, d) in any float dtype; ``mask`` is (B, T) of 0/1 with padding on either side, or its
``MaskInfo`` (computed once per batch by ``mask_info``). Every pooling returns float32 (B, d) so bf16/fp16 model
outputs are accumulated in fp32.

``POOLINGS`` is the registry (name -> ``Pooling``: label, exact kernel, accelerator kernel, divisor); adding a
pooling is one ``register_pooling`` call here, and settings, the CLI and the engine take names from it.

``mean`` and ``last`` depend only on a text's own tokens, so a text gets the same vector whatever it is batched
with. ``mean_pad`` averages over padding positions too: that is what the authors' and LLMEmbed's code do
(``hidden_states[-1].mean(dim=1)`` after ``padding=True``), and it is kept only to reproduce them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch


class MaskInfo(NamedTuple):
    """What the poolings need from a batch's mask, computed once per batch and reused for every layer.

    ``keep`` (B, T, 1) bool marks real tokens; ``count`` (B, 1) float32 is each row's number of real tokens (at
    least 1); ``last`` (B,) is each row's last real position and ``flat_last`` the same as an index into the
    (B * T) flattened token axis. The extraction engine pools every layer of a batch with one ``MaskInfo`` (pass it
    where a function takes ``mask``) instead of rebuilding these from the mask for every layer and pooling.
    """

    keep: torch.Tensor
    count: torch.Tensor
    last: torch.Tensor
    flat_last: torch.Tensor


def mask_info(mask: torch.Tensor, device: torch.device | str | None = None) -> MaskInfo:
    """The ``MaskInfo`` of a (B, T) 0/1 mask (left or right padding), on ``device`` (default: the mask's)."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be (batch, tokens), got shape {tuple(mask.shape)}")
    keep = mask.to(device=device or mask.device, dtype=torch.bool)
    positions = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)
    last = torch.where(keep, positions, -1).max(dim=1).values.clamp(min=0)
    count = keep.sum(dim=1, keepdim=True).clamp(min=1).float()
    flat_last = torch.arange(keep.shape[0], device=keep.device) * keep.shape[1] + last
    return MaskInfo(keep.unsqueeze(-1), count, last, flat_last)


def _check(hidden: torch.Tensor, mask: torch.Tensor | MaskInfo | None = None) -> None:
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (batch, tokens, dim), got shape {tuple(hidden.shape)}")
    shape = tuple(mask.keep.shape[:2]) if isinstance(mask, MaskInfo) else None if mask is None else tuple(mask.shape)
    if shape is not None and shape != tuple(hidden.shape[:2]):
        raise ValueError(f"mask shape {shape} does not match hidden's (batch, tokens) {tuple(hidden.shape[:2])}")


def _info(hidden: torch.Tensor, mask: torch.Tensor | MaskInfo) -> MaskInfo:
    _check(hidden, mask)
    return mask if isinstance(mask, MaskInfo) else mask_info(mask, hidden.device)


def _mean(hidden32: torch.Tensor, info: MaskInfo) -> torch.Tensor:
    return torch.where(info.keep, hidden32, 0.0).sum(dim=1) / info.count


def _last(hidden: torch.Tensor, info: MaskInfo) -> torch.Tensor:
    return hidden.flatten(0, 1).index_select(0, info.flat_last).float()


def _mean_pad(hidden32: torch.Tensor, info: MaskInfo) -> torch.Tensor:
    return hidden32.mean(dim=1)


def _sum_real(hidden: torch.Tensor, info: MaskInfo, out: torch.Tensor) -> None:
    # ``where`` in the compute dtype selects values (exact); the sum accumulates in float32 without a float32 copy.
    torch.sum(torch.where(info.keep, hidden, 0), dim=1, dtype=torch.float32, out=out)


def _sum_all(hidden: torch.Tensor, info: MaskInfo, out: torch.Tensor) -> None:
    torch.sum(hidden, dim=1, dtype=torch.float32, out=out)


def _gather_last(hidden: torch.Tensor, info: MaskInfo, out: torch.Tensor) -> None:
    out.copy_(hidden.flatten(0, 1).index_select(0, info.flat_last))


@dataclass(frozen=True)
class Pooling:
    """One pooling, everything the library knows about it (adding a pooling is adding one ``Pooling`` here).

    ``exact(states, info)`` is the reference kernel: float32 (B, d) from float32 states (``float_input``; else the
    states in their own dtype, for a kernel that only reads values). The CPU path of the extraction engine uses it,
    so CPU caches stay bit-identical across engine changes. ``fast(states, info, out)`` is the accelerator path: it
    reads the states in the compute dtype, accumulates in float32 and writes the *unnormalised* result into the
    float32 view ``out``; ``divisor(info, n_tokens)`` (None: none) is what the engine divides it by, once per
    batch for all layers. Both paths give the same numbers up to float32 summation order (tests/test_pooling.py).
    ``label`` names the pooling in tables and figures; ``batch_invariant`` says whether a text's vector is
    independent of the texts batched with it.
    """

    name: str
    label: str
    exact: Callable[[torch.Tensor, MaskInfo], torch.Tensor]
    fast: Callable[[torch.Tensor, MaskInfo, torch.Tensor], None]
    divisor: Callable[[MaskInfo, int], torch.Tensor | None]
    float_input: bool = True
    batch_invariant: bool = True

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor | MaskInfo | None = None) -> torch.Tensor:
        """The float32 (B, d) vectors of ``hidden`` (B, T, d) under ``mask`` (or its ``MaskInfo``)."""
        if mask is None:
            _check(hidden)
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        info = _info(hidden, mask)
        return self.exact(hidden.float() if self.float_input else hidden, info)


POOLINGS: dict[str, Pooling] = {}
"""The pooling registry: name -> ``Pooling``. Settings, the CLI, the extraction engine and the chapters read names,
labels and kernels from here."""


def register_pooling(spec: Pooling) -> Pooling:
    """Add ``spec`` to ``POOLINGS`` under its name (a name may be registered once)."""
    if not isinstance(spec, Pooling) or not spec.name:
        raise ValueError(f"register_pooling: {spec!r} is not a named Pooling; build one with Pooling(name=...)")
    if spec.name in POOLINGS:
        raise ValueError(f"register_pooling: pooling {spec.name!r} is already registered; choose another name")
    POOLINGS[spec.name] = spec
    return spec


register_pooling(Pooling("mean", "masked mean", _mean, _sum_real, lambda info, n: info.count))
register_pooling(Pooling("last", "last token", _last, _gather_last, lambda info, n: None, float_input=False))
register_pooling(Pooling("mean_pad", "mean over padding", _mean_pad, _sum_all,
                         lambda info, n: torch.full_like(info.count, float(n)), batch_invariant=False))


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor | MaskInfo) -> torch.Tensor:
    """Mean of the real-token states (mask == 1), in float32; independent of padding side and length.

    Padding positions are excluded with ``where`` rather than multiplied by 0, so a NaN in a padded position (some
    attention kernels produce them for fully-masked rows) cannot leak into the mean.
    """
    return POOLINGS["mean"](hidden, mask)


def last_token(hidden: torch.Tensor, mask: torch.Tensor | MaskInfo) -> torch.Tensor:
    """The state at each row's last real position (the last index where mask == 1), for left or right padding.

    Read with ``index_select`` on the flattened token axis, several times cheaper than advanced indexing.
    """
    return POOLINGS["last"](hidden, mask)


def mean_with_padding(hidden: torch.Tensor, mask: torch.Tensor | MaskInfo | None = None) -> torch.Tensor:
    """Mean over every position, padding included (the authors'/LLMEmbed's pooling; depends on the batch).

    ``mask`` is accepted for a uniform signature and ignored on purpose.
    """
    _check(hidden, mask)
    return hidden.float().mean(dim=1)


def pool(hidden: torch.Tensor, mask: torch.Tensor | MaskInfo, poolings: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Every pooling in ``poolings`` of one layer's states with the exact kernels: the same float32 vectors as
    ``POOLINGS``, but a bf16 or fp16 ``hidden`` is converted to float32 once for all of them."""
    info = _info(hidden, mask)
    specs = [POOLINGS[name] for name in poolings]
    hidden32 = hidden.float() if any(p.float_input for p in specs) else hidden
    return {p.name: p.exact(hidden32 if p.float_input else hidden, info) for p in specs}


def pool_into(hidden: torch.Tensor, info: MaskInfo, poolings: tuple[str, ...], out: torch.Tensor,
              fast: bool) -> None:
    """Write one layer's poolings into ``out`` (n_poolings, B, d) float32 (views into the engine's batch buffer).

    ``fast=False``: the exact kernels (``pool``), bit-identical to them. ``fast=True``: the ``Pooling.fast``
    kernels, unnormalised; the caller divides by ``finish_divisors`` once per batch.
    """
    _check(hidden, info)
    if not fast:
        for i, (name, vectors) in enumerate(pool(hidden, info, poolings).items()):
            out[i].copy_(vectors)
        return
    for i, name in enumerate(poolings):
        POOLINGS[name].fast(hidden, info, out[i])


def finish_fast(buffer: torch.Tensor, info: MaskInfo, poolings: tuple[str, ...], n_tokens: int) -> None:
    """Divide the ``fast`` sums in ``buffer`` (n_poolings, B, ..., d) by each pooling's divisor, in place."""
    for i, name in enumerate(poolings):
        divisor = POOLINGS[name].divisor(info, n_tokens)
        if divisor is not None:
            buffer[i].div_(divisor.view(divisor.shape[0], *([1] * (buffer.dim() - 2))))


def check_poolings(poolings: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate pooling names (non-empty, known, no duplicates) and return them as a tuple."""
    poolings = tuple(poolings)
    if not poolings:
        raise ValueError(f"poolings is empty; choose from {sorted(POOLINGS)}")
    unknown = [p for p in poolings if p not in POOLINGS]
    if unknown:
        raise ValueError(f"unknown pooling(s) {unknown}; choose from {sorted(POOLINGS)}")
    if len(set(poolings)) != len(poolings):
        raise ValueError(f"poolings {poolings} lists a pooling twice; give each once")
    return poolings
