"""Run selection, reference choice and the artifact cache against a temporary SQLite MLflow store."""

from __future__ import annotations

import mlflow
import pytest
from mlflow_fixtures import (
    ALL_TASKS,
    OTHER_MODEL,
    REFERENCE_MODEL,
    fresh_store,
    log_checkpoint,
    log_demo_study,
    study_predictions,
)

from analysis.runs import (
    PredictionStore,
    ReferenceSpec,
    RunSelection,
    SelectionError,
    resolve_reference,
    select_runs,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    previous = mlflow.get_tracking_uri()
    folder = tmp_path_factory.mktemp("store")
    experiment_id = fresh_store(folder)
    runs = log_demo_study(experiment_id)
    baseline = {"model": "gpt-4o", "tasks": ALL_TASKS}
    runs["baseline"] = {
        0: log_checkpoint(experiment_id, None, baseline, None, study_predictions("other"), role="baseline")
    }
    yield runs
    mlflow.set_tracking_uri(previous)


def test_selection_by_role_study_and_param(study):
    checkpoints = select_runs(RunSelection("lab-test", "default", "checkpoint"))
    assert len(checkpoints) == 6
    at_two = select_runs(RunSelection("lab-test", "default", "checkpoint", {"epoch": "2"}))
    assert {r.run_id for r in at_two} == {study[n][2] for n in ("reference", "other", "poisoned")}
    assert all(r.epoch == 2 and r.params["tasks"] for r in at_two)
    assert len(select_runs(RunSelection("lab-test", None, "finetune"))) == 3
    assert select_runs(RunSelection("lab-test", "another-study", "checkpoint")) == []
    assert len(select_runs(RunSelection(None, "default", "checkpoint", {"model": OTHER_MODEL}))) == 2


def test_several_roles_are_searched_one_by_one(study):
    both = select_runs(RunSelection("lab-test", "default", "checkpoint,baseline"))
    assert len(both) == 7 and study["baseline"][0] in {r.run_id for r in both}
    # a param filter applies to every role: the baseline has no epoch param
    assert len(select_runs(RunSelection("lab-test", "default", "checkpoint,baseline", {"epoch": "2"}))) == 3


def test_unknown_experiment_lists_the_known_ones(study):
    with pytest.raises(SelectionError, match=r"no MLflow experiment named 'nope'.*lab-test"):
        select_runs(RunSelection("nope"))


def test_default_reference_is_the_unpoisoned_multitask_default_model(study):
    runs = select_runs(RunSelection("lab-test", "default", "checkpoint", {"epoch": "2"}))
    reference = resolve_reference(runs, ReferenceSpec())
    assert reference.run_id == study["reference"][2]
    assert reference.model == REFERENCE_MODEL and reference.poison_rate == 0.0


def test_ambiguous_or_missing_reference_is_refused(study):
    every_epoch = select_runs(RunSelection("lab-test", "default", "checkpoint"))
    with pytest.raises(SelectionError, match=r"2 runs match the reference.*--param epoch=100"):
        resolve_reference(every_epoch, ReferenceSpec())
    with pytest.raises(SelectionError, match="no selected run matches the reference"):
        resolve_reference(every_epoch, ReferenceSpec.parse("model=llama"))


def test_reference_by_id_outside_the_selection_is_fetched(study):
    runs = select_runs(RunSelection("lab-test", "default", "checkpoint", {"epoch": "2"}))
    parent = study["other-parent"][0]
    assert resolve_reference(runs, ReferenceSpec(run_id=parent)).role == "finetune"
    with pytest.raises(SelectionError, match="not found"):
        resolve_reference(runs, ReferenceSpec(run_id="0" * 32))


def test_artifacts_are_downloaded_once_per_run(study, tmp_path, monkeypatch):
    run_id = study["reference"][2]
    store = PredictionStore(tmp_path / "cache")
    calls = []
    download = store.client.download_artifacts
    monkeypatch.setattr(store.client, "download_artifacts", lambda *a: calls.append(a) or download(*a))
    labeling = store.load(run_id, "labeling")
    assert len(labeling) == 20 and len(store.load(run_id, "impression")) == 10
    assert len(calls) == 1  # one download of predictions/ serves every task

    def refuse(*args):
        raise AssertionError("the cache should have answered")

    second = PredictionStore(tmp_path / "cache")  # a later job with the same cache folder
    monkeypatch.setattr(second.client, "download_artifacts", refuse)
    assert second.load(run_id, "labeling") == labeling


def test_runs_without_predictions_load_as_none(study, tmp_path):
    store = PredictionStore(tmp_path / "cache")
    parent = study["reference-parent"][0]
    assert store.load(parent, "labeling") is None
    assert (tmp_path / "cache" / parent / ".complete").exists()


def test_prefetch_fills_the_cache_for_many_runs(study, tmp_path):
    store = PredictionStore(tmp_path / "cache")
    run_ids = [
        ids[e] for name, ids in study.items() if name in ("reference", "other", "poisoned") for e in (1, 2)
    ]
    store.prefetch(run_ids, workers=4)
    assert all((tmp_path / "cache" / r / "predictions" / "harmonization.jsonl").exists() for r in run_ids)
