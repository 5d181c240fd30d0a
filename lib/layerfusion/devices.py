"""Device and dtype rules: where a model runs and in which floating-point type, with the reason recorded.

``choose_dtype`` returns a ``DtypeChoice`` (the dtype and a one-line reason such as ``"auto: cpu has amx_bf16"``);
``models.load`` stores both on the ``LoadedModel`` and the embedding cache writes them into every entry's
provenance. The dtype itself is part of the cache key, so vectors computed in bf16 and in fp32 never mix.

The automatic rule:

- an explicit ``dtype`` always wins;
- CUDA: bfloat16;
- CPU: bfloat16 where the CPU multiplies bf16 natively (``amx_bf16`` or ``avx512_bf16`` in its flags), float32
  elsewhere (on AVX2-only CPUs bf16 is emulated by conversion and runs several times slower than fp32);
- any other device (``mps``, ...): float32.

Native bf16 is detected from the CPU flags (``layerfusion.provenance.cpu_flags``, the same reader the provenance
records), not from a timed probe: the flags are free to read and give the same answer on every call, whereas a
probe timed on a loaded machine could flip between runs and, because the dtype is in the cache key, send the same
study to two cache entries. ``torch.backends.cpu.get_cpu_capability()`` does not help: it reports the ATen
dispatch level (``"AVX512"`` both with and without bf16 units). Where ``/proc/cpuinfo`` cannot be read (macOS,
Windows) no flag is found and the rule falls back to float32, the safe choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerfusion.provenance import cpu_flags

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags that mean bf16 matrix products run in hardware (oneDNN uses AMX tiles, else AVX-512 BF16 dot
products); the first one present is named in the reason."""

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16", "float64": "float64", "fp64": "float64"}


def dtype_name(dtype: Any) -> str:
    """A dtype's name as cache keys and records spell it: ``torch.bfloat16``, ``np.float32`` or ``"float32"`` ->
    ``"bfloat16"`` / ``"float32"``."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class DtypeChoice:
    """A compute dtype and why it was chosen (recorded in provenance)."""

    dtype: Any
    reason: str

    @property
    def name(self) -> str:
        """The dtype's name without the ``torch.`` prefix (``"bfloat16"``), as cache keys spell it."""
        return dtype_name(self.dtype)


def resolve_device(device: str | Any | None = None) -> Any:
    """The torch device to use: the argument, else CUDA when available, else CPU."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16_flag(flags: frozenset[str] | None = None) -> str | None:
    """The first flag of ``NATIVE_BF16_FLAGS`` the CPU reports (``flags`` defaults to this CPU's), else None."""
    present = cpu_flags() if flags is None else flags
    return next((flag for flag in NATIVE_BF16_FLAGS if flag in present), None)


def _parse_dtype(dtype: str | Any) -> Any:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(dtype_name(dtype).lower())
    if name is None:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES.values()))} or None for the "
                         "automatic choice")
    return getattr(torch, name)


def choose_dtype(dtype: str | Any | None, device: str | Any) -> DtypeChoice:
    """The compute dtype for ``device`` and the reason: the argument when given, else the automatic rule above.

    ``dtype`` may be a ``torch.dtype`` or a name (``"float32"``/``"fp32"``, ``"bfloat16"``/``"bf16"``,
    ``"float16"``/``"fp16"``, ``"float64"``/``"fp64"``: slow, for reproducible references across CPU models, whose
    float32 kernels differ in the last bits); anything else raises ``ValueError``.
    """
    import torch

    if dtype is not None:
        parsed = _parse_dtype(dtype)
        return DtypeChoice(parsed, f"explicit: {str(parsed).replace('torch.', '')}")
    kind = torch.device(device).type
    if kind == "cuda":
        return DtypeChoice(torch.bfloat16, "auto: bfloat16 on cuda")
    if kind != "cpu":
        return DtypeChoice(torch.float32, f"auto: float32 on {kind}")
    flag = native_bf16_flag()
    if flag is not None:
        return DtypeChoice(torch.bfloat16, f"auto: cpu has {flag}")
    return DtypeChoice(torch.float32, f"auto: cpu lacks {' and '.join(NATIVE_BF16_FLAGS)} (bf16 would be emulated)")


def resolve_dtype(dtype: str | Any | None, device: str | Any) -> Any:
    """The compute ``torch.dtype`` of ``choose_dtype`` (for callers that do not record the reason)."""
    return choose_dtype(dtype, device).dtype
