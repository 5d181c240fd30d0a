"""Where two CPU models part ways under the ci profile's pins: bit fingerprints of the kernels the ci chapters use.

``make fingerprint`` (the pins of ``make test``: ``DETERMINISM_ENV``) prints one line per item, a SHA-256 prefix of
its float32 output bytes, and writes them as JSON; ``make fingerprint COMPARE=results/fingerprints/<file>.json``
also lists the items that differ from a file written on another machine (``FINGERPRINT_DTYPE``: the models' dtype,
float64 as the ci profile runs them; float32 shows where float32 kernels part). Items:

- ``op:*``: single kernels on fixed random inputs (numpy ``default_rng(0)``): torch's fp32 matmul (MKL), the
  elementwise functions of the ci models (cos/sin for rotary positions, exp, SiLU, GELU, reciprocal square root),
  softmax, layer norm, RMS norm, scaled-dot-product attention (causal with grouped heads, as SmolLM2; masked, as
  MiniLM), reductions, and numpy's exp, matmul and SVD (OpenBLAS), which the label-free scores use;
- ``model:<key>:layer<i>:<pooling>``: the engine's pooled hidden states (``extract_texts``, fp32, every layer, the
  ci profile's poolings) of eight fixed texts, so the first layer that differs names the block where it starts.

Why: the ci references are compared bit for bit after rounding, and on 2026-12-06 references written on an Intel
Xeon (AMX) differed on an AMD EPYC in 8 of 93 cells (SmolLM2's label-free correlations and solver iteration counts
among them, MiniLM's not), both ways and reproducibly on each machine, while the ci models ran in float32. Not a benchmark module (the leading
underscore keeps ``python -m benchmarks`` off it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import sys
from typing import Any

import numpy as np

from layerfusion import models, provenance
from layerfusion.extract import ExtractionConfig, extract_texts

TEXTS = [
    "the movie was good",
    "a very boring plot that goes nowhere and takes two hours to get there",
    "great acting and a fun story",
    "not good",
    "the bank said its profit rate was up this year, beating forecasts",
    "love the film",
    "terrible terrible acting",
    "oil prices rose as the market traded shares of energy companies higher",
]
MODELS = ("smollm2-135m", "minilm-l6")
PINS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_DYNAMIC", "OMP_DYNAMIC", "OPENBLAS_CORETYPE",
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def digest(x: Any) -> str:
    """SHA-256 prefix of an array's float32 bytes (C order)."""
    arr = np.ascontiguousarray(np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32))
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


def op_fingerprints() -> dict[str, str]:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)

    def t(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.from_numpy((rng.standard_normal(shape) * scale).astype(np.float32))

    a, b, x = t(256, 576), t(576, 1536), t(64, 48, 576, scale=3.0)
    pos = torch.arange(2048, dtype=torch.float32)[:, None] * torch.logspace(0, -4, 32)[None, :]
    q, k, v = t(2, 9, 48, 64), t(2, 3, 48, 64), t(2, 3, 48, 64)
    mask = torch.ones(2, 1, 48, 48, dtype=torch.bool)
    mask[1, :, :, 30:] = False
    weight, bias = t(576), t(576)
    out = {
        "op:matmul": a @ b,
        "op:linear": F.linear(x, b.T.contiguous(), None),
        "op:cos": pos.cos(), "op:sin": pos.sin(),
        "op:exp": x.clamp(max=20).exp(), "op:silu": F.silu(x), "op:gelu": F.gelu(x),
        "op:rsqrt": x.abs().add(1e-6).rsqrt(), "op:pow": torch.pow(10000.0, torch.arange(0, 64, 2) / 64.0),
        "op:softmax": x.softmax(-1),
        "op:layer_norm": F.layer_norm(x, (576,), weight, bias, 1e-12),
        "op:rms_norm": x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight,
        "op:sdpa_causal_gqa": F.scaled_dot_product_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1),
                                                             is_causal=True),
        "op:sdpa_masked": F.scaled_dot_product_attention(q[:, :3], k, v, attn_mask=mask),
        "op:sum": x.sum(1), "op:mean": x.mean(1),
    }
    an, bn = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
    out.update({"op:numpy_exp": np.exp(an).astype(np.float32), "op:numpy_matmul": (an @ bn).astype(np.float32),
                "op:numpy_svd": np.abs(np.linalg.svd(an[:64, :128], compute_uv=False)).astype(np.float32)})
    return {name: digest(value) for name, value in out.items()}


def model_fingerprints(key: str, cache_dir: str | None, dtype: str = "float32") -> dict[str, str]:
    loaded = models.load(key, device="cpu", dtype=dtype, cache_dir=cache_dir)
    out = extract_texts(loaded, TEXTS, ExtractionConfig(poolings=("mean", "last", "mean_pad")), progress=False)
    return {f"model:{key}:layer{layer:02d}:{pooling}": digest(out[pooling][:, i])
            for pooling in out for i, layer in enumerate(out.layers)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, help="write the fingerprints here as JSON")
    parser.add_argument("--compare", type=pathlib.Path, help="a JSON file of fingerprints from another machine")
    parser.add_argument("--cache-dir", default=None, help="the converted models' cache (default: the usual one)")
    parser.add_argument("--dtype", default="float32", help="the models' compute dtype (default float32)")
    args = parser.parse_args(argv)
    missing = [p for p in PINS if p not in os.environ]
    if missing:
        print(f"_fingerprint: the pins {missing} are not set; run it as `make fingerprint` (DETERMINISM_ENV)",
              file=sys.stderr)
        return 2
    prints = op_fingerprints()
    for key in MODELS:
        prints.update(model_fingerprints(key, args.cache_dir, args.dtype))
    record = {"hardware": provenance.hardware(), "pins": {p: os.environ[p] for p in PINS}, "dtype": args.dtype,
              "fingerprints": prints}
    for name, value in prints.items():
        print(f"{value}  {name}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        print(f"_fingerprint: wrote {args.out}")
    if args.compare:
        other = json.loads(args.compare.read_text())
        if other.get("dtype", "float32") != args.dtype:
            print(f"_fingerprint: {args.compare} holds {other.get('dtype', 'float32')} models and this run "
                  f"{args.dtype}; compare like with like (--dtype; make: FINGERPRINT_DTYPE)", file=sys.stderr)
            return 2
        theirs = other["fingerprints"]
        differ = [n for n in prints if n in theirs and theirs[n] != prints[n]]
        print(f"_fingerprint: {len(differ)} of {len(prints)} differ from {args.compare} "
              f"({other.get('hardware', {}).get('cpu', '?')}):")
        for name in differ:
            print(f"  {name}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
