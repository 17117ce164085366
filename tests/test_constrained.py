"""Constrained decoding: always-valid answers, equal to a brute-force search without the KV cache."""
from __future__ import annotations

import itertools
import json
import random

import pytest
import torch

from pipelines.data.records import ReportRecord, SeriesRecord
from pipelines.infer.constrained import (
    IncrementalBatch,
    PrefixTree,
    TemplateError,
    _compile_by_pieces,
    best_candidates,
    candidate_scores,
    compile_slots,
    decode_constrained,
    slot_logits,
)
from pipelines.infer.evaluation import evaluate_task, input_text
from pipelines.infer.generation import complete
from pipelines.models import load_model_and_tokenizer
from pipelines.padding import pad_rows
from pipelines.tasks import get_task
from pipelines.tasks.base import SlotChoices, format_prompt
from pipelines.train.encoding import IGNORE_INDEX, encode_example
from pipelines.vocabulary import LABEL_KEYS, SERIES_CLASSES

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


def _teacher_forced_slot_logits(model, prompt_ids, compiled, picks):
    """Logits of each slot's value first tokens in one full forward pass of prompt + the answer."""
    ids, positions = list(prompt_ids) + compiled.runs[0], []
    for slot, pick in enumerate(picks):
        positions.append(len(ids) - 1)
        ids = ids + compiled.options[slot][pick] + compiled.runs[slot + 1]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    return torch.stack([logits[pos, [o[0] for o in compiled.options[slot]]] for slot, pos in enumerate(positions)])


MULTI_TOKEN = SlotChoices(render=lambda v: "; ".join(f"finding {k}: {x}" for k, x in enumerate(v)), slots=4,
                          values=("definitely present", "absent", "not assessable"))


@pytest.mark.parametrize("shape", [LABELING.constrained, MULTI_TOKEN], ids=["labeling", "multi-token values"])
def test_slot_logits_equal_a_full_forward_pass_of_the_teacher_forced_answer(model, shape):
    """Every slot is decided on the logits of the real answer so far (the chosen values fed back)."""
    model, tokenizer = model
    compiled = compile_slots(tokenizer, shape)
    if shape is MULTI_TOKEN:
        assert any(len(o) > 1 for o in compiled.options[0])
    prompts = [_prompt_ids(tokenizer, LABELING, r) for r in REPORTS]
    for batch_size in (1, 2, 3):  # left padding and holes in the KV cache change nothing
        for start in range(0, len(prompts), batch_size):
            rows = prompts[start : start + batch_size]
            with torch.no_grad():
                picks, decided = slot_logits(model, tokenizer.pad_token_id, compiled,
                                             [r + compiled.runs[0] for r in rows])
            for r, prompt_ids in enumerate(rows):
                want = _teacher_forced_slot_logits(model, prompt_ids, compiled, picks[r])
                got = torch.stack([d[r] for d in decided])
                assert torch.allclose(got, want, atol=1e-4), (batch_size, (got - want).abs().max())
                assert picks[r] == want.argmax(-1).tolist()


def test_slot_decoding_renders_the_decided_values(model):
    model, tokenizer = model
    compiled = compile_slots(tokenizer, LABELING.constrained)
    prompts = [format_prompt(LABELING.directive, r) for r in REPORTS]
    for batch_size in (1, 3):
        got = decode_constrained(model, tokenizer, LABELING.constrained, prompts, REPORTS,
                                 batch_size=batch_size, max_prompt_tokens=640, desc="test")
        for report, out in zip(REPORTS, got, strict=True):
            ids = _prompt_ids(tokenizer, LABELING, report) + compiled.runs[0]
            with torch.no_grad():
                picks, _ = slot_logits(model, tokenizer.pad_token_id, compiled, [ids])
            assert out == LABELING.constrained.render([LABELING.constrained.values[v] for v in picks[0]])
    for out in got:
        parsed = LABELING.parse(out)
        assert parsed.status == "ok" and list(json.loads(out)) == list(LABEL_KEYS)


# A labeler whose answers depend on the report: the tiny model trained for a few seconds on reports
# whose findings are named in the text. Its free answers are well-formed JSON; its values are still
# uncertain, so a decoder that decides a slot in the wrong context picks differently.
KEYWORDS = {"cardiomegaly": "Cardiomegaly", "effusion": "Pleural Effusion", "pneumothorax": "Pneumothorax",
            "edema": "Edema", "opacity": "Lung Opacity"}


