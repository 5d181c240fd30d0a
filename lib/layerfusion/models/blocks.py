"""Where a loaded ``AutoModel`` keeps its transformer blocks: extraction hooks them, ``get_spec`` checks for them."""

from __future__ import annotations

from typing import Any

LAYER_PATHS = ("layers", "model.layers", "encoder.layer", "h", "transformer.h", "decoder.layers",
               "language_model.layers")
"""Attribute paths tried first, in order; a model whose blocks live elsewhere needs its path added here."""


def block_list(model: Any) -> Any:
    """The ``nn.ModuleList`` of transformer blocks (``num_hidden_layers`` long) of an ``AutoModel``."""
    import torch

    n = int(model.config.num_hidden_layers)
    for path in LAYER_PATHS:
        module = model
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} transformer blocks of {type(model).__name__}; add its block list to "
                     "layerfusion.models.blocks.LAYER_PATHS")
