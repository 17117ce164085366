"""--value-weight and --choice-weight: only the slot-value (or class) tokens' loss weight changes;
the loss is the weighted mean."""
from __future__ import annotations

import pytest
import torch

from pipelines.config import ConfigError, FinetuneConfig
from pipelines.data.records import ReportRecord, SeriesRecord
from pipelines.models import load_model_and_tokenizer
from pipelines.tasks import get_task
from pipelines.train.encoding import IGNORE_INDEX, TOKEN_WEIGHTS, ResponseOnlyCollator, encode_example
from pipelines.train.packing import PackingCollator
from pipelines.train.value_weighting import add_value_weights, weighted_lm_loss
from pipelines.vocabulary import LABEL_KEYS, SERIES_CLASSES

LABELING, HARMONIZATION = get_task("labeling"), get_task("harmonization")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, "fp32", "cpu")
    return model, tokenizer


LABELS = dict.fromkeys(LABEL_KEYS, "No") | {"Cardiomegaly": "Yes", "Edema": "Yes"}


def _examples():
    report = ReportRecord(id="r1", findings="FINDINGS: Enlarged heart. Edema.", impression="", labels=LABELS)
    series = SeriesRecord(id="s1", description="AX T2 FLAIR", label="T2/FLAIR")
    return [LABELING.build_example(report), HARMONIZATION.build_example(series)]


def test_only_the_value_tokens_change_weight(tiny):
    _, tokenizer = tiny
    examples = _examples()
    plain = [encode_example(tokenizer, e, 768) for e in examples]
    items = [encode_example(tokenizer, e, 768) for e in examples]
    assert add_value_weights(items, examples, tokenizer, 4.0) == 1  # labeling only
    labeling, harmonization = items
    # prompt tokens weigh nothing, response tokens 1 except the 14 values (one token each here)
    weights = labeling[TOKEN_WEIGHTS]
    assert [w for w, lab in zip(weights, labeling["labels"], strict=True) if lab == IGNORE_INDEX] == \
        [0.0] * labeling["labels"].count(IGNORE_INDEX)
    heavy = [i for i, w in enumerate(weights) if w == 4.0]
    assert len(heavy) == len(LABEL_KEYS)
    values = [tokenizer.decode([labeling["labels"][i]]) for i in heavy]
    assert values == [LABELS[k] for k in LABEL_KEYS]
    assert sorted(set(weights) - {0.0, 4.0}) == [1.0]
    # a task without slot values keeps weight 1 on its whole response; ids and labels are untouched
    assert set(harmonization[TOKEN_WEIGHTS]) == {0.0, 1.0}
    for a, b in zip(plain, items, strict=True):
        assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]


def test_balance_weighs_each_value_by_its_slots_inverse_frequency(tiny):
    _, tokenizer = tiny
    # three reports: Cardiomegaly Yes in 1 of 3, Edema Yes in 2 of 3, every other label always No
    rows = [dict.fromkeys(LABEL_KEYS, "No") | extra for extra in
            ({"Cardiomegaly": "Yes", "Edema": "Yes"}, {"Edema": "Yes"}, {})]
    examples = [LABELING.build_example(ReportRecord(id=f"r{i}", findings="FINDINGS: x.", impression="", labels=row))
                for i, row in enumerate(rows)] + [HARMONIZATION.build_example(
                    SeriesRecord(id="s1", description="AX T2 FLAIR", label="T2/FLAIR"))]
    plain = [encode_example(tokenizer, e, 768) for e in examples]
    unbalanced = [encode_example(tokenizer, e, 768) for e in examples]
    balanced = [encode_example(tokenizer, e, 768) for e in examples]
    add_value_weights(unbalanced, examples, tokenizer, 3.0)
    assert add_value_weights(balanced, examples, tokenizer, 3.0, balance=0.5) == 3
    expected = {("Cardiomegaly", "Yes"): (2 / 1) ** 0.5, ("Cardiomegaly", "No"): 1.0,
                ("Edema", "Yes"): 1.0, ("Edema", "No"): (2 / 1) ** 0.5}
    for row, item, reference in zip(rows, balanced[:3], unbalanced[:3], strict=True):  # the reports
        heavy = [i for i, w in enumerate(reference[TOKEN_WEIGHTS]) if w == 3.0]
        assert len(heavy) == len(LABEL_KEYS)  # one token per value: position k is slot k
        for key, i in zip(LABEL_KEYS, heavy, strict=True):
            assert item[TOKEN_WEIGHTS][i] == pytest.approx(3.0 * expected.get((key, row[key]), 1.0))
        # every other token keeps its unbalanced weight
        assert [w for i, w in enumerate(item[TOKEN_WEIGHTS]) if i not in heavy] == \
            [w for i, w in enumerate(reference[TOKEN_WEIGHTS]) if i not in heavy]
    assert balanced[-1][TOKEN_WEIGHTS] == unbalanced[-1][TOKEN_WEIGHTS]  # no slots: untouched
    for a, b in zip(plain, balanced, strict=True):
        assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]


