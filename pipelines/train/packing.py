"""Padding-free training batches: a batch's examples laid end to end in one row.

A padded batch spends compute on pad tokens (40% of the tokens in random batches of the three
tasks, whose lengths differ fivefold). Packed, a batch of 4 examples is one row of their summed
length, with position ids restarting at 0 for each example so rotary or learned positions are
those of the example alone. Attention must not cross from one example into the next:

`packed_sdpa` (registered with transformers' attention interface) runs causal SDPA on each
example's span, found from `cu_seq_lens_q` (the collator's cumulative lengths), so no work is spent
on a block-diagonal mask's empty blocks. Without those lengths (evaluation, generation) it is the
stock SDPA path, mask and all. Packed batches need it: with transformers 5.24 the stock attention
let packed examples see each other (inside the model's forward the mask came out None, so SDPA ran
causal over the whole row; logits from the second example on differed by up to 0.76 in a test).

The loss is the one of the padded batch: each example's first label is ignored (it is a prompt
token anyway), so no position is trained to predict the next example's first token.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from pipelines.train.encoding import IGNORE_INDEX, TOKEN_WEIGHTS, ResponseOnlyCollator

log = logging.getLogger(__name__)

PACKED_ATTENTION = "packed_sdpa"


def packed_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          **kwargs) -> tuple[torch.Tensor, None]:
    """Causal SDPA within each packed example; the stock SDPA when the batch is not packed.

    query/key/value: (batch, heads, tokens, head_dim); returns (batch, tokens, heads, head_dim).
    """
    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    edges = bounds.tolist()
    grouped = query.shape[1] != key.shape[1]
    spans = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], is_causal=True,
            dropout_p=dropout, scale=scaling, enable_gqa=grouped)
        for start, end in zip(edges[:-1], edges[1:], strict=True)
    ]
    return torch.cat(spans, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_packing(model: torch.nn.Module) -> bool:
    """Whether the model routes attention through transformers' attention interface."""
    return bool(getattr(_base_model(model), "_supports_attention_backend", False))


def training_collator(model: torch.nn.Module, packing: bool, pad_token_id: int):
    """Packed batches when asked for and the model supports them, else batches padded to their longest."""
    if packing and supports_packing(model):
        return PackingCollator()
    if packing:
        log.warning("%s does not use transformers' attention interface: training on padded batches",
                    type(model).__name__)
    return ResponseOnlyCollator(pad_token_id)


@contextmanager
def packed_attention(model: torch.nn.Module, collator) -> Iterator[None]:
    """With a PackingCollator, use `packed_sdpa` for the duration (training); restore it after."""
    if not isinstance(collator, PackingCollator):
        yield
        return
    base = _base_model(model)
    previous = base.config._attn_implementation
    base.set_attn_implementation(PACKED_ATTENTION)
    try:
        yield
    finally:
        base.set_attn_implementation(previous)


@dataclass
class PackingCollator:
    """Lays a batch's examples end to end in one row, with the inputs packed attention needs."""

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        input_ids: list[int] = []
        labels: list[int] = []
        weights: list[float] = []
        positions: list[int] = []
        edges = [0]
        for item in batch:
            n = len(item["input_ids"])
            input_ids += item["input_ids"]
            labels += [IGNORE_INDEX, *item["labels"][1:]]
            weights += [0.0, *item.get(TOKEN_WEIGHTS, [])[1:]]
            positions += range(n)
            edges.append(edges[-1] + n)
        cumulative = torch.tensor(edges, dtype=torch.int32)
        longest = max(b - a for a, b in zip(edges[:-1], edges[1:], strict=True))
        extra = {TOKEN_WEIGHTS: torch.tensor([weights])} if TOKEN_WEIGHTS in batch[0] else {}
        return extra | {
            "input_ids": torch.tensor([input_ids]),
            "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([positions]),
            "cu_seq_lens_q": cumulative,
            "cu_seq_lens_k": cumulative,
            "max_length_q": longest,
            "max_length_k": longest,
        }
