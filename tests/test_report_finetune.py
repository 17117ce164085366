"""The report from real fine-tunes: two tiny LoRA runs (one per task) in a temporary MLflow store,
then `python -m dashboards` as a user runs it, analysis included."""

from __future__ import annotations

import mlflow
import pytest
from report_browser import external_sources

from dashboards.__main__ import main
from pipelines.config import FinetuneConfig
from pipelines.train.recipe import train

DATA = "synthetic?reports=40&series=40"


@pytest.fixture(scope="module")
def tiny_study(tiny_model_dir, tmp_path_factory):
    previous = mlflow.get_tracking_uri()
    root = tmp_path_factory.mktemp("report-ft")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        results = {}
        for task in ("harmonization", "impression"):
            config = FinetuneConfig(
                model=str(tiny_model_dir),
                tasks=(task,),
                data=DATA,
                epochs=1,
                checkpoint_epochs=(1,),
                train_limit=2,
                eval_limit=2,
                max_new_tokens=16,
                study="tiny-report",
            )
            results[task] = train(config)
        yield root, results
    mlflow.set_tracking_uri(previous)


def test_report_of_real_fine_tunes(tiny_study):
    root, results = tiny_study
    reference = results["harmonization"].checkpoint_runs[1]
    out = root / "report-out"
    argv = [
        "--experiment",
        "clinical-slm",
        "--study",
        "tiny-report",
        "--reference",
        reference,
        "--output",
        str(out),
        "--cache-dir",
        str(root / "cache"),
    ]
    assert main(argv) == 0
    html = (out / "report" / "report.html").read_text(encoding="utf-8")

    for key in (
        "leaderboard",
        "labeling",
        "harmonization",
        "impression",
        "trajectory",
        "poisoning",
        "sweeps",
        "reader",
    ):
        assert f'<section id="{key}"' in html
    for figure in (
        "leaderboard-headline_metrics",
        "harmonization-accuracy",
        "harmonization-confusion",
        "impression-score_distributions",
    ):
        assert f'id="fig-{figure}"' in html, figure
        assert (out / "report" / "figures" / f"{figure}.json").is_file()
    # sections without data say so in one line (one task per run, one epoch, no sweep, no ratings)
    for note in (
        "No labeling predictions in this analysis.",
        "single checkpoint epoch",
        "No poisoning ablation",
        "No sweep study found",
        "No reader-study ratings",
    ):
        assert note in html, note
    assert "could not be drawn" not in html
    assert '<table class="examples">' in html  # from the impression run: the reference has no impressions
    assert external_sources(html) == []
    # both runs are on the leaderboard, by task
    for task, result in results.items():
        assert result.checkpoint_runs[1] in html
        assert f"tiny-llama-v1 · {task} only" in html

    analysis = mlflow.search_runs(
        experiment_names=["clinical-slm"], filter_string="tags.role = 'analysis'", output_format="list"
    )
    assert len(analysis) == 1
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(analysis[0].info.run_id, "report")}
    assert "report/report.html" in logged
