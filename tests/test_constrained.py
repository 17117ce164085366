"""Constrained decoding: always-valid answers, equal to a brute-force search without the KV cache."""
from __future__ import annotations

import json

import pytest
import torch

from pipelines.constrained import (
    IncrementalBatch,
    TemplateError,
    _compile_by_pieces,
    compile_slots,
    decode_constrained,
)
from pipelines.data.records import ReportRecord, SeriesRecord
from pipelines.evaluation import evaluate_task
from pipelines.generation import complete
from pipelines.models import load_model_and_tokenizer
from pipelines.schema import LABEL_KEYS, SERIES_CLASSES
from pipelines.tasks import get_task
from pipelines.tasks.base import SlotChoices, format_prompt

LABELING, HARMONIZATION = get_task("labeling"), get_task("harmonization")
REPORTS = [
    "FINDINGS: Heart size is normal. No pleural effusion.",
    "FINDINGS: Mild cardiomegaly with small bilateral pleural effusions and a right chest tube in place. "
    "IMPRESSION: Cardiomegaly, effusions.",
    "FINDINGS: Clear lungs.",
]
SERIES = ["AX T2 FLAIR", "sag_t1_mprage", "DWI b1000 TRACE", "ADC map", "SWI minIP", "localizer"]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, "fp32", "cpu")
    model.eval()
    return model, tokenizer


def _prompt_ids(tokenizer, task, text):
    return tokenizer(format_prompt(task.directive, text), add_special_tokens=False)["input_ids"]


