"""Turn what a user names a model by (a registry key, a hub id, a local folder or ``.gguf`` file) into a spec.

A hub id or a path needs no registry entry: layers, width, architecture (decoder or encoder) and padding side are read
from the model's config and tokenizer, and the transformer blocks are located on an empty (meta-device) copy of the
model, so a model the extraction engine cannot tap is refused before anything is loaded. Nothing the folder ships is
executed unless ``trust_remote_code=True``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from layerfusion import files, paths
from layerfusion.models.blocks import block_list
from layerfusion.models.registry import REGISTRY, register
from layerfusion.models.spec import ModelSpec

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.txt", "vocab.json",
                   "spiece.model", "sentencepiece.bpe.model")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
SAVE_HINT = "save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)"


def _known() -> str:
    return ", ".join(sorted(REGISTRY))


def get_spec(name: str | os.PathLike | ModelSpec, *, text_prefix: str | None = None, template: str | None = None,
             trust_remote_code: bool = False) -> ModelSpec:
    """The spec of a registry key, a hub id (``org/name``, optional ``@revision``) or a local path.

    A local path is a folder saved with ``save_pretrained`` (config, tokenizer, weights) or a ``.gguf`` file.
    ``text_prefix`` / ``template`` set the model's input conventions (see ``ModelSpec``). Unknown names raise
    ``KeyError``; a missing path ``FileNotFoundError``; an unreachable hub ``OSError`` saying how to pre-download.
    """
    if isinstance(name, ModelSpec):
        spec = name
    elif str(name) in REGISTRY:
        spec = REGISTRY[str(name)]
    else:
        spec = _resolve(str(name), bool(trust_remote_code))
    conventions = {k: v for k, v in (("text_prefix", text_prefix), ("template", template)) if v is not None}
    return replace(spec, **conventions) if conventions else spec


def _looks_like_path(text: str) -> bool:
    name = text.split("@", 1)[0]  # a revision such as @refs/pr/1 may hold slashes
    return text.startswith(("/", "./", "../", "~")) or text.endswith(".gguf") or name.count("/") > 1 or "\\" in text


def _resolve(text: str, trust_remote_code: bool) -> ModelSpec:
    path = Path(text).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_file() and path.suffix != ".gguf":
            raise ValueError(f"model path {text!r} is a file; pass a folder saved with save_pretrained or a .gguf "
                             "file")
        stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in
                      ([path] if path.is_file() else sorted(path.iterdir())))
        return _from_path(str(path), trust_remote_code, stamp)
    if _looks_like_path(text):
        raise FileNotFoundError(f"model path {text!r} does not exist; pass an existing folder (config, tokenizer, "
                                "weights) or .gguf file, a hub id (org/name) or a registry key")
    if HUB_ID.match(text):
        return _from_hub(text, trust_remote_code)
    raise KeyError(f"unknown model {text!r}; known models: {_known()}; or pass a hub id (org/name[@revision]) or "
                   "the path of a saved model folder or .gguf file")


@functools.lru_cache(maxsize=64)
def _from_path(path_text: str, trust_remote_code: bool, stamp: tuple) -> ModelSpec:
    """Memoised on the folder's file sizes and times (``stamp``), so naming a path again costs no re-hashing."""
    path = Path(path_text)
    if path.is_file():
        sha = files.sha256_file(path)
        config, tokenizer = _config_and_tokenizer(str(path.parent), {"gguf_file": path.name}, path_text,
                                                  trust_remote_code)
        return _derive(config, tokenizer, path_text, trust_remote_code, key=path.name, hf_id=path_text,
                       source="local-gguf", path=path_text, extra={"gguf_sha256": sha, "gguf_name": path.name})
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model path {path_text!r} has no config.json, so it is not a transformers model "
                                f"folder; {SAVE_HINT}")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"model path {path_text!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                                "save it there with tokenizer.save_pretrained(folder)")
    weight_files(path, path_text)
    config, tokenizer = _config_and_tokenizer(path_text, {}, path_text, trust_remote_code)
    return _derive(config, tokenizer, path_text, trust_remote_code, key=path.name, hf_id=path_text, source="local",
                   path=path_text)


def weight_files(folder: Path, name: str) -> list[Path]:
    """The weight files of a saved model folder (``*.safetensors``, else ``*.bin``), sorted."""
    found = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not found:
        raise FileNotFoundError(f"model {name!r}: no *.safetensors or *.bin weights in {folder}; {SAVE_HINT}")
    return found


def _from_hub(text: str, trust_remote_code: bool) -> ModelSpec:
    repo, _, revision = text.partition("@")
    commit = hub_commit(repo, revision or None, name=text)
    config, tokenizer = _config_and_tokenizer(repo, {"revision": commit}, text, trust_remote_code)
    return _derive(config, tokenizer, text, trust_remote_code, key=text, hf_id=repo, source="hub", revision=commit)


