"""Response-only loss masking, prompt truncation and the padding collator."""
from __future__ import annotations

from pipelines.tasks.base import Example, format_prompt
from pipelines.training_data import IGNORE_INDEX, ResponseOnlyCollator, encode_example, fit_prompt


class CharTokenizer:
    """One token per character: enough to check masking arithmetic exactly."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_loss_only_on_response_plus_eos():
    ex = Example("labeling/r1", "labeling", format_prompt("Do.", "abc"), '{"a": "Yes"}', None)
    enc = encode_example(CharTokenizer(), ex, max_length=512)
    n_prompt = len(ex.prompt)
    assert enc["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert enc["labels"][n_prompt:] == [ord(c) for c in ex.target] + [0]
    assert enc["input_ids"] == [ord(c) for c in ex.prompt + ex.target] + [0]


def test_truncation_keeps_directive_and_response_marker():
    ex = Example("x/1", "x", format_prompt("Do.", "y" * 400), "T", None)
    enc = encode_example(CharTokenizer(), ex, max_length=100)
    assert len(enc["input_ids"]) == 100
    text = "".join(chr(i) for i in enc["input_ids"][:-1])
    assert text.startswith("### Instruction:\nDo.") and text.endswith("### Response:\nT")
    assert fit_prompt([1, 2, 3], 10) == [1, 2, 3]


def test_collator_pads_right_and_masks():
    batch = ResponseOnlyCollator(pad_token_id=9)([
        {"input_ids": [1, 2, 3], "labels": [IGNORE_INDEX, 2, 3]},
        {"input_ids": [4], "labels": [4]},
    ])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
