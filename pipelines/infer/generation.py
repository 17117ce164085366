"""Batched, deterministic (greedy) generation with left padding and the KV cache, and `complete`,
which answers a task's prompts with free or constrained decoding."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from pipelines.infer.constrained import decode_constrained
from pipelines.padding import pad_rows
from pipelines.tasks.base import Task
from pipelines.train.encoding import MAX_SEQ_LENGTH, encode_prompt, fit_prompt, prompt_budget


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    max_prompt_tokens: int = 640,
    desc: str = "generate",
    stop: Sequence[str] = (),
) -> list[str]:
    """Greedy completions of `prompts`, in input order.

    Prompts are sorted by length so each batch pads little; left padding keeps every
    prompt's last token next to the first generated one. A row ends at eos, at any of the
    `stop` strings (kept in the output), or after max_new_tokens.
    """
    encoded = [fit_prompt(encode_prompt(tokenizer, p), max_prompt_tokens) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    outputs: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    with tqdm(total=len(prompts), desc=desc, unit="ex", leave=False) as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask = pad_rows([encoded[i] for i in rows], pad, side="left")
            width = ids.shape[1]
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
                **({"stop_strings": list(stop), "tokenizer": tokenizer} if stop else {}),
            )
            for r, i in enumerate(rows):
                outputs[i] = tokenizer.decode(out[r, width:], skip_special_tokens=True)
            bar.update(len(rows))
    model.train(was_training)
    return outputs


def complete(model, tokenizer, task: Task, prompts: Sequence[str], inputs: Sequence[str], *,
             decoding: str, max_new_tokens: int, batch_size: int = 16, max_seq_length: int = MAX_SEQ_LENGTH,
             desc: str = "generate") -> list[str]:
    """The model's raw answers to a task's prompts (whose inputs are `inputs`), in order.

    decoding "constrained" forces the answer's shape where the task declares one (labeling,
    harmonization); "free", and tasks without a shape (impression), generate greedily and stop
    early at the task's stop strings. max_new_tokens bounds free generation only. A long prompt
    is cut to the task's prompt_budget(max_seq_length), as in training.
    """
    max_prompt_tokens = prompt_budget(task.name, max_seq_length)
    if decoding == "constrained" and task.constrained is not None:
        return decode_constrained(model, tokenizer, task.constrained, prompts, inputs, batch_size=batch_size,
                                  max_prompt_tokens=max_prompt_tokens, desc=desc)
    return generate(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size,
                    max_prompt_tokens=max_prompt_tokens, desc=desc, stop=task.stop)