def hub_commit(repo: str, revision: str | None = None, *, name: str | None = None) -> str:
    """The commit hash ``revision`` (default: main) of a hub model resolves to, from the hub or the local HF cache.

    A full 40-character commit is returned as is. Offline with nothing cached raises ``OSError`` saying how to
    pre-download the model (``FileNotFoundError``, as huggingface_hub's own "not in the cache" error).
    """
    if revision is not None and COMMIT.match(revision):
        return revision
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    name = name or repo
    try:
        config = hf_hub_download(repo, "config.json", revision=revision)
    except GatedRepoError as err:
        raise OSError(f"model {name!r} is gated on the Hugging Face hub; accept its terms on its hub page and log in "
                      "(`hf auth login` or HF_TOKEN)") from err
    except RepositoryNotFoundError as err:
        raise OSError(f"model {name!r}: no such model on the Hugging Face hub (or it is private: log in with "
                      "`hf auth login`); check the id, or pass a local folder") from err
    except RevisionNotFoundError as err:
        raise OSError(f"model {name!r}: revision {revision!r} does not exist on the hub; use a branch, tag or "
                      "commit of the model") from err
    except LocalEntryNotFoundError as err:
        raise FileNotFoundError(f"model {name!r} is not in the local Hugging Face cache and the hub cannot be reached "
                      f"(offline); on a machine with internet run `hf download {repo}` (the cache then works "
                      f"offline, also with HF_HUB_OFFLINE=1), or save the model to a folder and pass its path")\
            from err
    except EntryNotFoundError as err:
        raise OSError(f"model {name!r} has no config.json on the hub, so it is not a transformers model") from err
    return Path(config).parent.name


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _config_and_tokenizer(source: str, kwargs: dict[str, Any], name: str, trust_remote_code: bool
                          ) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    kwargs = {**kwargs, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        if "trust_remote_code" in str(err) and not trust_remote_code:
            raise ValueError(f"model {name!r} ships its own code (auto_map in its config), which layerfusion does "
                             "not run unless asked; pass trust_remote_code=True if you trust it") from err
        raise ValueError(f"model {name!r}: cannot read its config ({_first_line(err)})") from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"model {name!r}: cannot load its tokenizer ({_first_line(err)}); save a working one with "
                         "tokenizer.save_pretrained(folder)") from err
    return config, tokenizer


def _arch(config: Any, name: str) -> str:
    """``"encoder"`` for masked-LM families (BERT, RoBERTa, ...), ``"decoder"`` otherwise; encoder-decoders refused."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"model {name!r} is an encoder-decoder ({config.model_type}); layerfusion taps decoder-only "
                         "or encoder-only models: save the encoder on its own and pass that folder")
    masked = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return "encoder" if masked and not getattr(config, "is_decoder", False) else "decoder"


def _check_blocks(config: Any, name: str, trust_remote_code: bool) -> None:
    """Locate the transformer blocks on an empty (meta-device) copy of the model: no memory, no weights read."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    try:
        block_list(model)
    except ValueError as err:
        raise ValueError(f"model {name!r}: {err}") from None


def _derive(config: Any, tokenizer: Any, name: str, trust_remote_code: bool, **fields: Any) -> ModelSpec:
    n_layers, hidden = getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
    if not isinstance(n_layers, int) or not isinstance(hidden, int):
        raise ValueError(f"model {name!r} ({config.model_type}): its config has no num_hidden_layers / hidden_size "
                         "(a multimodal model?); pass the folder of its text model")
    arch = _arch(config, name)
    if tokenizer.pad_token is None and tokenizer.eos_token is None and tokenizer.unk_token is None:
        raise ValueError(f"model {name!r}: its tokenizer has no pad, eos or unk token to pad batches with; set "
                         "tokenizer.pad_token and save it again")
    _check_blocks(config, name, trust_remote_code)
    return ModelSpec(arch=arch, n_layers=n_layers, hidden_size=hidden, padding_side=tokenizer.padding_side,
                     licence="see the model card", notes=f"{config.model_type}, read from its config and tokenizer",
                     **fields)


# --- names for tables ----------------------------------------------------------------------------------------------


def add(sources: Sequence[str | os.PathLike | ModelSpec], *, text_prefix: str | None = None,
        template: str | None = None, trust_remote_code: bool = False) -> list[str]:
    """Register each hub id or path under a short readable name and return the names, in order.

    Registry keys pass through unchanged. A hub id keeps its id as its name; a path gets its last part, with parent
    folders added only where two paths (or a path and another registry entry) would otherwise share a name. After
    this, every engine function accepts the name, so tables show ``my-model`` rather than a long path.
    ``text_prefix`` / ``template`` apply to the hub ids and paths (given again, they replace earlier ones).
    """
    conventions = {"text_prefix": text_prefix, "template": template}
    fresh = text_prefix is not None or template is not None

    def registered(source: Any) -> bool:
        text = str(source)
        return text in REGISTRY and not (fresh and (HUB_ID.match(text) or Path(text).expanduser().exists()))

    keys = [str(s) for s in sources if not isinstance(s, ModelSpec) and registered(s)]
    if keys and fresh:
        raise ValueError(f"text_prefix / template apply to hub ids and paths; {keys} are registry entries: register "
                         "a spec with them instead (models.register(replace(spec, text_prefix=...)))")
    specs = [s if isinstance(s, ModelSpec) else str(s) if registered(s)
             else get_spec(_resolve(str(s), trust_remote_code), **conventions) for s in sources]
    local = [i for i, s in enumerate(specs) if not isinstance(sources[i], ModelSpec) and not isinstance(s, str)
             and s.source in ("local", "local-gguf")]
    ours = {specs[i].path for i in local}
    taken = {key for key, spec in REGISTRY.items() if spec.path not in ours}
    names = dict(zip(local, paths.short_names([specs[i].path for i in local], taken=taken)))
    out = []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            out.append(spec)
            continue
        spec = replace(spec, key=names.get(i, spec.key))
        known = REGISTRY.get(spec.key)
        same_source = known is not None and (known.path, known.hf_id) == (spec.path, spec.hf_id)
        out.append(register(spec, overwrite=same_source).key)
    return out


def combo_label(keys: Any) -> str:
    """Short name of a model combination for tables and figures: ``["smollm2-135m", "gemma3-270m"]`` ->
    ``"smollm2+gemma3"`` (each name's last ``/`` part, up to its first dash)."""
    return "+".join(str(key).rsplit("/", 1)[-1].split("-")[0] for key in keys)
