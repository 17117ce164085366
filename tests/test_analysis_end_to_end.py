"""End to end: fabricated fine-tunes in a temporary MLflow store, the analyze CLI, its tables and run.

The runs follow the producers' schema exactly (see mlflow_fixtures.study_predictions for what each
run got right), so every number below is known in advance.
"""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from mlflow_fixtures import (
    ALL_TASKS,
    OTHER_MODEL,
    fresh_store,
    log_checkpoint,
    log_demo_study,
    log_finetune,
    study_predictions,
)

from analysis import analyze
from analysis.job import AnalysisConfig, run_analysis
from analysis.runs import RunSelection


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    previous = mlflow.get_tracking_uri()
    folder = tmp_path_factory.mktemp("e2e")
    experiment_id = fresh_store(folder)
    runs = log_demo_study(experiment_id)
    out = folder / "out"
    argv = [
        "--experiment",
        "lab-test",
        "--study",
        "default",
        "--role",
        "checkpoint",
        "--param",
        "epoch=2",
        "--correction",
        "holm",
        "--alpha",
        "0.05",
        "--output",
        str(out),
        "--cache-dir",
        str(folder / "cache"),
    ]
    assert analyze.main(argv) == 0
    yield {"runs": runs, "out": out, "folder": folder, "experiment_id": experiment_id}
    mlflow.set_tracking_uri(previous)


def table(analyzed, name: str) -> pd.DataFrame:
    return pd.read_csv(analyzed["out"] / f"{name}.csv")


def row_of(frame: pd.DataFrame, run_id: str, **where) -> pd.Series:
    mask = frame["run_id"] == run_id
    for column, value in where.items():
        mask &= frame[column] == value
    assert mask.sum() == 1, f"expected one row for {run_id} {where}, found {mask.sum()}"
    return frame[mask].iloc[0]


def test_labeling_tables(analyzed):
    ref, other = analyzed["runs"]["reference"][2], analyzed["runs"]["other"][2]
    summary = table(analyzed, "labeling_summary")
    assert len(summary) == 3 and summary["is_reference"].sum() == 1
    # Reference: Edema tp = 5, fp = 3 -> F1 = 10/13; the other 13 labels are perfect.
    assert row_of(summary, ref)["f1_macro"] == pytest.approx((13 + 10 / 13) / 14)
    per_label = table(analyzed, "labeling_per_label")
    edema = row_of(per_label, other, label="Edema")
    assert (edema["tp"], edema["fp"], edema["support"]) == (5, 13, 5)
    assert edema["f1"] == pytest.approx(10 / 23)

    tests = table(analyzed, "labeling_mcnemar")
    assert set(tests["reference_run_id"]) == {ref} and len(tests) == 2 * 14
    edema_test = row_of(tests, other, label="Edema")
    assert (edema_test["both_correct"], edema_test["ref_only_correct"]) == (7, 10)
    assert (edema_test["other_only_correct"], edema_test["both_wrong"]) == (0, 3)
    assert edema_test["p_value"] == pytest.approx(2 / 2**10)
    assert edema_test["p_adjusted"] == pytest.approx(14 * 2 / 2**10)  # Holm over 14 labels
    assert edema_test["method"] == "exact-binomial" and bool(edema_test["significant"])
    assert row_of(tests, other, label="Cardiomegaly")["p_value"] == 1.0  # only the unparsable report


def test_harmonization_tables(analyzed):
    ref, other = analyzed["runs"]["reference"][2], analyzed["runs"]["other"][2]
    summary = table(analyzed, "harmonization_summary")
    assert row_of(summary, ref)["accuracy"] == pytest.approx(0.9)
    assert row_of(summary, ref)["ci_low"] == pytest.approx(0.7438, abs=1e-4)  # Wilson, 27/30
    confusion = table(analyzed, "harmonization_confusion")
    assert row_of(confusion, other, reference="SWI", predicted="(invalid)")["count"] == 1  # series 12: "T3"
    tests = table(analyzed, "harmonization_mcnemar")
    versus_other = row_of(tests, other)
    assert (versus_other["ref_only_correct"], versus_other["other_only_correct"]) == (10, 3)
    assert versus_other["p_value"] == pytest.approx(2 * (1 + 13 + 78 + 286) / 2**13)


def test_impression_tables(analyzed):
    ref, other = analyzed["runs"]["reference"][2], analyzed["runs"]["other"][2]
    summary = table(analyzed, "impression_summary")
    assert row_of(summary, ref)["bleu"] == pytest.approx(100.0)
    assert len(table(analyzed, "impression_per_example")) == 3 * 10
    tests = table(analyzed, "impression_paired_tests")
    bleu_t = row_of(tests, other, metric="bleu", test="paired_t")
    assert bleu_t["statistic"] == pytest.approx(4.0621, abs=1e-4)
    assert bleu_t["p_value"] == pytest.approx(0.002833, abs=1e-6)
    # ROUGE scores are identical: those three t-tests are degenerate (NaN, with the reason) and leave
    # the Holm family, so BLEU's p is its own adjusted p.
    rouge_t = row_of(tests, other, metric="rougeL", test="paired_t")
    assert pd.isna(rouge_t["p_value"]) and "every difference is 0" in rouge_t["note"]
    assert bleu_t["p_adjusted"] == pytest.approx(bleu_t["p_value"])
    assert bleu_t["p_holm"] == pytest.approx(bleu_t["p_value"])
    assert bleu_t["mean_diff"] == pytest.approx(1.58)
    assert row_of(tests, other, metric="rougeL", test="wilcoxon")["p_value"] == 1.0


