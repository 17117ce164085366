"""LoRA adapters on a base model (peft), one definition for the fine-tune, the cpu preset's speed
probe and the benchmarks."""
from __future__ import annotations

import warnings
from collections.abc import Sequence


def wrap_lora(model, targets: Sequence[str], r: int = 8, alpha: int = 16, dropout: float = 0.05):
    """`model` with trainable LoRA adapters of rank `r` on the modules named `targets` (the defaults
    are FinetuneConfig's)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                      task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' renamed is_gradient_checkpointing: a FutureWarning per model
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora)
