"""Tiny random models for tests and the CI smoke path: ≈0.1 MB, offline, built in seconds.

They go through the same loading code as the real models (``models.load(tiny_spec(...))``), so tests exercise
the real path while staying fast.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

VOCAB_WORDS = (
    "the a an is was good bad movie film great terrible not very plot acting story boring fun love hate "
    "market shares profit oil price bank rate trade ship grain earn company said year reuter"
).split()

_ARCHS = ("llama", "gemma3", "bert", "gpt2")


def _tokenizer(padding_side: str, add_bos: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(VOCAB_WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side=padding_side,
    )


def _config(arch: str, vocab_size: int, n_layers: int, hidden: int):
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=n_layers, num_attention_heads=4)
    if arch == "llama":
        return tf.LlamaConfig(**common, intermediate_size=2 * hidden, num_key_value_heads=2,
                              max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(**common, intermediate_size=2 * hidden, num_key_value_heads=2, head_dim=8,
                                   max_position_embeddings=128, sliding_window=16, pad_token_id=0,
                                   bos_token_id=2, eos_token_id=3)
    if arch == "bert":
        return tf.BertConfig(**common, intermediate_size=2 * hidden, max_position_embeddings=128, pad_token_id=0)
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=n_layers, n_head=4, n_positions=128,
                             pad_token_id=0, bos_token_id=2, eos_token_id=3)
    raise ValueError(f"unknown tiny arch {arch!r}; choose one of {_ARCHS}")


def tiny_model_dir(
    path: str | Path,
    arch: str = "llama",
    padding_side: str = "right",
    n_layers: int = 2,
    hidden: int = 32,
    seed: int = 0,
) -> Path:
    """Write a tiny random ``arch`` model and a WordLevel tokenizer to ``path`` and return it."""
    import torch
    from transformers import AutoModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(padding_side, add_bos=arch in ("llama", "gemma3"))
    with torch.random.fork_rng(devices=[]):  # seeded weights without moving the caller's global RNG
        torch.manual_seed(seed)
        model = AutoModel.from_config(_config(arch, len(tok), n_layers, hidden))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "tiny.json").write_text(json.dumps({"arch": arch, "padding_side": padding_side,
                                                "n_layers": n_layers, "hidden": hidden, "seed": seed}))
    return path


def tiny_spec(path: str | Path, arch: str = "llama", padding_side: str = "right", n_layers: int = 2,
              hidden: int = 32, key: str | None = None):
    """Build a tiny model at ``path`` (if missing) and return a ``ModelSpec`` with ``source="local"``."""
    from layerfusion.models import ModelSpec

    path = Path(path)
    if not (path / "tiny.json").exists():
        tiny_model_dir(path, arch=arch, padding_side=padding_side, n_layers=n_layers, hidden=hidden)
    return ModelSpec(
        key=key or f"tiny-{arch}-{padding_side}",
        hf_id=f"local/tiny-{arch}",
        source="local",
        arch="encoder" if arch == "bert" else "decoder",
        n_layers=n_layers,
        hidden_size=hidden,
        padding_side=padding_side,
        licence="test-only",
        path=str(path),
    )


@contextlib.contextmanager
def registries_restored() -> Iterator[None]:
    """Restore the model and dataset registries on exit: tests that name paths register short names globally."""
    from layerfusion import data, models

    saved = dict(models.REGISTRY), dict(data.DATASETS)
    try:
        yield
    finally:
        for live, old in zip((models.REGISTRY, data.DATASETS), saved):
            live.clear()
            live.update(old)


def _llama_cpp_permute(weight, n_head: int):
    """The row order llama.cpp's converter gives q/k projections (transformers' GGUF reader undoes it)."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def tiny_gguf(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Llama as a float32 ``.gguf`` file (with a sentencepiece-style vocabulary) and return it.

    Its transformer weights are those of ``tiny_model_dir(<path>.hf, arch="llama", seed=seed)``, stored the way
    llama.cpp stores them, so the GGUF route (reading the file's config and tokenizer, converting once) is tested
    offline in a second, without the 100 MB shipped models.
    """
    import gguf
    import numpy as np
    from transformers import AutoModel

    path = Path(path)
    hf = tiny_model_dir(path.with_suffix(".hf"), arch="llama", seed=seed)
    model = AutoModel.from_pretrained(hf)
    cfg, weights = model.config, {k: v.numpy() for k, v in model.state_dict().items()}
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    pieces: list[str] = []
    for word in VOCAB_WORDS:  # every prefix of "▁word", so the merges derived from the vocabulary rebuild it
        marked = "\u2581" + word
        pieces += [marked[:i] for i in range(1, len(marked) + 1) if marked[:i] not in pieces]
    tokens = specials + sorted({c for p in pieces for c in p} - set(pieces)) + pieces
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(i) for i in range(len(tokens))])
    writer.add_token_types([3 if t in specials else 1 for t in tokens])
    for setter, token in ((writer.add_unk_token_id, 0), (writer.add_bos_token_id, 1), (writer.add_eos_token_id, 2),
                          (writer.add_pad_token_id, 3)):
        setter(token)
    rng = np.random.default_rng(seed)
    writer.add_tensor("token_embd.weight", rng.standard_normal((len(tokens), cfg.hidden_size)).astype(np.float32))
    names = {"attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
             "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
             "ffn_norm": "post_attention_layernorm"}
    for i in range(cfg.num_hidden_layers):
        layer = f"layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_q.weight", _llama_cpp_permute(weights[layer + "self_attn.q_proj.weight"],
                                                                       cfg.num_attention_heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight", _llama_cpp_permute(weights[layer + "self_attn.k_proj.weight"],
                                                                       cfg.num_key_value_heads))
        for ours, theirs in names.items():
            writer.add_tensor(f"blk.{i}.{ours}.weight", weights[f"{layer}{theirs}.weight"])
    writer.add_tensor("output_norm.weight", weights["norm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
