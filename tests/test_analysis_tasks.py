"""Per-task tables and comparisons, selection specs and alignment, on in-memory prediction records."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sacrebleu
from mlflow_fixtures import SLEEP_DIFFERENCES, harmonization_record, impression_record, labeling_record

from analysis.runs import (
    AlignmentError,
    ReferenceSpec,
    RunInfo,
    RunSelection,
    align,
    parse_key_values,
    read_predictions,
)
from analysis.stats import BootstrapSpec
from analysis.tasks import TASK_ANALYSES, CompareOptions
from analysis.tasks.impression import corpus_bleu
from pipelines.tasks import get_task
from pipelines.tasks.base import Parsed
from pipelines.vocabulary import LABEL_KEYS

NO_ALL = dict.fromkeys(LABEL_KEYS, "No")


def by_id(records):
    return {r["id"]: r for r in records}


def test_every_task_has_an_analysis():
    assert sorted(TASK_ANALYSES.names()) == ["harmonization", "impression", "labeling"]


# ---------------------------------------------------------------- labeling


def test_labeling_counts_missing_keys_and_failed_parses_as_wrong():
    edema = {**NO_ALL, "Edema": "Yes"}
    records = by_id(
        [
            labeling_record("r1", edema, dict(edema)),  # all right
            labeling_record("r2", edema, {k: v for k, v in edema.items() if k != "Edema"}),  # Edema missing
            labeling_record("r3", NO_ALL, {**NO_ALL, "Edema": "maybe"}),  # invalid value
            labeling_record("r4", NO_ALL, None),  # failed parse: every label wrong
        ]
    )
    tables = TASK_ANALYSES.get("labeling").summarize(records, 0.05)
    rows = {r["label"]: r for r in tables["labeling_per_label"]}
    # Edema: r1 tp, r2 fn (missing -> opposite of Yes), r3 fp (invalid -> opposite of No), r4 fp.
    assert {k: rows["Edema"][k] for k in ("tp", "fn", "fp", "tn", "support")} == {
        "tp": 1,
        "fn": 1,
        "fp": 2,
        "tn": 0,
        "support": 2,
    }
    assert rows["Edema"]["f1"] == pytest.approx(2 / 5)
    # Cardiomegaly: three true negatives and r4's false positive; no positives at all -> F1 = 0.
    assert rows["Cardiomegaly"]["fp"] == 1 and rows["Cardiomegaly"]["f1"] == 0.0
    summary = tables["labeling_summary"][0]
    assert summary["exact_match"] == pytest.approx(1 / 4)
    assert summary["parse_fail_rate"] == pytest.approx(1 / 4)
    assert summary["f1_macro"] == pytest.approx(sum(r["f1"] for r in rows.values()) / 14)


def test_labeling_f1_is_one_when_a_label_never_occurs_and_is_never_claimed():
    records = by_id([labeling_record("r1", NO_ALL, dict(NO_ALL))])
    summary = TASK_ANALYSES.get("labeling").summarize(records, 0.05)["labeling_summary"][0]
    assert summary["f1_macro"] == 1.0 and summary["f1_micro"] == 1.0


def test_labeling_mcnemar_per_label_with_holm():
    yes = {**NO_ALL, "Edema": "Yes"}
    ref = by_id([labeling_record(f"r{i}", yes, dict(yes)) for i in range(12)])
    other = by_id([labeling_record(f"r{i}", yes, dict(yes) if i < 2 else dict(NO_ALL)) for i in range(12)])
    pair = align("labeling", "A", ref, "B", other)
    rows = TASK_ANALYSES.get("labeling").compare(pair, CompareOptions(0.05, "holm"))["labeling_mcnemar"]
    edema = next(r for r in rows if r["label"] == "Edema")
    assert (edema["ref_only_correct"], edema["other_only_correct"]) == (10, 0)
    assert edema["p_value"] == pytest.approx(2 / 2**10) and edema["method"] == "exact-binomial"
    # Holm over 14 labels: the only non-unit p-value is multiplied by 14.
    assert edema["p_adjusted"] == pytest.approx(14 * 2 / 2**10) and edema["significant"]
    assert all(r["p_value"] == 1.0 for r in rows if r["label"] != "Edema")


# ---------------------------------------------------------------- harmonization


def test_harmonization_accuracy_confusion_and_invalid_outputs():
    records = by_id(
        [
            harmonization_record("s1", "T1", "T1"),
            harmonization_record("s2", "T2", "T1"),
            harmonization_record("s3", "DWI", "T3"),  # not a class
            harmonization_record("s4", "ADC", None),
        ]
    )
    tables = TASK_ANALYSES.get("harmonization").summarize(records, 0.05)
    summary = tables["harmonization_summary"][0]
    assert (summary["correct"], summary["n"], summary["accuracy"]) == (1, 4, 0.25)
    assert summary["ci_low"] < 0.25 < summary["ci_high"]
    cells = {
        (c["reference"], c["predicted"]): c["count"] for c in tables["harmonization_confusion"] if c["count"]
    }
    assert cells == {("T1", "T1"): 1, ("T2", "T1"): 1, ("DWI", "(invalid)"): 1, ("ADC", "(invalid)"): 1}
    assert summary["parse_fail_rate"] == 0.25


# ---------------------------------------------------------------- impression


def impression_pair():
    ref, other = {}, {}
    for i, diff in enumerate(SLEEP_DIFFERENCES):
        scores = {"bleu": 10.0 + i, "rouge1": 0.5, "rouge2": 0.3, "rougeL": 0.4}
        ref[f"impression/{i}"] = impression_record(
            str(i), "no acute cardiopulmonary process seen", "no acute cardiopulmonary process seen", scores
        )
        better = {**scores, "bleu": scores["bleu"] + diff}
        other[f"impression/{i}"] = impression_record(
            str(i), "no acute cardiopulmonary process seen", "normal chest", better
        )
    return ref, other


def test_impression_summary_and_paired_tests_on_the_sleep_differences():
    ref, other = impression_pair()
    analysis = TASK_ANALYSES.get("impression")
    summary = analysis.summarize(ref, 0.05)["impression_summary"][0]
    assert summary["bleu"] == pytest.approx(100.0)  # every parsed impression equals its reference
    assert summary["rougeL"] == pytest.approx(0.4)
    rows = analysis.compare(align("impression", "A", ref, "B", other), CompareOptions())[
        "impression_paired_tests"
    ]
    t_bleu = next(r for r in rows if r["metric"] == "bleu" and r["test"] == "paired_t")
    assert t_bleu["statistic"] == pytest.approx(4.0621, abs=1e-4)
    assert t_bleu["p_value"] == pytest.approx(0.002833, abs=1e-6)
    assert t_bleu["mean_diff"] == pytest.approx(1.58)
    assert (t_bleu["ci_low"], t_bleu["ci_high"]) == (
        pytest.approx(0.7001142, abs=1e-6),
        pytest.approx(2.4598858, abs=1e-6),
    )
    unchanged = [r for r in rows if r["metric"] != "bleu"]
    assert len(unchanged) == 6
    # Identical scores: Wilcoxon's p is 1; the t-test is degenerate (0/0), NaN with its reason.
    assert all(r["p_value"] == 1.0 for r in unchanged if r["test"] == "wilcoxon")
    for row in (r for r in unchanged if r["test"] == "paired_t"):
        assert math.isnan(row["p_value"]) and "every difference is 0" in row["note"] and not row["significant"]


def test_impression_without_per_example_scores_is_an_error():
    record = impression_record("1", "x", "x", {"bleu": 1.0})
    with pytest.raises(ValueError, match="rouge1"):
        TASK_ANALYSES.get("impression").summarize({record["id"]: record}, 0.05)


# ---------------------------------------------------------------- alignment and reading


def test_alignment_refuses_different_test_sets():
    ref = by_id([harmonization_record(f"s{i}", "T1", "T1") for i in range(5)])
    other = by_id([harmonization_record(f"s{i}", "T1", "T1") for i in range(1, 7)])
    with pytest.raises(
        AlignmentError, match=r"different test sets .*1 only in the first.*2 only in the second"
    ):
        align("harmonization", "run-a", ref, "run-b", other)


def test_alignment_refuses_same_ids_with_different_references():
    ref = by_id([harmonization_record("s1", "T1", "T1")])
    other = by_id([harmonization_record("s1", "T2", "T1")])
    with pytest.raises(AlignmentError, match="references differ"):
        align("harmonization", "run-a", ref, "run-b", other)


def test_alignment_orders_both_runs_alike():
    ref = by_id([harmonization_record(f"s{i}", "T1", "T1") for i in (3, 1, 2)])
    other = by_id([harmonization_record(f"s{i}", "T1", "T2") for i in (2, 3, 1)])
    pair = align("harmonization", "a", ref, "b", other)
    assert [r["id"] for r in pair.ref] == [r["id"] for r in pair.other] == pair.ids


def test_read_predictions_refuses_duplicate_ids(tmp_path):
    path = tmp_path / "harmonization.jsonl"
    record = harmonization_record("s1", "T1", "T1")
    path.write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="duplicate example id"):
        read_predictions(path, "run-x")


# ---------------------------------------------------------------- selection specs


def test_selection_filter_quotes_param_values():
    selection = RunSelection("exp", "paper", "checkpoint", {"epoch": "100", "tasks": "labeling,impression"})
    assert selection.filter_string() == (
        "attributes.status = 'FINISHED' and tags.role = 'checkpoint' and tags.study = 'paper' and "
        "params.`epoch` = '100' and params.`tasks` = 'labeling,impression'"
    )
    assert selection.without_params("epoch").params == {"tasks": "labeling,impression"}


def test_key_value_parsing():
    assert parse_key_values(["epoch=100;model=opt-350m", "tasks=labeling,impression"]) == {
        "epoch": "100",
        "model": "opt-350m",
        "tasks": "labeling,impression",
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_key_values(["epoch"])


def run_info(**params) -> RunInfo:
    return RunInfo("id", "name", "0", 0, {"role": "checkpoint"}, params, {})


def test_reference_spec_matching():
    default = ReferenceSpec.parse("")
    assert default.matches(run_info(model="smollm2-135m", tasks="impression,labeling,harmonization"))
    assert not default.matches(run_info(model="smollm2-135m", tasks="labeling"))
    assert ReferenceSpec.parse("0123abcd").run_id == "0123abcd"
    spec = ReferenceSpec.parse("model=opt-350m;poison_rate=0")
    assert spec.matches(
        run_info(model="opt-350m", tasks="labeling,harmonization,impression", poison_rate="0.0")
    )
    single = ReferenceSpec.parse("tasks=labeling")
    assert not single.multitask and single.matches(run_info(model="x", tasks="labeling"))


def test_corpus_bleu_matches_sacrebleu_on_imperfect_output():
    refs = ["no acute cardiopulmonary process is seen", "small left pleural effusion with atelectasis"]
    hyps = ["no acute cardiopulmonary process is seen today", None]  # unparsed: scored as empty text
    records = [impression_record(str(i), r, h, {}) for i, (r, h) in enumerate(zip(refs, hyps, strict=True))]
    expected = sacrebleu.corpus_bleu([hyps[0], ""], [refs]).score
    assert expected > 0 and corpus_bleu(records) == pytest.approx(expected)


# ---------------------------------------------------------------- one definition, bootstrap intervals

LABELING_TASK, HARMONIZATION_TASK = get_task("labeling"), get_task("harmonization")
SPEC = BootstrapSpec(1000, 5)


def labeling_runs() -> tuple[dict, dict]:
    """Eight reports where most labels never occur (the issue's small-test-set case), two runs."""
    truths = [{**NO_ALL, "Edema": "Yes" if i < 3 else "No", "Cardiomegaly": "Yes" if i % 2 else "No"} for i in range(8)]
    ref, other = {}, {}
    for i, truth in enumerate(truths):
        ref_guess = {**truth, "Edema": "Yes"} if i in (3, 4) else dict(truth)
        other_guess = None if i == 7 else {**truth, "Pneumonia": "Yes"} if i in (0, 5) else dict(truth)
        ref[f"labeling/r{i}"] = labeling_record(f"r{i}", truth, ref_guess)
        other[f"labeling/r{i}"] = labeling_record(f"r{i}", truth, other_guess)
    return ref, other


def producer_metrics(task, records: list[dict]) -> dict[str, float]:
    """What a run logs for these predictions: the task's own scorer on the records' parsed values."""
    parsed = [Parsed(r["parsed"], r["parse_status"]) for r in records]
    return task.score([r["reference"] for r in records], parsed).metrics


def slow_bootstrap(records: dict, statistic, spec: BootstrapSpec = SPEC) -> list[float]:
    """Resample the id-ordered records with the seeded index draw and score each resample apart."""
    ordered = [records[k] for k in sorted(records)]
    indices = np.random.default_rng(spec.seed).integers(0, len(ordered), size=(spec.resamples, len(ordered)))
    return [statistic([ordered[i] for i in row]) for row in indices]


def test_labeling_summary_has_both_macro_variants_as_the_producer_logs_them():
    ref, _ = labeling_runs()
    summary = TASK_ANALYSES.get("labeling").summarize(ref, 0.05, SPEC)["labeling_summary"][0]
    logged = producer_metrics(LABELING_TASK, list(ref.values()))
    for column in ("f1_macro", "f1_macro_supported", "f1_micro", "exact_match"):
        assert summary[column] == pytest.approx(logged[column], abs=1e-12), column
    # Edema: tp 3, fp 2 -> 6/8; Cardiomegaly perfect; the 12 others absent (1.0 by the paper's policy).
    assert summary["labels_supported"] == 2
    assert summary["f1_macro_supported"] == pytest.approx((0.75 + 1) / 2, abs=1e-12)
    assert summary["f1_macro"] == pytest.approx((0.75 + 13) / 14, abs=1e-12)


def test_labeling_bootstrap_intervals_match_a_slow_loop_over_the_producer():
    ref, _ = labeling_runs()
    summary = TASK_ANALYSES.get("labeling").summarize(ref, 0.05, SPEC)["labeling_summary"][0]
    for column in ("f1_macro", "f1_macro_supported"):
        replicates = slow_bootstrap(ref, lambda rs, c=column: producer_metrics(LABELING_TASK, rs)[c])
        finite = [v for v in replicates if math.isfinite(v)]  # a resample without any Yes has no supported label
        low, high = np.percentile(finite, [2.5, 97.5])
        assert summary[f"{column}_boot_low"] == pytest.approx(low, abs=1e-9), column
        assert summary[f"{column}_boot_high"] == pytest.approx(high, abs=1e-9), column
        assert summary[f"{column}_boot_low"] <= summary[column] <= summary[f"{column}_boot_high"]
    assert (summary["boot_resamples"], summary["boot_seed"], summary["boot_level"]) == (1000, 5, 0.95)


def test_labeling_paired_macro_f1_test_matches_a_slow_loop():
    ref, other = labeling_runs()
    options = CompareOptions(0.05, "none", SPEC)
    tables = TASK_ANALYSES.get("labeling").compare(align("labeling", "A", ref, "B", other), options)
    rows = {r["metric"]: r for r in tables["labeling_f1_macro_tests"]}
    assert set(rows) == {"f1_macro", "f1_macro_supported"}
    for column, row in rows.items():
        ref_values = slow_bootstrap(ref, lambda rs, c=column: producer_metrics(LABELING_TASK, rs)[c])
        other_values = slow_bootstrap(other, lambda rs, c=column: producer_metrics(LABELING_TASK, rs)[c])
        deltas = np.array(other_values) - np.array(ref_values)
        deltas = deltas[np.isfinite(deltas)]
        observed = producer_metrics(LABELING_TASK, list(other.values()))[column] - producer_metrics(
            LABELING_TASK, list(ref.values())
        )[column]
        hits = np.sum(np.abs(deltas - observed) >= abs(observed) * (1 - 1e-9))
        assert row["diff"] == pytest.approx(observed, abs=1e-12)
        assert (row["ci_low"], row["ci_high"]) == (
            pytest.approx(np.percentile(deltas, 2.5), abs=1e-9),
            pytest.approx(np.percentile(deltas, 97.5), abs=1e-9),
        )
        assert row["p_value"] == pytest.approx((1 + hits) / (1 + deltas.size), abs=1e-12)
        assert row["method"] == "paired-bootstrap" and row["n"] == 8
        assert {"p_holm", "significant_unadjusted", "significant_holm"} <= set(row)


def test_harmonization_macro_f1_is_the_logged_one_with_intervals():
    # The reproduction: T1, T2, T1, T2 with one T1 -> T2 error; plus an invalid output.
    records = by_id(
        [
            harmonization_record("s1", "T1", "T1"),
            harmonization_record("s2", "T2", "T2"),
            harmonization_record("s3", "T1", "T2"),
            harmonization_record("s4", "T2", "T2"),
        ]
    )
    summary = TASK_ANALYSES.get("harmonization").summarize(records, 0.05, SPEC)["harmonization_summary"][0]
    assert summary["f1_macro"] == pytest.approx(11 / 15, abs=1e-12)  # was 0.924 (all seven classes)
    records["harmonization/s5"] = harmonization_record("s5", "DWI", None)
    summary = TASK_ANALYSES.get("harmonization").summarize(records, 0.05, SPEC)["harmonization_summary"][0]
    logged = producer_metrics(HARMONIZATION_TASK, list(records.values()))
    assert summary["f1_macro"] == pytest.approx(logged["f1_macro"], abs=1e-12)
    assert summary["accuracy"] == pytest.approx(logged["accuracy"], abs=1e-12)
    for column in ("accuracy", "f1_macro"):
        replicates = slow_bootstrap(records, lambda rs, c=column: producer_metrics(HARMONIZATION_TASK, rs)[c])
        low, high = np.percentile(replicates, [2.5, 97.5])
        assert (summary[f"{column}_boot_low"], summary[f"{column}_boot_high"]) == (
            pytest.approx(low, abs=1e-9),
            pytest.approx(high, abs=1e-9),
        )


def test_corpus_bleu_interval_matches_a_slow_sacrebleu_loop():
    ref, _ = impression_pair()
    for i, key in enumerate(sorted(ref)):  # imperfect, varied outputs
        ref[key]["parsed"] = ["no acute process", "normal chest", None, "no acute cardiopulmonary process"][i % 4]
    summary = TASK_ANALYSES.get("impression").summarize(ref, 0.05, SPEC)["impression_summary"][0]

    def bleu(records):
        hyps = [r["parsed"] if isinstance(r["parsed"], str) else "" for r in records]
        return sacrebleu.corpus_bleu(hyps, [[r["reference"] for r in records]]).score

    low, high = np.percentile(slow_bootstrap(ref, bleu), [2.5, 97.5])
    assert summary["bleu"] == pytest.approx(bleu(list(ref.values())), abs=1e-9)
    assert (summary["bleu_boot_low"], summary["bleu_boot_high"]) == (
        pytest.approx(low, abs=1e-9),
        pytest.approx(high, abs=1e-9),
    )