def _keyword_reports() -> list[ReportRecord]:
    combos = [c for n in range(3) for c in itertools.combinations(KEYWORDS, n)]
    records = []
    for i, combo in enumerate(combos):
        labels = dict.fromkeys(LABEL_KEYS, "No") | {KEYWORDS[k]: "Yes" for k in combo}
        labels["No Finding"] = "No" if combo else "Yes"
        text = "FINDINGS: " + (" and ".join(combo) if combo else "clear lungs") + "."
        records.append(ReportRecord(id=f"k{i}", findings=text, impression="", labels=labels))
    return records


def _train_briefly(model, tokenizer, items: list[dict[str, list[int]]], *, steps: int) -> None:
    """A few seconds of seeded training (batches of 4 encoded examples), then eval mode."""
    torch.manual_seed(0)
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = rng.sample(items, 4)
        ids, mask = pad_rows([b["input_ids"] for b in batch], tokenizer.pad_token_id)
        labels, _ = pad_rows([b["labels"] for b in batch], IGNORE_INDEX)
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def keyword_labeler(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, "fp32", "cpu")
    examples = [LABELING.build_example(r) for r in _keyword_reports()]
    items = [encode_example(tokenizer, e, 768) for e in examples]
    _train_briefly(model, tokenizer, items, steps=150)
    return model, tokenizer, examples


def test_constrained_equals_free_greedy_wherever_the_free_answer_is_well_formed(keyword_labeler):
    model, tokenizer, examples = keyword_labeler
    prompts = [e.prompt for e in examples]
    inputs = [input_text(p) for p in prompts]
    free = complete(model, tokenizer, LABELING, prompts, inputs, decoding="free", max_new_tokens=160)
    constrained = complete(model, tokenizer, LABELING, prompts, inputs, decoding="constrained",
                           max_new_tokens=160, batch_size=3)
    well_formed = [i for i, out in enumerate(free) if LABELING.parse(out).status == "ok"]
    assert len(well_formed) >= len(examples) // 2
    assert [LABELING.parse(constrained[i]).value for i in well_formed] == [
        LABELING.parse(free[i]).value for i in well_formed]
    # the model's values depend on the report (else this test could not tell decoders apart)
    assert len({json.dumps(LABELING.parse(free[i]).value, sort_keys=True) for i in well_formed}) > 1