@pytest.mark.parametrize("description", ["COR T2 loc", "t1_mprage_sag", 'odd "quoted" name'])
def test_choice_weight_changes_only_the_class_tokens(tiny, description):
    _, tokenizer = tiny
    for label in SERIES_CLASSES:
        examples = [_examples()[0], HARMONIZATION.build_example(SeriesRecord(id="s", description=description,
                                                                             label=label))]
        plain = [encode_example(tokenizer, e, 768) for e in examples]
        items = [encode_example(tokenizer, e, 768) for e in examples]
        add_value_weights(plain, examples, tokenizer, 1.0)
        add_value_weights(items, examples, tokenizer, 1.0, choice_weight=4.0)
        assert items[0][TOKEN_WEIGHTS] == plain[0][TOKEN_WEIGHTS]  # labeling has no candidates: untouched
        item = items[1]
        heavy = [i for i, w in enumerate(item[TOKEN_WEIGHTS]) if w == 4.0]
        assert heavy == list(range(heavy[0], heavy[-1] + 1))  # one run of tokens
        # independently: the heavy run holds the class name, and only the tokens in which this
        # answer's token sequence differs from another class's answer
        decoded = tokenizer.decode([item["labels"][i] for i in heavy])
        assert label in decoded and len(decoded) <= len(label) + 1, (label, decoded)
        others = [tokenizer(HARMONIZATION.constrained.candidates(description)[k], add_special_tokens=False)
                  ["input_ids"] for k, c in enumerate(SERIES_CLASSES) if c != label]
        start = item["labels"].index(next(t for t in item["labels"] if t != IGNORE_INDEX))
        answer = item["labels"][start:]
        first_difference = min(next(j for j, (a, b) in enumerate(zip(answer, o, strict=False)) if a != b)
                               for o in others)
        assert heavy[0] == start + first_difference
        assert [w for i, w in enumerate(item[TOKEN_WEIGHTS]) if i not in heavy] == \
            [w for i, w in enumerate(plain[1][TOKEN_WEIGHTS]) if i not in heavy]
        assert item["input_ids"] == plain[1]["input_ids"] and item["labels"] == plain[1]["labels"]


def test_a_cut_harmonization_target_keeps_unit_weights(tiny):
    _, tokenizer = tiny
    example = HARMONIZATION.build_example(SeriesRecord(id="s", description="AX T2 FLAIR " * 8, label="T2/FLAIR"))
    item = encode_example(tokenizer, example, 24)  # the target is cut: it is no candidate any more
    add_value_weights([item], [example], tokenizer, 1.0, choice_weight=4.0)
    assert set(item[TOKEN_WEIGHTS]) == {0.0, 1.0}


def _per_token_losses(model, item):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([item["input_ids"]])).logits[0].float()
    out = []
    for t in range(1, len(item["labels"])):
        if item["labels"][t] != IGNORE_INDEX:
            out.append((float(-torch.log_softmax(logits[t - 1], -1)[item["labels"][t]]), item[TOKEN_WEIGHTS][t]))
    return out


def test_weighted_loss_is_the_weighted_mean_of_token_losses_padded_and_packed(tiny):
    model, tokenizer = tiny
    examples = _examples()
    items = [encode_example(tokenizer, e, 768) for e in examples]
    add_value_weights(items, examples, tokenizer, 3.0)
    pairs = [p for item in items for p in _per_token_losses(model, item)]
    want = sum(loss * w for loss, w in pairs) / sum(w for _, w in pairs)
    padded = ResponseOnlyCollator(tokenizer.pad_token_id)(items)
    with torch.no_grad():
        logits = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    assert float(weighted_lm_loss(logits, padded["labels"], padded[TOKEN_WEIGHTS])) == pytest.approx(want, abs=1e-5)
    packed = PackingCollator()(items)
    assert packed[TOKEN_WEIGHTS].shape == packed["labels"].shape
    with torch.no_grad():  # attention across the two examples is irrelevant to this check of the weights:
        losses = []     # score each packed example alone and compare the weights the collator laid out
        for start, end in zip(packed["cu_seq_lens_q"][:-1].tolist(), packed["cu_seq_lens_q"][1:].tolist(),
                              strict=True):
            ids = packed["input_ids"][:, start:end]
            losses.append((model(input_ids=ids).logits, packed["labels"][:, start:end],
                           packed[TOKEN_WEIGHTS][:, start:end]))
    num = sum(float(weighted_lm_loss(*x)) * float(x[2][:, 1:].sum()) for x in losses)
    den = sum(float(x[2][:, 1:].sum()) for x in losses)
    assert num / den == pytest.approx(want, abs=1e-5)


def test_unit_weight_equals_the_models_own_response_loss(tiny):
    model, tokenizer = tiny
    example = _examples()[0]
    item = encode_example(tokenizer, example, 768)
    add_value_weights([item], [example], tokenizer, 1.0)
    batch = ResponseOnlyCollator(tokenizer.pad_token_id)([item])
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], labels=batch["labels"])
    assert float(weighted_lm_loss(out.logits, batch["labels"], batch[TOKEN_WEIGHTS])) == pytest.approx(
        float(out.loss), abs=1e-5)


def test_value_weight_is_validated_and_logged_as_a_param():
    assert FinetuneConfig(value_weight=5).as_params()["value_weight"] in ("5", "5.0")
    assert FinetuneConfig().value_weight == 1.0  # the paper's loss by default
    with pytest.raises(ConfigError, match="--value-weight"):
        FinetuneConfig(value_weight=0)
    assert FinetuneConfig(value_balance=0.5).as_params()["value_balance"] == "0.5"
    assert FinetuneConfig(value_balance=0.5).weights_tokens and not FinetuneConfig().weights_tokens
    with pytest.raises(ConfigError, match="--value-balance"):
        FinetuneConfig(value_balance=1.5)
    assert FinetuneConfig(choice_weight=5).as_params()["choice_weight"] in ("5", "5.0")
    assert FinetuneConfig(choice_weight=5).weights_tokens and FinetuneConfig().choice_weight == 1.0
    with pytest.raises(ConfigError, match="--choice-weight"):
        FinetuneConfig(choice_weight=-1)
