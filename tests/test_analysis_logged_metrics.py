"""The analysis recomputes exactly what the runs logged: one definition per metric.

Two runs are scored by the producers' own code (pipelines.infer.evaluation.score_outputs on synthetic
examples with imperfect outputs), logged to a temporary MLflow store with their predictions, and
analyzed through the `analyze` command line; every logged metric that a table also holds must
agree to 1e-6, in the task summaries and in the trajectory table alike.
"""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from mlflow_fixtures import fresh_store, log_checkpoint

from analysis import analyze
from analysis.job import logged_mismatches, mismatch_note
from analysis.runs import RunInfo
from pipelines.data.synthetic_cxr import generate_reports
from pipelines.data.synthetic_mri import generate_series
from pipelines.infer.evaluation import merged_metrics, score_outputs
from pipelines.tasks import get_task
from pipelines.vocabulary import LABEL_KEYS, SERIES_CLASSES

PARAMS = {"model": "smollm2-135m", "tasks": "labeling,harmonization,impression", "data_fingerprint": "f"}


def examples(task: str, records) -> list:
    build = get_task(task)
    return [build.build_example(r) for r in records if build.include(r)]


def labeling_outputs(test: list, flips: int) -> list[str]:
    """Targets with a few labels flipped in some reports, one report unparsable, one truncated."""
    outputs = []
    for i, example in enumerate(test):
        labels = dict(example.reference)
        for key in LABEL_KEYS[(i * flips) % 7 : (i * flips) % 7 + flips] if i % 3 == 0 else ():
            labels[key] = "No" if labels[key] == "Yes" else "Yes"
        outputs.append(json.dumps(labels))
    outputs[1] = "I cannot read this report."
    outputs[2] = outputs[2][:120]  # partial: the missing labels count as wrong
    return outputs


def harmonization_outputs(test: list, shift: int) -> list[str]:
    """Right, wrong (a neighbouring class), invalid ("T3") and bare-text answers."""
    outputs = []
    for i, example in enumerate(test):
        label = example.reference
        if i % shift == 0:
            label = SERIES_CLASSES[(SERIES_CLASSES.index(label) + 1) % len(SERIES_CLASSES)]
        outputs.append(json.dumps({"x": label}))
    outputs[0], outputs[1] = json.dumps({"x": "T3"}), test[1].reference
    return outputs


def impression_outputs(test: list, keep: int) -> list[str]:
    return [
        "" if i == 0 else f"IMPRESSION: {e.reference}" if i % keep else "IMPRESSION: No acute disease."
        for i, e in enumerate(test)
    ]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    previous = mlflow.get_tracking_uri()
    folder = tmp_path_factory.mktemp("logged")
    experiment_id = fresh_store(folder)
    reports, series = generate_reports(12, seed=3), generate_series(21, seed=3)
    test = {
        "labeling": examples("labeling", reports),
        "harmonization": examples("harmonization", series),
        "impression": examples("impression", reports),
    }
    runs = {}
    for name, (flips, shift, keep) in {"a": (1, 4, 3), "b": (3, 3, 2)}.items():
        outputs = {
            "labeling": labeling_outputs(test["labeling"], flips),
            "harmonization": harmonization_outputs(test["harmonization"], shift),
            "impression": impression_outputs(test["impression"], keep),
        }
        evaluations = {task: score_outputs(task, test[task], outputs[task], 1.0) for task in test}
        predictions = {task: ev.predictions for task, ev in evaluations.items()}
        metrics = merged_metrics(evaluations)
        runs[name] = (log_checkpoint(experiment_id, None, PARAMS, 1, predictions, metrics), metrics)
    out = folder / "out"
    argv = ["--experiment", "lab-test", "--reference", runs["a"][0], "--no-log", "--output", str(out)]
    assert analyze.main([*argv, "--cache-dir", str(folder / "cache"), "--no-poisoning"]) == 0
    yield runs, out
    mlflow.set_tracking_uri(previous)


def test_every_logged_task_metric_equals_the_analysis_table(logged):
    runs, out = logged
    checked = 0
    for run_id, metrics in runs.values():
        for task in ("labeling", "harmonization", "impression"):
            summary = pd.read_csv(out / f"{task}_summary.csv").set_index("run_id").loc[run_id]
            for name, value in metrics.items():
                prefix, _, column = name.partition("/")
                if prefix == task and column in summary.index:
                    assert summary[column] == pytest.approx(value, abs=1e-6), (run_id, name)
                    checked += 1
            per_label = pd.read_csv(out / "labeling_per_label.csv")
            per_label = per_label[per_label["run_id"] == run_id].set_index("label")
            for key in LABEL_KEYS:
                for column in ("f1", "precision", "recall", "support"):
                    assert per_label.at[key, column] == pytest.approx(metrics[f"labeling/{column}/{key}"], abs=1e-6)
    # labeling: f1_macro, f1_macro_supported, f1_micro, exact_match, parse_fail_rate; harmonization:
    # accuracy, f1_macro, parse_fail_rate; impression: bleu, rouge1/2/L, parse_fail_rate
    assert checked == 2 * 13


def test_the_runs_are_not_trivial(logged):
    runs, _ = logged
    for _, metrics in runs.values():
        assert 0 < metrics["harmonization/f1_macro"] < 1 and 0 < metrics["labeling/f1_macro_supported"] < 1
        # the unparsable report is a false positive on every absent label: the two variants differ
        assert metrics["labeling/f1_macro_supported"] != pytest.approx(metrics["labeling/f1_macro"])
        assert 0 < metrics["impression/bleu"] < 100


TRAJECTORY_CHECKS = (("harmonization", "f1_macro"), ("labeling", "f1_macro"), ("labeling", "f1_macro_supported"))


def test_trajectory_agrees_with_the_summaries(logged):
    # The issue: harmonization_summary said 0.646 while trajectory_long (the logged value) said 0.505.
    runs, out = logged
    long = pd.read_csv(out / "trajectory_long.csv")
    for run_id, _ in runs.values():
        for task, column in TRAJECTORY_CHECKS:
            summary = pd.read_csv(out / f"{task}_summary.csv").set_index("run_id")
            value = long[(long["run_id"] == run_id) & (long["metric"] == f"{task}/{column}")]["value"].iloc[0]
            assert summary.at[run_id, column] == pytest.approx(value, abs=1e-6)


def test_no_run_is_flagged_and_a_stale_value_would_be(logged):
    _, out = logged
    assert not [n for n in json.loads((out / "summary.json").read_text())["notes"] if "recomputed" in n]
    stale = RunInfo("r1", "", "0", 0, {}, {}, {"harmonization/f1_macro": 0.505, "harmonization/accuracy": 0.75}, "")
    found = logged_mismatches(stale, "harmonization", {"n": 4, "accuracy": 0.75, "f1_macro": 0.646})
    assert found == {"harmonization/f1_macro": ("r1", 0.505, 0.646)}
    assert mismatch_note("harmonization/f1_macro", [found["harmonization/f1_macro"]] * 3) == (
        "3 run(s) logged harmonization/f1_macro unlike its recomputation from their predictions "
        "(e.g. run r1: logged 0.505, recomputed 0.646); the tables show the recomputed values"
    )
