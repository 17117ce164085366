"""A fourth task, declared in this test alone, goes through a fine-tune, `analyze` and the report
with no change to any other module: the registry is the only place a task is declared.

The toy task reads a chest X-ray report and answers which side its findings name (left, right,
both or none); its one metric, accuracy, is the mean of a per-example `correct` score, so the
generic analysis (analysis/tasks/generic.py) and report section (dashboards/sections/generic.py)
serve it. The values are checked against an independent computation from the logged predictions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import mlflow
import numpy as np
import pytest

from analysis.analyze import main as analyze_main
from dashboards.__main__ import main as report_main
from pipelines.config import FinetuneConfig
from pipelines.tasks import TASKS, headline_metric_keys, task_names
from pipelines.tasks.base import Example, Metric, Parsed, Task, TaskScores, make_example, status_rate
from pipelines.train.recipe import train

NAME = "laterality"
SIDES = ("left", "right", "both", "none")
DIRECTIVE = "Which side do the findings of this chest X-ray report name? Answer left, right, both or none."
DATA = "synthetic?reports=60&series=4&seed=3"


def side_of(text: str) -> str:
    words = set(re.findall(r"[a-z]+", text.lower()))
    left, right = "left" in words, "right" in words or "bilateral" in words
    return "both" if (left and right) or "bilateral" in words else "left" if left else "right" if right else "none"


def build_example(record) -> Example:
    side = side_of(record.findings)
    return make_example(NAME, DIRECTIVE, record.id, record.findings, side, side)


def parse(text: str) -> Parsed:
    """The first word when it names a side; any other answer reads as "none" (scored, "partial")."""
    word = text.strip().split()[0].lower().strip(".,") if text.strip() else ""
    return Parsed(word, "ok") if word in SIDES else Parsed("none", "partial")


def score(references: Sequence[str], parsed: Sequence[Parsed]) -> TaskScores:
    per_example = [{"correct": int(p.value == r)} for r, p in zip(references, parsed, strict=True)]
    return TaskScores({"accuracy": sum(e["correct"] for e in per_example) / len(per_example),
                       "parse_fail_rate": status_rate(parsed, "failed")}, per_example)


LATERALITY = Task(
    name=NAME, directive=DIRECTIVE, dataset="reports", max_new_tokens=4, build_example=build_example,
    parse=parse, score=score, headline_metric="accuracy",
    metrics=(Metric("accuracy", "accuracy", headline=True, example_score="correct"),),
)


@pytest.fixture(scope="module")
def toy_runs(tiny_model_dir, tmp_path_factory):
    """Two one-epoch fine-tunes of the toy task (two seeds) in their own store, the task registered
    only while they run and are analysed."""
    previous = mlflow.get_tracking_uri()
    root = tmp_path_factory.mktemp("toy-task")
    TASKS.add(NAME, LATERALITY)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            uri = f"sqlite:///{root / 'mlflow.db'}"
            mp.setenv("MLFLOW_TRACKING_URI", uri)
            mp.delenv("MLFLOW_RUN_ID", raising=False)
            mlflow.set_tracking_uri(uri)
            results = [train(FinetuneConfig(model=str(tiny_model_dir), tasks=(NAME,), data=DATA, epochs=1,
                                            checkpoint_epochs=(1,), train_limit=6, eval_limit=10, seed=seed,
                                            study="toy"))
                       for seed in (1, 2)]
            yield root, results
    finally:
        TASKS.remove(NAME)
        mlflow.set_tracking_uri(previous)


def logged_predictions(run_id: str) -> list[dict]:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"predictions/{NAME}.jsonl")
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_the_registry_declares_the_toy_task_and_its_headline(toy_runs):
    assert NAME in task_names() and f"{NAME}/accuracy" in headline_metric_keys()


def test_fine_tune_logs_the_toy_task_like_any_task(toy_runs):
    _, results = toy_runs
    for result in results:
        checkpoint = mlflow.get_run(result.checkpoint_runs[1])
        records = logged_predictions(checkpoint.info.run_id)
        assert len(records) == 10 and {r["reference"] for r in records} <= set(SIDES)
        expected = np.mean([parse(r["output"]).value == r["reference"] for r in records])
        assert checkpoint.data.metrics[f"{NAME}/accuracy"] == pytest.approx(expected, abs=1e-12)
        assert checkpoint.data.metrics["headline"] == pytest.approx(expected, abs=1e-12)


def test_analyze_and_report_cover_the_toy_task(toy_runs, capsys):
    root, results = toy_runs
    reference, other = (r.checkpoint_runs[1] for r in results)
    out = root / "analysis-out"
    assert analyze_main(["--experiment", "clinical-slm", "--study", "toy", "--reference", reference,
                         "--output", str(out), "--cache-dir", str(root / "cache"), "--no-log"]) == 0
    summary = {row["run_id"]: row for row in _csv(out / f"{NAME}_summary.csv")}
    for run_id in (reference, other):
        correct = [r["scores"]["correct"] for r in logged_predictions(run_id)]
        assert float(summary[run_id]["accuracy"]) == pytest.approx(np.mean(correct), abs=1e-9)
        low, high = float(summary[run_id]["accuracy_boot_low"]), float(summary[run_id]["accuracy_boot_high"])
        assert low <= np.mean(correct) <= high
    tests = _csv(out / f"{NAME}_tests.csv")
    assert len(tests) == 1 and tests[0]["run_id"] == other
    diff = np.mean([r["scores"]["correct"] for r in logged_predictions(other)]) - \
        np.mean([r["scores"]["correct"] for r in logged_predictions(reference)])
    assert float(tests[0]["diff"]) == pytest.approx(diff, abs=1e-9)

    report = root / "report-out"
    assert report_main(["--experiment", "clinical-slm", "--study", "toy", "--reference", reference, "--output",
                        str(report), "--cache-dir", str(root / "cache")]) == 0
    html = (report / "report" / "report.html").read_text(encoding="utf-8")
    assert f'<section id="{NAME}"' in html and f'id="fig-{NAME}-accuracy"' in html
    assert "Laterality accuracy" in html  # the leaderboard column, from the task's declared metric


def _csv(path) -> list[dict[str, str]]:
    import csv

    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))
