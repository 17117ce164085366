"""Response-only loss masking, prompt truncation and the padding collator."""
from __future__ import annotations

import pipelines.infer.generation as generation
from pipelines.tasks import get_task
from pipelines.tasks.base import Example, format_prompt
from pipelines.train.encoding import (
    IGNORE_INDEX,
    ResponseOnlyCollator,
    encode_example,
    encode_prompt,
    fit_prompt,
    prompt_budget,
)


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
    ex = Example("harmonization/1", "harmonization", format_prompt("Do.", "y" * 400), "T", None)
    enc = encode_example(CharTokenizer(), ex, max_length=200)
    assert prompt_budget("harmonization", 200) == 200 - 64 - 1
    assert len(enc["input_ids"]) == 135 + 2  # the prompt budget, then "T" and eos
    text = "".join(chr(i) for i in enc["input_ids"][:-1])
    assert text.startswith("### Instruction:\nDo.") and text.endswith("### Response:\nT")
    assert fit_prompt([1, 2, 3], 10) == [1, 2, 3]


def test_a_cut_target_keeps_its_eos():
    ex = Example("impression/1", "impression", format_prompt("Do.", "abc"), "z" * 500, None)
    enc = encode_example(CharTokenizer(), ex, max_length=200)
    assert enc["input_ids"][-1] == CharTokenizer.eos_token_id
    assert enc["labels"][-1] == CharTokenizer.eos_token_id
    assert enc["labels"].count(ord("z")) == 200 // 2 - 1


def test_a_long_report_reads_the_same_in_training_and_in_evaluation(monkeypatch):
    """Training cuts a long prompt to the budget that evaluation feeds (not to 768 - len(target))."""
    task = get_task("labeling")
    report = "FINDINGS: " + "word " * 2000
    ex = Example("labeling/1", "labeling", format_prompt(task.directive, report), '{"a": "Yes"}', None)
    tokenizer = CharTokenizer()
    trained_prompt = [t for t, label in zip(*encode_example(tokenizer, ex, 768).values(), strict=True)
                      if label == IGNORE_INDEX]
    seen: dict[str, int] = {}

    def fake_generate(model, tokenizer_, prompts, *, max_prompt_tokens, **kwargs):
        seen["budget"] = max_prompt_tokens
        return [""] * len(prompts)

    monkeypatch.setattr(generation, "generate", fake_generate)
    generation.complete(None, tokenizer, task, [ex.prompt], [report], decoding="free", max_new_tokens=8,
                        max_seq_length=768)
    assert seen["budget"] == prompt_budget("labeling", 768) == 768 - task.max_new_tokens - 1
    assert trained_prompt == fit_prompt(encode_prompt(tokenizer, ex.prompt), seen["budget"])


def test_collator_pads_right_and_masks():
    batch = ResponseOnlyCollator(pad_token_id=9)([
        {"input_ids": [1, 2, 3], "labels": [IGNORE_INDEX, 2, 3]},
        {"input_ids": [4], "labels": [4]},
    ])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
