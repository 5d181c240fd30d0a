"""Pool token states into one vector per text: pure functions on torch tensors, computed in float32.

``hidden`` is (B, T, d) in any float dtype; ``mask`` is (B, T) of 0/1 with padding on either side, or its
``MaskInfo`` (computed once per batch by ``mask_info``). Every pooling returns float32 (B, d) so bf16/fp16 model
outputs are accumulated in fp32.

``mean`` and ``last`` depend only on a text's own tokens, so a text gets the same vector whatever it is batched
with. ``mean_pad`` averages over padding positions too: that is what the authors' and LLMEmbed's code do
(``hidden_states[-1].mean(dim=1)`` after ``padding=True``), and it is kept only to reproduce them.
"""

from __future__ import annotations

from collections.abc import Callable
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


_KERNELS = {"mean": _mean, "last": _last, "mean_pad": _mean_pad}


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor | MaskInfo) -> torch.Tensor:
    """Mean of the real-token states (mask == 1), in float32; independent of padding side and length.

    Padding positions are excluded with ``where`` rather than multiplied by 0, so a NaN in a padded position (some
    attention kernels produce them for fully-masked rows) cannot leak into the mean.
    """
    return _mean(hidden.float(), _info(hidden, mask))


def last_token(hidden: torch.Tensor, mask: torch.Tensor | MaskInfo) -> torch.Tensor:
    """The state at each row's last real position (the last index where mask == 1), for left or right padding.

    Read with ``index_select`` on the flattened token axis, several times cheaper than advanced indexing.
    """
    return _last(hidden, _info(hidden, mask))


def mean_with_padding(hidden: torch.Tensor, mask: torch.Tensor | MaskInfo | None = None) -> torch.Tensor:
    """Mean over every position, padding included (the authors'/LLMEmbed's pooling; depends on the batch).

    ``mask`` is accepted for a uniform signature and ignored on purpose.
    """
    _check(hidden, mask)
    return hidden.float().mean(dim=1)


POOLINGS: dict[str, Callable[[torch.Tensor, torch.Tensor | MaskInfo], torch.Tensor]] = {
    "mean": masked_mean,
    "last": last_token,
    "mean_pad": mean_with_padding,
}


def pool(hidden: torch.Tensor, mask: torch.Tensor | MaskInfo, poolings: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Every pooling in ``poolings`` of one layer's states: the same float32 vectors as ``POOLINGS``, but a bf16 or
    fp16 ``hidden`` is converted to float32 once for all of them (the extraction engine calls this per layer)."""
    info = _info(hidden, mask)
    hidden32 = hidden.float() if any(name != "last" for name in poolings) else hidden
    return {name: _KERNELS[name](hidden32, info) for name in poolings}


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
