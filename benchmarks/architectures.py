"""The presets' architectures as configs, to measure throughput on randomly initialized weights.

Speed does not depend on the weights' values, so a GPU machine without the models' weights can
still measure what a fine-tune of each preset costs per token. The sizes are those of the
models' published config.json files.
"""
from __future__ import annotations

from typing import Any

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "intermediate_size": 1536,
                     "vocab_size": 49152, "tie_word_embeddings": True},
    "opt-350m": {"model_type": "opt", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                 "ffn_dim": 4096, "vocab_size": 50272, "word_embed_proj_dim": 512,
                 "max_position_embeddings": 2048, "do_layer_norm_before": False},
    "llama-3.2-1b": {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 8192,
                     "vocab_size": 128256, "tie_word_embeddings": True, "rope_theta": 500000.0},
    "phi-4-mini": {"model_type": "phi3", "hidden_size": 3072, "num_hidden_layers": 32,
                   "num_attention_heads": 24, "num_key_value_heads": 8, "intermediate_size": 8192,
                   "vocab_size": 200064, "tie_word_embeddings": True, "partial_rotary_factor": 0.75},
    "qwen3-4b": {"model_type": "qwen3", "hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 9728, "vocab_size": 151936,
                 "tie_word_embeddings": True},
    "mistral-7b": {"model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                   "vocab_size": 32768},
}


def architecture_config(preset: str, **overrides: Any):
    """A transformers config with the preset's architecture (unknown preset: KeyError listing them)."""
    from transformers import AutoConfig

    if preset not in ARCHITECTURES:
        raise KeyError(f"no architecture for {preset!r}; known: {', '.join(ARCHITECTURES)}")
    spec = dict(ARCHITECTURES[preset]) | overrides
    return AutoConfig.for_model(spec.pop("model_type"), **spec)
