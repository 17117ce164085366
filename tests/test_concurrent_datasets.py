"""Runs of one experiment logging the same dataset at the same moment all get it, once.

Reproduces the race CI hit behind `mlflow server`: the store looks a dataset up by
(experiment, name, digest) and inserts it when missing, so simultaneous first loggers collide on
the unique constraint. Eight threads on a real SQLite store make that collision likely on every run
(plain `log_inputs` failed 1-6 of 8 times in three tries while this test was written).
"""
from __future__ import annotations

import threading
from pathlib import Path

import mlflow
import pandas as pd

from pipelines.runs import tracking

WRITERS = 8


def test_simultaneous_loggers_of_one_dataset_all_succeed(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("race")
    run_ids = [client.create_run(experiment).info.run_id for _ in range(WRITERS)]
    frame = pd.DataFrame({"id": ["r1", "r2"], "text": ["No effusion.", "Small effusion."]})
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def log(run_id: str) -> None:
        dataset = mlflow.data.from_pandas(frame, source=tracking.dataset_source("synthetic"),
                                          name="reports-test")
        start.wait()
        try:
            with mlflow.start_run(run_id=run_id):
                tracking.log_input_once(dataset, context="evaluation")
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=log, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for run_id in run_ids:
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert [i.dataset.name for i in inputs] == ["reports-test"]
    digests = {client.get_run(r).inputs.dataset_inputs[0].dataset.digest for r in run_ids}
    assert len(digests) == 1
