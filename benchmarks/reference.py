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

from pipelines.train.encoding import IGNORE_INDEX, ResponseOnlyCollator, encode_prompt, fit_prompt

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


@torch.no_grad()
def previous_candidate_scoring(model, tokenizer, shape, prompts: Sequence[str], inputs: Sequence[str], *,
                               batch_size: int, max_prompt_tokens: int, desc: str = "previous") -> list[str]:
    """The platform's harmonization scoring before shared-prefix scoring (the baseline of its speed-up).

    Each prompt is prefilled once, its KV cache repeated for the k candidates, and every candidate
    fed whole: the description is fed again in each of the seven answers.
    """
    from pipelines.infer.constrained import IncrementalBatch

    candidates = [shape.candidates(text) for text in inputs]
    k = len(candidates[0]) if candidates else 0
    encoded = [fit_prompt(encode_prompt(tokenizer, p), max_prompt_tokens) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    outputs = [""] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        rows = order[start : start + batch_size]
        targets = [tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                   for i in rows for c in candidates[i]]
        batch = IncrementalBatch(model, tokenizer.pad_token_id)
        first = torch.log_softmax(batch.start([encoded[i] for i in rows]), dim=-1).repeat_interleave(k, dim=0)
        batch.expand(k)
        rest = torch.log_softmax(batch.feed_all([t[:-1] for t in targets]), dim=-1)
        for r, i in enumerate(rows):
            scores = []
            for j in range(r * k, (r + 1) * k):
                t = torch.tensor(targets[j], device=rest.device)
                scores.append(float(first[j, t[0]] + rest[j, : len(t) - 1].gather(-1, t[1:, None]).sum()))
            outputs[i] = candidates[i][max(range(k), key=scores.__getitem__)]
    return outputs


@torch.no_grad()
def previous_slot_decoding(model, tokenizer, shape, prompts: Sequence[str], inputs: Sequence[str], *,
                           batch_size: int, max_prompt_tokens: int, desc: str = "previous") -> list[str]:
    """The platform's labeling decoder before issue #14's fix, kept to measure what the fix changed.

    After choosing a slot's value it fed only the value's tokens after its first, so for one-token
    values ("Yes"/"No") the next slot was decided without the chosen value in its context.
    """
    from pipelines.infer.constrained import IncrementalBatch, compile_slots

    compiled = compile_slots(tokenizer, shape)
    encoded = [fit_prompt(encode_prompt(tokenizer, p), max_prompt_tokens) + compiled.runs[0] for p in prompts]
    outputs = [""] * len(prompts)
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
        rows = list(range(start, min(start + batch_size, len(prompts))))
        batch = IncrementalBatch(model, tokenizer.pad_token_id)
        logits = batch.start([encoded[i] for i in rows])
        picks: list[list[int]] = [[] for _ in rows]
        for slot, options in enumerate(compiled.options):
            chosen = logits[:, torch.tensor([o[0] for o in options], device=logits.device)].argmax(-1).tolist()
            for r, value in enumerate(chosen):
                picks[r].append(value)
            if slot + 1 < len(compiled.options):
                logits = batch.feed([options[v][1:] + compiled.runs[slot + 1] for v in chosen])
        for r, i in enumerate(rows):
            outputs[i] = shape.render([shape.values[v] for v in picks[r]])
    return outputs
