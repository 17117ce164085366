"""Packed training batches give the padded batch's loss and gradients, on every preset's architecture.

Each preset's architecture (from benchmarks/architectures.py) is shrunk to a few layers with random
weights and LoRA on the preset's own target modules; the same three examples of different lengths
are trained on padded and packed with `packed_sdpa`.
"""
from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from benchmarks.architectures import ARCHITECTURES, architecture_config
from pipelines.models import MODEL_PRESETS
from pipelines.train.encoding import IGNORE_INDEX, ResponseOnlyCollator
from pipelines.train.packing import (
    PACKED_ATTENTION,
    PackingCollator,
    packed_attention,
    supports_packing,
    training_collator,
)

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 128, "vocab_size": 300}
SMALL_BY_TYPE = {
    "opt": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 128,
            "word_embed_proj_dim": 64, "vocab_size": 300, "dropout": 0.0},  # dropout would differ per call
    "phi3": SMALL | {"pad_token_id": 0},  # its default (199999) lies outside the small vocabulary
    "qwen3": SMALL | {"head_dim": 16},
}


def _items() -> list[dict[str, list[int]]]:
    """Three examples of lengths 9, 23 and 14: a prompt (ignored in the loss) then an answer."""
    g = torch.Generator().manual_seed(0)
    items = []
    for prompt, answer in ((6, 3), (15, 8), (10, 4)):
        ids = torch.randint(3, 300, (prompt + answer,), generator=g).tolist()
        items.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return items


def _lora_model(preset: str):
    model_type = ARCHITECTURES[preset]["model_type"]
    config = architecture_config(preset, **SMALL_BY_TYPE.get(model_type, SMALL))
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(MODEL_PRESETS.get(preset).lora_targets))
    model = get_peft_model(base, lora)
    for name, param in model.named_parameters():  # LoRA B starts at zero: make the adapter do something
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return model


def _loss_and_grads(model, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads


def test_collator_lays_examples_end_to_end():
    items = _items()
    batch = PackingCollator()(items)
    assert batch["input_ids"].shape == (1, 9 + 23 + 14)
    assert batch["cu_seq_lens_q"].tolist() == [0, 9, 32, 46]
    assert batch["position_ids"][0].tolist() == [*range(9), *range(23), *range(14)]
    assert batch["max_length_q"] == 23
    labels = batch["labels"][0].tolist()
    assert labels[9] == labels[32] == IGNORE_INDEX  # nothing learns to predict the next example's start
    assert labels[9 - 3 : 9] == items[0]["input_ids"][-3:]
    assert (batch["input_ids"][0, 9:32] == torch.tensor(items[1]["input_ids"])).all()


@pytest.mark.parametrize("preset", sorted(ARCHITECTURES))
def test_packed_batch_trains_like_the_padded_one(preset):
    model = _lora_model(preset)
    model.train()
    items = _items()
    assert supports_packing(model)
    padded_loss, padded_grads = _loss_and_grads(model, ResponseOnlyCollator(0)(items))

    collator = training_collator(model, True, 0)
    assert isinstance(collator, PackingCollator)
    with packed_attention(model, collator):
        assert model.get_base_model().config._attn_implementation == PACKED_ATTENTION
        packed_loss, packed_grads = _loss_and_grads(model, collator(items))
        # evaluation at a checkpoint epoch runs inside training: padded batches take the stock path
        assert _loss_and_grads(model, ResponseOnlyCollator(0)(items))[0] == padded_loss
    assert model.get_base_model().config._attn_implementation == "sdpa"  # restored for evaluation

    assert packed_loss == pytest.approx(padded_loss, abs=1e-5)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-4, msg=f"{preset}: {name}")


def test_packing_off_or_unsupported_pads_each_batch():
    model = _lora_model("smollm2-135m")
    assert isinstance(training_collator(model, False, 0), ResponseOnlyCollator)
    model.get_base_model()._supports_attention_backend = False  # an architecture with its own attention code
    assert isinstance(training_collator(model, True, 0), ResponseOnlyCollator)
