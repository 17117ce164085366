"""A fabricated study for the report tests: the analysis fixtures' three fine-tunes (tests/
mlflow_fixtures.py), plus an Optuna sweep and a reader study tagged with the same study."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pandas as pd
from mlflow_fixtures import OTHER_MODEL, REFERENCE_MODEL, fresh_store, log_demo_study
from optuna.storages.journal import JournalFileBackend

from analysis.rating_results import publish_reader_study, reader_metrics, reader_tables

STUDY = "default"
SWEEP = "lr-search"
RATERS = ("PK", "JP")


def log_sweep(experiment_id: str, folder: Path, n_trials: int = 8) -> str:
    """An Optuna study on a journal file with a known optimum (lr 1e-3, r 16), and its sweep run."""
    storage = folder / "optuna-journal.log"
    study = optuna.create_study(
        storage=optuna.storages.JournalStorage(JournalFileBackend(str(storage))),
        study_name=SWEEP,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=3),
    )
    study.set_user_attr("objective", "labeling/f1_macro")

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        rank = trial.suggest_categorical("lora_r", [4, 8, 16])
        trial.set_user_attr("mlflow_run_id", f"trial-run-{trial.number}")
        return 0.9 - abs(lr - 1e-3) * 50 + rank / 160

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n_trials)
    tags = {"role": "sweep", "study": STUDY, "optuna_study": SWEEP}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"sweep-{SWEEP}", tags=tags) as run:
        mlflow.log_params({"optuna_study": SWEEP, "storage": str(storage), "objective": "labeling/f1_macro"})
        return run.info.run_id


def log_reader_study(experiment_id: str, runs: dict[str, str], folder: Path) -> str:
    """Ten items per model rated by two raters; the reference model rated higher on average."""
    items, rows = [], []
    for side, (label, run_id) in enumerate(runs.items()):
        for i in range(10):
            item = f"item-{side}-{i}"
            items.append({"item": item, "model": label, "run_id": run_id, "example_id": f"impression/r{i}"})
            for k, rater in enumerate(RATERS):
                score = max(1, min(5, (5 if side == 0 else 4) - (i + k) % 3))
                rows.append(
                    {
                        "item": item,
                        "model": label,
                        "run_id": run_id,
                        "example_id": f"impression/r{i}",
                        "rater": rater,
                        "score": score,
                    }
                )
    labels = list(runs)
    tables = reader_tables(pd.DataFrame(rows), labels, "item")
    key = {
        "models": [
            {"label": label, "run_id": run_id, "experiment_id": experiment_id, "study": STUDY}
            for label, run_id in runs.items()
        ],
        "items": items,
        "seed": 0,
    }
    return publish_reader_study(tables, reader_metrics(tables), key, [], folder / "reader-out")


def build_study(folder: Path) -> dict:
    """Everything in a fresh store under `folder`; returns the run ids by name."""
    experiment_id = fresh_store(folder)
    runs = log_demo_study(experiment_id, STUDY)
    sweep_run = log_sweep(experiment_id, folder)
    rated = {REFERENCE_MODEL: runs["reference"][2], OTHER_MODEL: runs["other"][2]}
    reader_run = log_reader_study(experiment_id, rated, folder)
    return {"experiment_id": experiment_id, "runs": runs, "sweep_run": sweep_run, "reader_run": reader_run}