def _brute_force_scores(model, tokenizer, prompt_ids, candidates):
    scores = []
    for candidate in candidates:
        target = tokenizer(candidate, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        logprobs = _full_logprobs(model, prompt_ids + target)
        scores.append(sum(float(logprobs[len(prompt_ids) - 1 + i, t]) for i, t in enumerate(target)))
    return scores


def test_candidate_scoring_picks_the_most_likely_complete_answer(model):
    model, tokenizer = model
    expected = []
    for description in SERIES:
        candidates = HARMONIZATION.constrained.candidates(description)
        scores = _brute_force_scores(model, tokenizer, _prompt_ids(tokenizer, HARMONIZATION, description), candidates)
        expected.append(candidates[max(range(len(scores)), key=scores.__getitem__)])
    prompts = [format_prompt(HARMONIZATION.directive, d) for d in SERIES]
    for batch_size in (1, 4):
        got = decode_constrained(model, tokenizer, HARMONIZATION.constrained, prompts, SERIES,
                                 batch_size=batch_size, max_prompt_tokens=640, desc="test")
        assert got == expected
    assert all(HARMONIZATION.parse(o).value in SERIES_CLASSES for o in got)


@pytest.mark.parametrize("common_head", [True, False], ids=["shared instruction", "nothing shared"])
def test_candidate_scores_equal_a_full_forward_pass(model, common_head):
    """Shared prompt head, shared answer prefix and per-candidate suffixes add up to the full log-likelihood."""
    model, tokenizer = model
    prompts = [_prompt_ids(tokenizer, HARMONIZATION, d) if common_head else _tokens_of(tokenizer, d + " ->")
               for d in SERIES]
    candidates = [HARMONIZATION.constrained.candidates(d) for d in SERIES]
    want = [_brute_force_scores(model, tokenizer, p, c) for p, c in zip(prompts, candidates, strict=True)]
    for batch_size in (1, 2, 3):
        for start in range(0, len(SERIES), batch_size):
            rows = range(start, min(start + batch_size, len(SERIES)))
            targets = [[_tokens_of(tokenizer, c) + [tokenizer.eos_token_id] for c in candidates[i]] for i in rows]
            with torch.no_grad():
                got = candidate_scores(model, tokenizer, [prompts[i] for i in rows], targets)
                relative = candidate_scores(model, tokenizer, [prompts[i] for i in rows], targets, relative=True)
            for r, i in enumerate(rows):
                assert got[r] == pytest.approx(want[i], abs=1e-4), (batch_size, i)
                # without the answer text the candidates share: every score moves by the same amount
                shift = [a - b for a, b in zip(got[r], relative[r], strict=True)]
                assert shift == pytest.approx([shift[0]] * len(shift), abs=1e-4) and shift[0] < -1.0


def test_prefix_tree_shares_the_beginnings_of_candidates():
    tree = PrefixTree.of([[1, 2, 3, 9], [1, 2, 4, 9], [5, 9]])
    assert tree.tokens == [1, 2, 3, 4, 5]
    assert tree.parents == [-1, 0, 1, 1, -1]
    assert tree.paths == [[0, 1, 2], [0, 1, 3], [4]]
    assert tree.depths() == [1, 2, 3, 3, 1]
    assert tree.ancestries() == [[0], [0, 1], [0, 1, 2], [0, 1, 3], [4]]
    root = torch.log_softmax(torch.arange(10.0), -1)
    nodes = torch.log_softmax(torch.arange(50.0).reshape(5, 10).cos(), -1)
    assert tree.scores(root, nodes) == pytest.approx([
        float(root[1] + nodes[0, 2] + nodes[1, 3] + nodes[2, 9]),
        float(root[1] + nodes[0, 2] + nodes[1, 4] + nodes[3, 9]),
        float(root[5] + nodes[4, 9])])


# A harmonizer whose answers depend on the description: the tiny model trained for a few seconds
# on descriptions that name their class. Its first class token is confident for some descriptions,
# so the scoring can skip candidates, and uncertain for others, so it must score more.
SERIES_WORDS = {"T1": "sag t1 mprage", "T2": "ax t2 tse", "T2/FLAIR": "ax flair", "DWI": "dwi trace",
                "ADC": "adc map", "SWI": "swi minip", "Other": "localizer"}


@pytest.fixture(scope="module")
def series_harmonizer(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, "fp32", "cpu")
    records = [SeriesRecord(id=f"s{i}{j}", description=f"{words} {suffix}", label=label)
               for i, (label, words) in enumerate(SERIES_WORDS.items()) for j, suffix in enumerate(("", "3mm", "post"))]
    items = [encode_example(tokenizer, HARMONIZATION.build_example(r), 768) for r in records]
    _train_briefly(model, tokenizer, items, steps=80)
    return model, tokenizer


def test_best_candidates_skip_only_candidates_that_cannot_win(series_harmonizer):
    """Exact whatever the first round scores: every row's most likely first token only (confident 0.0:
    rows whose best candidate there is not clearly best get a second round), or everything (1.0)."""
    model, tokenizer = series_harmonizer
    descriptions = [*SERIES, "ax flair 5mm", "dwi trace b1000", "cor t2 tse", "unknown series", "t1 mprage post"]
    prompts = [_prompt_ids(tokenizer, HARMONIZATION, d) for d in descriptions]
    candidates = [HARMONIZATION.constrained.candidates(d) for d in descriptions]
    want = [_brute_force_scores(model, tokenizer, p, c) for p, c in zip(prompts, candidates, strict=True)]
    want_best = [max(range(len(w)), key=w.__getitem__) for w in want]
    targets = [[_tokens_of(tokenizer, c) + [tokenizer.eos_token_id] for c in row] for row in candidates]
    scored = {}
    for confident in (0.0, 0.9, 1.0):
        for batch_size in (1, 4, len(descriptions)):
            counts = []
            for start in range(0, len(descriptions), batch_size):
                rows = range(start, min(start + batch_size, len(descriptions)))
                with torch.no_grad():
                    best, n = best_candidates(model, tokenizer, [prompts[i] for i in rows],
                                              [targets[i] for i in rows], confident=confident)
                assert best == [want_best[i] for i in rows], (confident, batch_size)
                counts += n
            scored[confident, batch_size] = counts
    k = len(SERIES_CLASSES)
    assert all(n == k for n in scored[1.0, 4])
    # confident 0.0: some rows were settled by their first group, the others needed a second round
    settled = [n for n in scored[0.0, 4] if n < k]
    assert settled and len(settled) < len(descriptions), scored[0.0, 4]


def _tokens_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


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
