"""The task registry: one suite over every registered task, then hand-computed metrics and parser cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipelines.data.records import ReportRecord, SeriesRecord, labels_from_findings
from pipelines.registry import UnknownNameError
from pipelines.tasks import get_task, parse_task_list, task_names
from pipelines.tasks.base import RESPONSE_MARKER, Parsed, Task
from pipelines.tasks.harmonization import normalize_class
from pipelines.tasks.json_output import extract_json_object
from pipelines.tasks.metrics import macro_f1, precision_recall_f1
from pipelines.vocabulary import LABEL_KEYS, NO, SERIES_CLASSES, YES

LABELING, HARMONIZATION, IMPRESSION = (get_task(n) for n in ("labeling", "harmonization", "impression"))


def report(
    rid: str, positive: set[str], impression: str = "Cardiomegaly without acute disease."
) -> ReportRecord:
    return ReportRecord(
        id=rid,
        findings="The heart is enlarged. The lungs are clear. No pleural effusion.",
        impression=impression,
        labels=labels_from_findings(positive),
        comparison="Chest radiograph from last year.",
        indication="Shortness of breath.",
    )


RECORDS = {
    "reports": [
        report("r1", {"Cardiomegaly"}),
        report("r2", set(), impression="No acute cardiopulmonary abnormality is seen."),
    ],
    "series": [
        SeriesRecord("s1", "AX T2 FLAIR 5mm", "T2/FLAIR"),
        # DICOM LO caps a description at 64 characters: the longest target the task must emit.
        SeriesRecord("s2", 'ep2d_diff_3scan_trace_p2_TRACEW "b1000" {research} x' + "y" * 11, "DWI"),
    ],
}


def perfect_value(metric: str) -> float | None:
    """What a metric reads when every output is the reference (None: not a quality metric)."""
    if metric.startswith("support/"):
        return None
    if metric.startswith("parse_"):
        return 0.0
    return 100.0 if metric == "bleu" else 1.0


# ---------------------------------------------------------------- every registered task


def test_registry_holds_the_three_paper_tasks_in_order() -> None:
    assert task_names() == ["labeling", "harmonization", "impression"]


@pytest.fixture(params=task_names())
def task(request: pytest.FixtureRequest) -> Task:
    return get_task(request.param)


def test_task_declaration_is_consistent(task: Task) -> None:
    assert task.directive.strip() and task.max_new_tokens > 0
    assert task.dataset in RECORDS
    examples = [task.build_example(r) for r in RECORDS[task.dataset]]
    scores = task.score([e.reference for e in examples], [task.parse(e.target) for e in examples])
    assert task.headline_metric in scores.metrics


def test_examples_have_stable_ids_and_instruction_prompts(task: Task) -> None:
    for record in RECORDS[task.dataset]:
        example = task.build_example(record)
        assert example.id == f"{task.name}/{record.id}"
        assert example.task == task.name
        assert task.directive in example.prompt
        assert example.prompt.endswith(RESPONSE_MARKER)


def test_target_parses_back_to_the_reference(task: Task) -> None:
    for record in RECORDS[task.dataset]:
        example = task.build_example(record)
        assert task.parse(example.target) == Parsed(example.reference, "ok")


def test_target_fits_max_new_tokens(task: Task) -> None:
    # Crude guard on the budget: BPE tokenizers average 3-4 characters per token on this text.
    for record in RECORDS[task.dataset]:
        assert len(task.build_example(record).target) / 3 <= task.max_new_tokens


def test_scoring_the_references_gives_perfect_metrics(task: Task) -> None:
    examples = [task.build_example(r) for r in RECORDS[task.dataset]]
    scores = task.score([e.reference for e in examples], [task.parse(e.target) for e in examples])
    for name, value in scores.metrics.items():
        expected = perfect_value(name)
        if expected is not None:
            assert value == pytest.approx(expected), name
    assert len(scores.per_example) == len(examples)


@pytest.mark.parametrize("parsed_count", [0, 1, 3])
def test_score_rejects_mismatched_or_empty_inputs(task: Task, parsed_count: int) -> None:
    references = [task.build_example(r).reference for r in RECORDS[task.dataset]]  # two
    with pytest.raises(ValueError):
        task.score(
            references[:0] if parsed_count == 0 else references, [Parsed(None, "failed")] * parsed_count
        )


def test_a_failed_parse_scores_zero_on_the_headline_metric(task: Task) -> None:
    example = task.build_example(RECORDS[task.dataset][0])
    failed = task.parse("")
    assert failed == Parsed(None, "failed")
    scores = task.score([example.reference], [failed])
    assert scores.metrics["parse_fail_rate"] == 1.0
    assert scores.metrics[task.headline_metric] == 0.0


# ---------------------------------------------------------------- parse_task_list


def test_parse_task_list_keeps_the_given_order_and_strips_spaces() -> None:
    assert parse_task_list(" impression , labeling") == ["impression", "labeling"]
    assert parse_task_list("harmonization") == ["harmonization"]


@pytest.mark.parametrize(
    ("text", "error", "fragment"),
    [
        ("", ValueError, "empty"),
        (" , ", ValueError, "empty"),
        ("labeling,,impression", ValueError, "empty element"),
        ("labeling, labeling", ValueError, "repeats"),
        ("labeling,captioning", UnknownNameError, "captioning"),
    ],
)
def test_parse_task_list_errors_list_the_valid_names(text: str, error: type, fragment: str) -> None:
    with pytest.raises(error, match=fragment) as caught:
        parse_task_list(text)
    assert all(name in str(caught.value) for name in task_names())


def test_get_task_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="harmonization"):
        get_task("summarization")


# ---------------------------------------------------------------- lenient JSON


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": "b"}', {"a": "b"}),
        ("Answer: {'a': 'Yes', 'b': 'No',} and then more", {"a": "Yes", "b": "No"}),
        ('{"a": "Yes", "b": "N', {"a": "Yes", "b": "N"}),  # cut at max_new_tokens
        ("{“a”: “b”}", {"a": "b"}),
        ("{No Finding: Yes, Edema: true}", {"No Finding": "Yes", "Edema": "true"}),
        ("{'it's': 'Crohn's'}", {"it's": "Crohn's"}),
        ('```json\n{"a": 1, "b": true, "c": [1, 2]}\n```', {"a": "1", "b": "true", "c": "[1, 2]"}),
        ('{"a": "first", "a": "second"}', {"a": "first"}),
        ('{see below} {"y": "z"}', {"y": "z"}),
        ("{}", None),
        ("no braces here", None),
        ("{{{{", None),
        ('{"a"', None),
    ],
)
def test_extract_json_object_tolerates_sloppy_output(text: str, expected: dict[str, str] | None) -> None:
    assert extract_json_object(text) == expected


def test_extract_json_object_survives_deep_nesting() -> None:
    assert extract_json_object('{"a": ' + "[" * 100_000) == {"a": "[" * 100_000}


# ---------------------------------------------------------------- labeling


def labels(*positive: str, **overrides: str) -> dict[str, str]:
    result = labels_from_findings(set(positive))
    result.update({k.replace("_", " "): v for k, v in overrides.items()})
    return result


FULL = labels("Cardiomegaly", "Pleural Effusion")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (json.dumps(FULL), Parsed(FULL, "ok")),
        (str(FULL) + "\n### Instruction:\nReport CXR diagnosis.", Parsed(FULL, "ok")),  # Python repr
        (json.dumps({k.upper().replace(" ", "_"): v for k, v in FULL.items()}), Parsed(FULL, "ok")),
        (
            json.dumps({k.lower(): {YES: "true", NO: "0"}[v] for k, v in FULL.items()}),
            Parsed(FULL, "ok"),
        ),
        (json.dumps({k: v + "." for k, v in FULL.items()}).replace('"', "“", 2), Parsed(FULL, "ok")),
        (
            '{"Cardiomegaly": "Yes", "Edema": "maybe", "Other Pleural": "No", "Foo": "Yes"}',
            Parsed({"Cardiomegaly": YES, "Pleural Other": NO}, "partial"),
        ),
        ("The report shows cardiomegaly.", Parsed(None, "failed")),
        ('{"diagnosis": "cardiomegaly"}', Parsed(None, "failed")),
    ],
)
def test_labeling_parser_tolerance(text: str, expected: Parsed) -> None:
    assert LABELING.parse(text) == expected


def test_labeling_truncated_output_is_partial() -> None:
    target = json.dumps(FULL)
    cut = target[: target.index('"Atelectasis"') + len('"Atelectasis": "N')]
    parsed = LABELING.parse(cut)
    assert parsed.status == "partial"
    assert list(parsed.value) == list(LABEL_KEYS[: LABEL_KEYS.index("Atelectasis")])  # "N" is no word


def test_labeling_metrics_on_a_hand_computed_case() -> None:
    references = [
        labels("Cardiomegaly", "Edema"),
        labels(),
        labels("Cardiomegaly", "Pleural Effusion"),
        labels("Edema"),
    ]
    partial = {k: v for k, v in references[2].items() if k not in ("Pleural Effusion", "Fracture")}
    parsed = [
        Parsed(labels("Cardiomegaly"), "ok"),  # misses Edema: FN
        Parsed(labels(Cardiomegaly=YES), "ok"),  # extra Cardiomegaly: FP
        Parsed(partial, "partial"),  # missing Pleural Effusion (ref Yes): FN; Fracture (ref No): FP
        Parsed(references[3], "ok"),
    ]
    m = LABELING.score(references, parsed).metrics
    # Cardiomegaly tp=2 fp=1 fn=0; Edema tp=1 fn=1; No Finding tp=1; Pleural Effusion fn=1;
    # Fracture fp=1; the other nine labels have tp+fp+fn=0 and score 1.0 by policy.
    assert (m["precision/Cardiomegaly"], m["recall/Cardiomegaly"]) == pytest.approx((2 / 3, 1.0))
    assert m["f1/Cardiomegaly"] == pytest.approx(0.8)
    assert (m["precision/Edema"], m["recall/Edema"], m["f1/Edema"]) == pytest.approx((1.0, 0.5, 2 / 3))
    assert m["f1/No Finding"] == 1.0
    assert (m["precision/Pleural Effusion"], m["f1/Pleural Effusion"]) == (0.0, 0.0)
    assert (m["recall/Fracture"], m["f1/Fracture"]) == (0.0, 0.0)
    assert m["f1/Lung Lesion"] == m["precision/Lung Lesion"] == m["recall/Lung Lesion"] == 1.0
    assert [m[f"support/{k}"] for k in ("Cardiomegaly", "Edema", "No Finding", "Fracture")] == [2, 2, 1, 0]
    assert m["f1_macro"] == pytest.approx((0.8 + 2 / 3 + 1 + 0 + 0 + 9) / 14, abs=1e-12)
    # Supported: the labels with a reference Yes (Cardiomegaly, Edema, No Finding, Pleural Effusion);
    # Fracture's false positive and the nine absent labels stay out.
    assert m["f1_macro_supported"] == pytest.approx((0.8 + 2 / 3 + 1 + 0) / 4, abs=1e-12)
    assert m["f1_micro"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 2))  # TP 4, FP 2, FN 2 pooled
    assert m["exact_match"] == 0.25
    assert (m["parse_partial_rate"], m["parse_fail_rate"]) == (0.25, 0.0)


def test_labeling_f1_agrees_with_sklearn() -> None:
    references = [labels("Edema"), labels(), labels("Edema", "Atelectasis"), labels("Fracture")]
    parsed = [
        Parsed(labels("Edema", "Atelectasis"), "ok"),
        Parsed(None, "failed"),
        Parsed({"Edema": YES}, "partial"),
        Parsed(labels("Fracture"), "ok"),
    ]
    m = LABELING.score(references, parsed).metrics
    # Expand the wrong-when-missing rule by hand, then let sklearn count.
    filled = [
        {k: (p.value or {}).get(k, NO if r[k] == YES else YES) for k in LABEL_KEYS}
        for r, p in zip(references, parsed, strict=True)
    ]
    for key in LABEL_KEYS:
        y_true = [r[key] == YES for r in references]
        y_pred = [f[key] == YES for f in filled]
        assert m[f"f1/{key}"] == pytest.approx(f1_score(y_true, y_pred, zero_division=1.0)), key


def test_labeling_failed_parse_is_wrong_on_every_label() -> None:
    reference = labels()  # No Finding Yes, everything else No
    scores = LABELING.score([reference], [LABELING.parse("garbage")])
    assert scores.per_example == [
        {"correct": dict.fromkeys(LABEL_KEYS, 0), "label_accuracy": 0.0, "exact_match": 0}
    ]
    assert scores.metrics["recall/No Finding"] == 0.0  # FN
    assert scores.metrics["precision/Edema"] == 0.0  # FP
    assert scores.metrics["f1_macro"] == 0.0


def test_labeling_per_example_scores() -> None:
    reference = labels("Edema")
    scores = LABELING.score([reference], [Parsed(labels(), "ok")])  # wrong on Edema and No Finding
    (example,) = scores.per_example
    assert example["label_accuracy"] == pytest.approx(12 / 14)
    assert example["exact_match"] == 0
    assert [k for k, ok in example["correct"].items() if not ok] == ["No Finding", "Edema"]


def test_precision_recall_f1_zero_division_policy() -> None:
    assert precision_recall_f1(0, 0, 0) == (1.0, 1.0, 1.0)
    assert precision_recall_f1(0, 0, 3) == (0.0, 0.0, 0.0)
    assert precision_recall_f1(0, 2, 0) == (0.0, 0.0, 0.0)
    assert precision_recall_f1(3, 1, 2) == pytest.approx((0.75, 0.6, 6 / 9))


def test_precision_recall_f1_is_elementwise_on_arrays() -> None:
    precision, recall, f1 = precision_recall_f1(np.array([0, 0, 3]), np.array([0, 2, 1]), np.array([0, 0, 2]))
    assert precision.tolist() == [1.0, 0.0, 0.75] and recall.tolist() == [1.0, 0.0, 0.6]
    assert f1 == pytest.approx([1.0, 0.0, 6 / 9], abs=1e-12)


def test_macro_averages_of_the_issue_reproduction() -> None:
    # References T1, T2, T1, T2; one T1 predicted as T2. T1: tp 1, fn 1 -> F1 2/3. T2: tp 2, fp 1 ->
    # F1 4/5. The five other classes occur nowhere.
    y_true, y_pred = ["T1", "T2", "T1", "T2"], ["T1", "T2", "T2", "T2"]
    tp, fp, fn = np.array([1, 2, 0, 0, 0, 0, 0]), np.array([0, 1, 0, 0, 0, 0, 0]), np.array([1, 0, 0, 0, 0, 0, 0])
    assert macro_f1(tp, fp, fn, "occurring") == pytest.approx(11 / 15, abs=1e-12)  # the 0.733
    assert macro_f1(tp, fp, fn, "occurring") == pytest.approx(f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    assert macro_f1(tp, fp, fn, "all") == pytest.approx((2 / 3 + 4 / 5 + 5) / 7, abs=1e-12)  # the 0.924
    assert macro_f1(tp, fp, fn, "supported") == pytest.approx(11 / 15, abs=1e-12)
    scores = HARMONIZATION.score(y_true, [Parsed(c, "ok") for c in y_pred])
    assert scores.metrics["f1_macro"] == pytest.approx(11 / 15, abs=1e-12)


def test_macro_f1_is_vectorised_and_nan_without_a_class_to_average() -> None:
    tp = np.array([[1, 0], [0, 0]])
    fp = np.array([[0, 1], [0, 0]])
    fn = np.zeros((2, 2), dtype=int)
    assert macro_f1(tp, fp, fn, "all").tolist() == [0.5, 1.0]
    supported = macro_f1(tp, fp, fn, "supported")
    assert supported[0] == 1.0 and math.isnan(supported[1])
    with pytest.raises(UnknownNameError, match="all, occurring, supported"):
        macro_f1(tp, fp, fn, "weighted")


def test_supported_macro_f1_ignores_absent_labels_that_the_paper_scores_1() -> None:
    # Two reports, only Cardiomegaly positive. A false "Edema" turns Edema's free 1.0 into 0.0:
    # the paper's f1_macro drops by 1/14, the supported mean does not move.
    references = [labels("Cardiomegaly"), labels("Cardiomegaly")]
    exact = LABELING.score(references, [Parsed(r, "ok") for r in references]).metrics
    one_fp = LABELING.score(references, [Parsed(references[0], "ok"), Parsed(labels("Cardiomegaly", "Edema"), "ok")])
    assert exact["f1_macro"] - one_fp.metrics["f1_macro"] == pytest.approx(1 / 14, abs=1e-12)
    assert exact["f1_macro_supported"] == one_fp.metrics["f1_macro_supported"] == 1.0
    y_true = [[r[k] == YES for k in LABEL_KEYS] for r in references]
    supported = [j for j, k in enumerate(LABEL_KEYS) if any(row[j] for row in y_true)]
    y_pred = [[r[k] == YES for k in LABEL_KEYS] for r in (references[0], labels("Cardiomegaly", "Edema"))]
    assert one_fp.metrics["f1_macro_supported"] == pytest.approx(
        f1_score(y_true, y_pred, labels=supported, average="macro"), abs=1e-12
    )


# ---------------------------------------------------------------- harmonization


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"AX FLAIR": "flair"}', Parsed("T2/FLAIR", "ok")),
        ("{'Sag T1 MPRAGE': 't1'} ### Instruction:", Parsed("T1", "ok")),
        ('{"x": "t2-flair"', Parsed("T2/FLAIR", "ok")),  # missing closing brace
        ('{"x": "T2 FLAIR"}', Parsed("T2/FLAIR", "ok")),
        ('{"localizer": "other"}', Parsed("Other", "ok")),
        ("{“DWI b1000”: “DWI”}", Parsed("DWI", "ok")),
        ("T2 FLAIR\nsomething else", Parsed("T2/FLAIR", "partial")),
        ("The class is SWI.", Parsed("SWI", "partial")),
        ('{"AX T1 SE": "T', Parsed(None, "failed")),  # cut inside the class
        ('{"x": "T3"}', Parsed(None, "failed")),
        ("no idea", Parsed(None, "failed")),
        ("", Parsed(None, "failed")),
    ],
)
def test_harmonization_parser_tolerance(text: str, expected: Parsed) -> None:
    assert HARMONIZATION.parse(text) == expected


@pytest.mark.parametrize(
    ("variant", "cls"),
    [
        ("flair", "T2/FLAIR"),
        ("T2 FLAIR", "T2/FLAIR"),
        ("t2_flair", "T2/FLAIR"),
        ("t1", "T1"),
        ("T2W", "T2"),
        ("adc.", "ADC"),
        ("OTHER", "Other"),
        ("T1 post", None),
        ("", None),
    ],
)
def test_normalize_class(variant: str, cls: str | None) -> None:
    assert normalize_class(variant) == cls
    assert all(normalize_class(c) == c for c in SERIES_CLASSES)


def test_harmonization_accuracy_and_macro_f1_by_hand() -> None:
    references = ["T1", "T2", "T2/FLAIR", "DWI", "T1"]
    parsed = [
        Parsed("T1", "ok"),
        Parsed("T2", "ok"),
        Parsed("T2", "partial"),
        Parsed(None, "failed"),
        Parsed("T1", "ok"),
    ]
    scores = HARMONIZATION.score(references, parsed)
    assert scores.metrics["accuracy"] == pytest.approx(3 / 5)
    # Per class F1: T1 1, T2 2/3 (tp 1, fp 1), T2/FLAIR 0, DWI 0; ADC/SWI/Other occur nowhere
    # and stay out of the mean, as in scikit-learn.
    assert scores.metrics["f1_macro"] == pytest.approx((1 + 2 / 3 + 0 + 0) / 4)
    assert scores.metrics["parse_fail_rate"] == pytest.approx(1 / 5)
    assert [e["correct"] for e in scores.per_example] == [1, 1, 0, 0, 1]


# ---------------------------------------------------------------- impression


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IMPRESSION: No acute disease.", Parsed("No acute disease.", "ok")),
        ("  impression:   Mild cardiomegaly.  ", Parsed("Mild cardiomegaly.", "ok")),
        ("No acute disease.", Parsed("No acute disease.", "partial")),
        ("IMPRESSION: A.\n\n### Instruction:\nReport CXR diagnosis.", Parsed("A.", "ok")),
        ("IMPRESSION: A. FINDINGS: heart normal", Parsed("A.", "ok")),
        ("IMPRESSION: A.\nIMPRESSION: A.", Parsed("A.", "ok")),
        ("IMPRESSION:", Parsed(None, "failed")),
        ("   \n", Parsed(None, "failed")),
    ],
)
def test_impression_parser(text: str, expected: Parsed) -> None:
    assert IMPRESSION.parse(text) == expected


def test_impression_build_example_rejects_a_missing_impression() -> None:
    with pytest.raises(ValueError, match="no impression"):
        IMPRESSION.build_example(report("r9", set(), impression="  "))


def test_impression_prompt_leaves_the_impression_out() -> None:
    example = IMPRESSION.build_example(report("r1", set(), impression="Unique words here."))
    assert "Unique words" not in example.prompt and "IMPRESSION" not in example.prompt
    assert example.target == "IMPRESSION: Unique words here."


HYP, REF = "the heart is normal in size", "the heart is normal in size and shape"


def test_bleu_matches_hand_computation() -> None:
    # Every n-gram of HYP appears in REF (precisions 6/6, 5/5, 4/4, 3/3), so BLEU is the
    # brevity penalty alone: exp(1 - ref_len / hyp_len) = exp(1 - 8/6).
    scores = IMPRESSION.score([REF], [Parsed(HYP, "ok")])
    assert scores.metrics["bleu"] == pytest.approx(100 * math.exp(1 - 8 / 6))
    assert scores.per_example[0]["bleu"] == pytest.approx(100 * math.exp(1 - 8 / 6))


def test_corpus_bleu_pools_counts_and_counts_a_failure_as_empty() -> None:
    second = "mild cardiomegaly is present"
    both = IMPRESSION.score([REF, second], [Parsed(HYP, "ok"), Parsed(second, "partial")])
    assert both.metrics["bleu"] == pytest.approx(100 * math.exp(1 - 12 / 10))  # lengths 10 vs 12
    failed = IMPRESSION.score([REF, second], [Parsed(HYP, "ok"), Parsed(None, "failed")])
    assert failed.metrics["bleu"] == pytest.approx(100 * math.exp(1 - 12 / 6))
    assert failed.per_example[1] == {"bleu": 0.0, "rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_rouge_matches_hand_counted_overlaps() -> None:
    hyp, ref = "size of the heart is normal", "the heart is normal in size"
    # Unigrams: 5 of 6 shared each way -> F 5/6. Bigrams: the-heart, heart-is, is-normal are
    # shared, 3 of 5 -> 0.6. Longest common subsequence "the heart is normal": 4 of 6 -> 2/3.
    (example,) = IMPRESSION.score([ref], [Parsed(hyp, "ok")]).per_example
    assert (example["rouge1"], example["rouge2"], example["rougeL"]) == pytest.approx((5 / 6, 0.6, 2 / 3))
    # HYP vs REF: unigram P 6/6, R 6/8 -> F 2PR/(P+R) = 6/7.
    scores = IMPRESSION.score([ref, REF], [Parsed(hyp, "ok"), Parsed(HYP, "ok")])
    assert scores.metrics["rouge1"] == pytest.approx((5 / 6 + 6 / 7) / 2)
