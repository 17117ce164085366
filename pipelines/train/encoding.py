"""Tokenized training examples with the loss on the response only, and their batch collator."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines.padding import pad_rows
from pipelines.tasks import get_task
from pipelines.tasks.base import Example

IGNORE_INDEX = -100  # label value the cross-entropy loss skips
KEEP_HEAD_TOKENS = 24  # prompt tokens kept from the start (the directive) when truncating
MAX_SEQ_LENGTH = 768  # default tokens of prompt + answer, in training and in evaluation
TOKEN_WEIGHTS = "token_weights"  # optional per-token loss weights, aligned with labels (value_weighting)


def prompt_budget(task_name: str, max_seq_length: int) -> int:
    """Prompt tokens a task keeps: the sequence length less its answer budget (generation budget + eos).

    Training and evaluation cut a long prompt to this same budget, so a long report reads the
    same in both (e.g. labeling: 768 - 161 = 607 tokens); at least half the sequence.
    """
    return max(max_seq_length // 2, max_seq_length - get_task(task_name).max_new_tokens - 1)


def fit_prompt(prompt_ids: list[int], budget: int) -> list[int]:
    """Shorten a prompt to `budget` tokens by cutting the middle of the input.

    The head holds the directive and the tail holds the end of the input and the response
    marker, both of which the model needs; reports rarely exceed the budget.
    """
    if len(prompt_ids) <= budget:
        return prompt_ids
    head = min(KEEP_HEAD_TOKENS, budget // 2)
    return prompt_ids[:head] + prompt_ids[len(prompt_ids) - (budget - head):]


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Prompt token ids, exactly as they are fed at generation time (no special tokens added)."""
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def encode_example(tokenizer, example: Example, max_length: int) -> dict[str, list[int]]:
    """input_ids = prompt + target + eos; labels mask the prompt with IGNORE_INDEX.

    The prompt is cut to the task's prompt_budget, as in evaluation; a target longer than half
    the sequence is cut before its eos (the eos is kept), and only then may a long prompt be cut
    further to fit.
    """
    target_ids = tokenizer(example.target, add_special_tokens=False)["input_ids"][: max_length // 2 - 1]
    target_ids = target_ids + [tokenizer.eos_token_id]
    budget = min(prompt_budget(example.task, max_length), max_length - len(target_ids))
    prompt_ids = fit_prompt(encode_prompt(tokenizer, example.prompt), budget)
    return {
        "input_ids": prompt_ids + target_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids,
    }


class EncodedDataset(torch.utils.data.Dataset):
    """A list of encoded examples; Trainer reads `input_ids` lengths to group by length."""

    def __init__(self, items: list[dict[str, list[int]]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.items[index]

    def useful_tokens(self) -> int:
        """Non-padding tokens in one pass over the data."""
        return sum(len(item["input_ids"]) for item in self.items)


@dataclass
class ResponseOnlyCollator:
    """Pads a batch to its longest example (right padding) and builds the attention mask."""

    pad_token_id: int

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        input_ids, attention = pad_rows([item["input_ids"] for item in batch], self.pad_token_id)
        labels, _ = pad_rows([item["labels"] for item in batch], IGNORE_INDEX)
        out = {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
        if TOKEN_WEIGHTS in batch[0]:
            weights = torch.zeros(labels.shape, dtype=torch.float32)
            for row, item in enumerate(batch):
                weights[row, : len(item[TOKEN_WEIGHTS])] = torch.tensor(item[TOKEN_WEIGHTS])
            out[TOKEN_WEIGHTS] = weights
        return out