def _full_logprobs(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


def test_labeling_template_is_the_training_tokenization(model):
    _, tokenizer = model
    compiled = compile_slots(tokenizer, LABELING.constrained)
    assert len(compiled.options) == len(LABEL_KEYS) and all(len(o) == 2 for o in compiled.options)
    picks = [i % 3 == 0 for i in range(len(LABEL_KEYS))]
    values = ["Yes" if p else "No" for p in picks]
    forced = list(compiled.runs[0])
    for slot, pick in enumerate(picks):
        forced += compiled.options[slot][0 if pick else 1] + compiled.runs[slot + 1]
    target = LABELING.constrained.render(values)
    assert forced == tokenizer(target, add_special_tokens=False)["input_ids"]


def test_slot_decoding_equals_a_brute_force_search_without_cache(model):
    model, tokenizer = model
    compiled = compile_slots(tokenizer, LABELING.constrained)
    expected = []
    for report in REPORTS:
        ids = _prompt_ids(tokenizer, LABELING, report) + compiled.runs[0]
        values = []
        for slot, options in enumerate(compiled.options):
            last = _full_logprobs(model, ids)[-1]
            pick = max(range(2), key=lambda v, last=last, options=options: float(last[options[v][0]]))
            values.append(LABELING.constrained.values[pick])
            ids = ids + options[pick] + compiled.runs[slot + 1]
        expected.append(LABELING.constrained.render(values))
    prompts = [format_prompt(LABELING.directive, r) for r in REPORTS]
    for batch_size in (1, 2, 3):  # padding and holes in the KV cache change nothing
        got = decode_constrained(model, tokenizer, LABELING.constrained, prompts, REPORTS,
                                 batch_size=batch_size, max_prompt_tokens=640, desc="test")
        assert got == expected
    for out in expected:
        parsed = LABELING.parse(out)
        assert parsed.status == "ok" and list(json.loads(out)) == list(LABEL_KEYS)


def test_candidate_scoring_picks_the_most_likely_complete_answer(model):
    model, tokenizer = model
    expected = []
    for description in SERIES:
        prompt = _prompt_ids(tokenizer, HARMONIZATION, description)
        scores = []
        for candidate in HARMONIZATION.constrained.candidates(description):
            target = tokenizer(candidate, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            logprobs = _full_logprobs(model, prompt + target)
            scores.append(sum(float(logprobs[len(prompt) - 1 + i, t]) for i, t in enumerate(target)))
        best = max(range(len(scores)), key=scores.__getitem__)
        expected.append(HARMONIZATION.constrained.candidates(description)[best])
    prompts = [format_prompt(HARMONIZATION.directive, d) for d in SERIES]
    for batch_size in (1, 4):
        got = decode_constrained(model, tokenizer, HARMONIZATION.constrained, prompts, SERIES,
                                 batch_size=batch_size, max_prompt_tokens=640, desc="test")
        assert got == expected
    assert all(HARMONIZATION.parse(o).value in SERIES_CLASSES for o in got)


def test_holes_in_the_cache_give_the_same_logits_as_one_contiguous_sequence(model):
    model, tokenizer = model
    a, b = [5, 6, 7, 8], [9, 10]
    batch = IncrementalBatch(model, tokenizer.pad_token_id)
    batch.start([a, b])
    batch.feed([[11, 12, 13], [14]])  # row 1 gets two holes
    logits = batch.feed([[15], [16, 17]])
    expected = [_full_logprobs(model, a + [11, 12, 13, 15])[-1], _full_logprobs(model, b + [14, 16, 17])[-1]]
    for row, want in enumerate(expected):
        assert torch.allclose(torch.log_softmax(logits[row], -1), want, atol=1e-4)


def test_template_by_pieces_renders_any_answer(model):
    _, tokenizer = model
    shape = SlotChoices(render=lambda v: f"<a>{v[0]}</a><b>{v[1]}</b>", slots=2, values=("present", "absent"))
    compiled = _compile_by_pieces(tokenizer, shape)
    text = tokenizer.decode(compiled.runs[0] + compiled.options[0][1] + compiled.runs[1] + compiled.options[1][0]
                            + compiled.runs[2])
    assert text == "<a>absent</a><b>present</b>"
    clash = SlotChoices(render=lambda v: f"[{v[0]}]", slots=1, values=("No", "No finding"))
    with pytest.raises(TemplateError, match="distinct tokens"):
        _compile_by_pieces(tokenizer, clash)


def test_evaluation_logs_no_parse_failures_when_constrained(model):
    model, tokenizer = model
    examples = [LABELING.build_example(_report(i, text)) for i, text in enumerate(REPORTS)]
    constrained = evaluate_task(model, tokenizer, "labeling", examples, decoding="constrained", batch_size=2)
    assert constrained.metrics["labeling/parse_fail_rate"] == 0.0
    assert constrained.metrics["labeling/parse_partial_rate"] == 0.0
    free = evaluate_task(model, tokenizer, "labeling", examples, decoding="free", max_new_tokens=8)
    assert free.metrics["labeling/parse_fail_rate"] == 1.0  # an untrained model writes no JSON


def test_free_decoding_is_the_only_path_for_tasks_without_a_shape(model):
    model, tokenizer = model
    impression = get_task("impression")
    assert impression.constrained is None
    prompts = [format_prompt(impression.directive, r) for r in REPORTS]
    a = complete(model, tokenizer, impression, prompts, REPORTS, decoding="constrained", max_new_tokens=6)
    b = complete(model, tokenizer, impression, prompts, REPORTS, decoding="free", max_new_tokens=6)
    assert a == b and all(isinstance(x, str) for x in a)


def test_training_targets_are_among_the_constrained_answers():
    example = HARMONIZATION.build_example(SeriesRecord(id="s1", description="AX T2 FLAIR", label="T2/FLAIR"))
    assert example.target in HARMONIZATION.constrained.candidates("AX T2 FLAIR")
    labels = _report(0, "x").labels
    assert LABELING.build_example(_report(0, "x")).target == LABELING.constrained.render(
        [labels[k] for k in LABEL_KEYS])


def _report(i: int, text: str) -> ReportRecord:
    labels = dict.fromkeys(LABEL_KEYS, "No") | {"No Finding": "Yes"}
    return ReportRecord(id=f"r{i}", findings=text, impression="", labels=labels)