def test_trajectory_tables(analyzed):
    wide = table(analyzed, "trajectory")
    assert {"epoch_1", "epoch_2"} <= set(wide.columns)
    assert len(wide) == 3 * 4  # three fine-tunes, four headline metrics
    reference = wide[(wide["model"] == "smollm2-135m") & (wide["poison_rate"] == 0.0)]
    f1 = reference[reference["metric"] == "labeling/f1_macro"].iloc[0]
    assert (f1["epoch_1"], f1["epoch_2"]) == (pytest.approx(0.6), pytest.approx(0.8))
    assert "train/loss" in set(table(analyzed, "trajectory_long")["metric"])


def test_poisoning_tables(analyzed):
    clean, poisoned = analyzed["runs"]["reference"][2], analyzed["runs"]["poisoned"][2]
    metrics = table(analyzed, "poisoning_metrics")
    assert set(metrics["unpoisoned_run_id"]) == {clean}
    assert row_of(metrics, poisoned, metric="f1_macro")["change"] < 0  # labeling was poisoned
    assert row_of(metrics, poisoned, metric="accuracy")["change"] == 0  # harmonization untouched
    harmonization = table(analyzed, "poisoning_harmonization_mcnemar")
    assert row_of(harmonization, poisoned)["p_value"] == 1.0
    impression = table(analyzed, "poisoning_impression_paired_tests")
    # identical impressions: Wilcoxon p = 1, the t-tests degenerate (no variance), nothing significant
    assert len(impression) == 8 and (impression[impression["test"] == "wilcoxon"]["p_value"] == 1.0).all()
    assert impression[impression["test"] == "paired_t"]["p_value"].isna().all() and not impression["significant"].any()


def test_analysis_run_is_logged(analyzed):
    runs = mlflow.search_runs([analyzed["experiment_id"]], "tags.role = 'analysis'", output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["study"] == "default" and run.data.tags["analysis"] == "analyze"
    assert run.data.params["analysis.reference_run_id"] == analyzed["runs"]["reference"][2]
    assert run.data.params["analysis.correction"] == "holm"
    assert run.data.metrics["reference/labeling/f1_macro"] == pytest.approx((13 + 10 / 13) / 14)
    assert run.data.metrics["reference/harmonization/accuracy"] == pytest.approx(0.9)
    assert run.data.metrics["significant/labeling_mcnemar"] == 1
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {
        "labeling_mcnemar.csv",
        "impression_paired_tests.json",
        "summary.json",
        "trajectory.csv",
    } <= artifacts
    summary = json.loads((analyzed["out"] / "summary.json").read_text())
    assert len(summary["run_ids"]) == 3 and summary["reference_run_id"] == analyzed["runs"]["reference"][2]
    # The fixture's logged metrics are made up (mlflow_fixtures.epoch_metrics), unlike its predictions:
    # one note per metric says so. Labeling f1_macro at epoch 2 is logged as 0.8 by all three runs.
    assert any(n.startswith("3 run(s) logged labeling/f1_macro unlike") for n in summary["notes"])


def test_different_test_sets_are_refused(analyzed, capsys):
    experiment_id = mlflow.create_experiment(
        "mismatch", artifact_location=(analyzed["folder"] / "mismatch").as_uri()
    )
    common = {"tasks": ALL_TASKS, "poison_rate": "0.0"}
    log_finetune(
        experiment_id, {**common, "model": "smollm2-135m"}, {1: (study_predictions("reference"), {})}
    )
    shorter = study_predictions("other")
    shorter["harmonization"] = shorter["harmonization"][:-1]
    log_finetune(experiment_id, {**common, "model": OTHER_MODEL}, {1: (shorter, {})})
    folder = analyzed["folder"]
    argv = [
        "--experiment",
        "mismatch",
        "--no-log",
        "--output",
        str(folder / "mm"),
        "--cache-dir",
        str(folder / "cache"),
    ]
    assert analyze.main(argv) == 1
    assert "different test sets" in capsys.readouterr().err


def test_no_matching_runs_is_a_clear_error(analyzed, capsys):
    assert analyze.main(["--experiment", "lab-test", "--param", "epoch=100", "--no-log"]) == 1
    assert "param values must be written exactly as logged" in capsys.readouterr().err


def test_included_baseline_is_compared_with_the_reference(analyzed):
    params = {"model": "gpt-4o", "tasks": ALL_TASKS}
    baseline = log_checkpoint(
        analyzed["experiment_id"], None, params, None, study_predictions("other"), role="baseline"
    )
    config = AnalysisConfig(
        selection=RunSelection("lab-test", "default", "checkpoint", {"epoch": "2"}),
        include=(baseline,),
        cache_dir=analyzed["folder"] / "cache",
        trajectory=False,
    )
    result = run_analysis(config)
    tests = result.tables["harmonization_mcnemar"]
    row = tests[tests["run_id"] == baseline].iloc[0]
    assert row["role"] == "baseline" and (row["ref_only_correct"], row["other_only_correct"]) == (10, 3)
    assert "trajectory" not in result.tables and len(result.runs) == 4
