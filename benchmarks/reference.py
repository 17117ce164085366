"""The paper's published method, as the baseline every speed-up is measured against.

Evaluation: one example at a time, beam search with 5 beams plus sampling, up to 500 new
tokens. Training: the loss on the whole sequence (prompt and answer), batches drawn in random
order and padded to their longest example. These are the settings the issue quotes from the
paper's code; nothing here is used by the platform itself.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from pipelines.training_data import IGNORE_INDEX, ResponseOnlyCollator, encode_prompt, fit_prompt

REFERENCE_BEAMS = 5
REFERENCE_MAX_NEW_TOKENS = 500


@torch.no_grad()
def reference_generate(model, tokenizer, prompts: Sequence[str], *, max_prompt_tokens: int, seed: int,
                       num_beams: int = REFERENCE_BEAMS, max_new_tokens: int = REFERENCE_MAX_NEW_TOKENS,
                       desc: str = "reference") -> list[str]:
    """Beam-search multinomial sampling, one prompt at a time (the reference evaluation loop)."""
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    outputs = []
    for prompt in tqdm(prompts, desc=desc, unit="ex", leave=False):
        ids = torch.tensor([fit_prompt(encode_prompt(tokenizer, prompt), max_prompt_tokens)], device=device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             num_beams=num_beams, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        outputs.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return outputs


@dataclass
class WholeSequenceCollator(ResponseOnlyCollator):
    """The reference loss: every real token of prompt and answer is a label (padding is not)."""

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        out = super().__call__(batch)
        out["labels"] = out["input_ids"].masked_fill(out["attention_mask"] == 0, IGNORE_INDEX)
        return out


@dataclass
class PaddingCounter:
    """Wraps a collator and counts the tokens it hands to the model, padding included."""

    collator: object
    padded_tokens: int = 0

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        out = self.collator(batch)
        self.padded_tokens += out["input_ids"].numel()
        return out
