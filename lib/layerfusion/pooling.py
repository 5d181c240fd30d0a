"""Pool token states into one vector per text: pure functions on torch tensors, computed in float32.

``hidden`` is (B, T, d) in any float dtype; ``mask`` is (B, T) of 0/1 with padding on either side. Every pooling
returns float32 (B, d) so bf16/fp16 model outputs are accumulated in fp32.

``mean`` and ``last`` depend only on a text's own tokens, so a text gets the same vector whatever it is batched
with. ``mean_pad`` averages over padding positions too: that is what the authors' and LLMEmbed's code do
(``hidden_states[-1].mean(dim=1)`` after ``padding=True``), and it is kept only to reproduce them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _check(hidden: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (batch, tokens, dim), got shape {tuple(hidden.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(hidden.shape[:2]):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match hidden's (batch, tokens) "
                         f"{tuple(hidden.shape[:2])}")


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real-token states (mask == 1), in float32; independent of padding side and length.

    Padding positions are excluded with ``where`` rather than multiplied by 0, so a NaN in a padded position (some
    attention kernels produce them for fully-masked rows) cannot leak into the mean.
    """
    _check(hidden, mask)
    keep = mask.to(device=hidden.device, dtype=torch.bool).unsqueeze(-1)
    total = torch.where(keep, hidden.float(), 0.0).sum(dim=1)
    count = keep.sum(dim=1).clamp(min=1).float()
    return total / count


def last_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state at each row's last real position (the last index where mask == 1), for left or right padding."""
    _check(hidden, mask)
    mask = mask.to(device=hidden.device)
    positions = torch.arange(hidden.shape[1], device=hidden.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, -1).max(dim=1).values.clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()


def mean_with_padding(hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over every position, padding included (the authors'/LLMEmbed's pooling; depends on the batch).

    ``mask`` is accepted for a uniform signature and ignored on purpose.
    """
    _check(hidden, mask)
    return hidden.float().mean(dim=1)


POOLINGS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mean": masked_mean,
    "last": last_token,
    "mean_pad": mean_with_padding,
}


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
