"""Fabricated MLflow stores for the analysis tests, in exactly the producers' run schema.

A fresh SQLite store takes seconds to create (schema migrations), so one empty database is
built per test process and copied for every store a test asks for.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

from pipelines.vocabulary import LABEL_KEYS, SERIES_CLASSES

ALL_TASKS = "labeling,harmonization,impression"
_TEMPLATE: Path | None = None

# Student's sleep data (Cushny & Peebles): extra hours of sleep, drug 2 minus drug 1, ten patients.
# Textbook paired t-test: t = 4.0621, df = 9, p = 0.002833, 95% CI of the mean (0.7001, 2.4599).
SLEEP_DIFFERENCES = (1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4)


def fresh_store(folder: Path, experiment: str = "lab-test") -> str:
    """Point MLflow at a new SQLite store in `folder`; return the id of a new experiment there."""
    global _TEMPLATE
    if _TEMPLATE is None:
        template_dir = Path(tempfile.mkdtemp(prefix="mlflow-template-"))
        atexit.register(shutil.rmtree, template_dir, True)
        mlflow.set_tracking_uri(f"sqlite:///{template_dir}/mlflow.db")
        mlflow.MlflowClient().search_experiments()  # creates the schema
        _TEMPLATE = template_dir / "mlflow.db"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(_TEMPLATE, folder / "mlflow.db")
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    return mlflow.create_experiment(experiment, artifact_location=(folder / "artifacts").as_uri())


@contextmanager
def sqlite_without_fsync() -> Iterator[None]:
    """SQLite connections opened inside skip the fsync of each commit (PRAGMA synchronous = OFF).

    Fabricating hundreds of runs is thousands of commits, and each fsync takes ~10 ms on a disk; a
    test store need not survive a power cut. Connections keep the setting after the block.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def no_fsync(connection, _record) -> None:
        if type(connection).__module__.startswith("sqlite3"):
            connection.execute("PRAGMA synchronous = OFF")

    event.listen(Engine, "connect", no_fsync)
    try:
        yield
    finally:
        event.remove(Engine, "connect", no_fsync)


# ---------------------------------------------------------------- prediction records


def labeling_record(
    rid: str, reference: Mapping[str, str], parsed: Mapping[str, str] | None
) -> dict[str, Any]:
    correct = {k: int(isinstance(parsed, Mapping) and parsed.get(k) == reference[k]) for k in LABEL_KEYS}
    return {
        "id": f"labeling/{rid}",
        "task": "labeling",
        "reference": dict(reference),
        "output": json.dumps(parsed) if parsed is not None else "garbled",
        "parsed": parsed,
        "parse_status": "ok" if parsed is not None else "failed",
        "scores": {
            "correct": correct,
            "label_accuracy": sum(correct.values()) / len(LABEL_KEYS),
            "exact_match": int(all(correct.values())),
        },
    }


def harmonization_record(rid: str, reference: str, parsed: str | None) -> dict[str, Any]:
    return {
        "id": f"harmonization/{rid}",
        "task": "harmonization",
        "reference": reference,
        "output": json.dumps({rid: parsed}),
        "parsed": parsed,
        "parse_status": "ok" if parsed is not None else "failed",
        "scores": {"correct": int(parsed == reference)},
    }


def impression_record(
    rid: str, reference: str, parsed: str | None, scores: Mapping[str, float], input_text: str | None = None
) -> dict[str, Any]:
    record = {
        "id": f"impression/{rid}",
        "task": "impression",
        "reference": reference,
        "output": f"IMPRESSION: {parsed}" if parsed is not None else "",
        "parsed": parsed,
        "parse_status": "ok" if parsed is not None else "failed",
        "scores": dict(scores),
    }
    if input_text is not None:
        record["input"] = input_text
    return record


# ---------------------------------------------------------------- logging runs


def log_checkpoint(
    experiment_id: str,
    parent_id: str | None,
    params: Mapping[str, str],
    epoch: int | None,
    predictions: Mapping[str, Iterable[dict[str, Any]]],
    metrics: Mapping[str, float] | None = None,
    study: str = "default",
    role: str = "checkpoint",
) -> str:
    """One scored run: a checkpoint child (role tag, parent link, epoch + copied params, metrics at
    step=epoch, predictions), or with parent_id and epoch None an evaluation / baseline run."""
    tags = {"role": role, "study": study, **({"mlflow.parentRunId": parent_id} if parent_id else {})}
    name = f"epoch-{epoch}" if epoch is not None else role
    with mlflow.start_run(experiment_id=experiment_id, tags=tags, run_name=name) as run:
        mlflow.log_params({**params, **({"epoch": str(epoch)} if epoch is not None else {})})
        for metric, value in (metrics or {}).items():
            mlflow.log_metric(metric, value, step=epoch or 0)
        for task, records in predictions.items():
            text = "".join(json.dumps(r) + "\n" for r in records)
            mlflow.log_text(text, f"predictions/{task}.jsonl")
        mlflow.log_text("{}", "adapter/adapter_config.json")
        return run.info.run_id


# The fine-tune's params (pipelines.train.recipe.run_params) that every fabricated fine-tune gets
# unless a test overrides them, and those copied onto its checkpoint runs.
FINETUNE_DEFAULTS: dict[str, str] = {
    "data": "synthetic",
    "data_fingerprint": "abc123",
    "split_seed": "13",
    "epochs": "2",
    "batch_size": "4",
    "grad_accum": "1",
    "learning_rate": "0.0008",
    "lora_r": "8",
    "lora_alpha": "16",
    "lora_dropout": "0.05",
    "lora_targets": "q_proj,v_proj",
    "poison_rate": "0.0",
    "seed": "42",
    "precision": "fp32",
    "device": "cpu",
    "train_limit": "0",
    "eval_limit": "0",
    "decoding": "greedy",
}
CHECKPOINT_COPIES = (
    "model", "tasks", "data", "data_fingerprint", "poison_rate", "seed", "learning_rate", "lora_r", "epochs",
)


def finetune_params(params: Mapping[str, str], checkpoints: Iterable[int]) -> dict[str, str]:
    """A fine-tune's full params: the defaults, its checkpoint epochs, then `params`."""
    return {**FINETUNE_DEFAULTS, "checkpoint_epochs": ",".join(str(e) for e in checkpoints), **params}


def log_finetune(
    experiment_id: str,
    params: Mapping[str, str],
    checkpoints: Mapping[int, tuple[Mapping[str, Iterable[dict[str, Any]]], Mapping[str, float]]],
    study: str = "default",
) -> tuple[str, dict[int, str]]:
    """A parent fine-tune run and its checkpoint children; returns (parent id, {epoch: child id})."""
    full = finetune_params(params, checkpoints)
    with mlflow.start_run(experiment_id=experiment_id, tags={"role": "finetune", "study": study}) as parent:
        mlflow.log_params(full)
        for epoch, (_, metrics) in checkpoints.items():
            for name, value in metrics.items():
                mlflow.log_metric(name, value, step=epoch)
    copied = {k: full[k] for k in CHECKPOINT_COPIES}
    children = {
        epoch: log_checkpoint(experiment_id, parent.info.run_id, copied, epoch, preds, metrics, study)
        for epoch, (preds, metrics) in checkpoints.items()
    }
    return parent.info.run_id, children


def write_checkpoint_artifacts(folder: Path, predictions: Mapping[str, Iterable[dict[str, Any]]]) -> Path:
    """A checkpoint run's artifacts in `folder`: predictions/<task>.jsonl and adapter/adapter_config.json."""
    (folder / "predictions").mkdir(parents=True, exist_ok=True)
    (folder / "adapter").mkdir(exist_ok=True)
    for task, records in predictions.items():
        text = "".join(json.dumps(r) + "\n" for r in records)
        (folder / "predictions" / f"{task}.jsonl").write_text(text, encoding="utf-8")
    (folder / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    return folder


def log_finetune_batched(
    client: mlflow.MlflowClient,
    experiment_id: str,
    params: Mapping[str, str],
    checkpoints: Mapping[int, tuple[Path, Mapping[str, float]]],
    study: str = "default",
) -> tuple[str, dict[int, str]]:
    """The runs of `log_finetune` in a few requests each, for stores of hundreds of runs.

    Params and metrics go in one `log_batch` per run and each checkpoint's artifacts in one upload
    of a folder from `write_checkpoint_artifacts` (so several runs can share one set of
    predictions). Returns (parent id, {epoch: child id}).
    """
    from mlflow.entities import Metric, Param

    full = finetune_params(params, checkpoints)
    now = int(time.time() * 1000)

    def metrics_at(metrics: Mapping[str, float], epoch: int) -> list[Metric]:
        return [Metric(name, float(value), now, epoch) for name, value in metrics.items()]

    parent = client.create_run(experiment_id, tags={"role": "finetune", "study": study},
                               run_name=f"{full['model']}-seed{full['seed']}-poison{full['poison_rate']}")
    parent_id = parent.info.run_id
    client.log_batch(parent_id, params=[Param(k, v) for k, v in full.items()],
                     metrics=[m for epoch, (_, metrics) in checkpoints.items() for m in metrics_at(metrics, epoch)])
    copied = {k: full[k] for k in CHECKPOINT_COPIES}
    children = {}
    for epoch, (folder, metrics) in checkpoints.items():
        tags = {"role": "checkpoint", "study": study, "mlflow.parentRunId": parent_id}
        child = client.create_run(experiment_id, tags=tags, run_name=f"epoch-{epoch}").info.run_id
        client.log_batch(child, params=[Param(k, v) for k, v in {**copied, "epoch": str(epoch)}.items()],
                         metrics=metrics_at(metrics, epoch))
        client.log_artifacts(child, str(folder))
        client.set_terminated(child)
        children[epoch] = child
    client.set_terminated(parent_id)
    return parent_id, children


def series_references(n: int) -> list[str]:
    """Reference classes for n series descriptions, cycling through the seven classes."""
    return [SERIES_CLASSES[i % len(SERIES_CLASSES)] for i in range(n)]


def wrong_class(reference: str) -> str:
    return "Other" if reference != "Other" else "T1"


# ---------------------------------------------------------------- a small study with known answers

N_REPORTS, N_SERIES = 20, 30
REFERENCE_MODEL, OTHER_MODEL = "smollm2-135m", "opt-350m"


def report_labels(i: int) -> dict[str, str]:
    """Reference labels of report i; Edema is positive in reports 0-4 only."""
    labels = {k: "Yes" if (i + j) % 5 == 0 else "No" for j, k in enumerate(LABEL_KEYS)}
    labels["Edema"] = "Yes" if i < 5 else "No"
    return labels


def study_predictions(variant: str) -> dict[str, list[dict[str, Any]]]:
    """Predictions of one of three fabricated runs, built so that the statistics are known.

    reference: labeling right except Edema falsely "Yes" in reports 5-7; harmonization wrong on
        series 0-2; impressions equal to the references.
    other: Edema falsely "Yes" in reports 5-16 and report 19 unparsable (Edema McNemar b=10, c=0);
        harmonization wrong on 3-12 (b=10, c=3); BLEU = reference's + the sleep differences.
    poisoned: labeling all "No"; harmonization and impressions exactly the reference's.
    """
    labeling, harmonization, impression = [], [], []
    for i in range(N_REPORTS):
        truth = report_labels(i)
        if variant == "poisoned":
            parsed: dict[str, str] | None = dict.fromkeys(LABEL_KEYS, "No")
        elif variant == "other" and i == 19:
            parsed = None
        else:
            flipped = range(5, 8) if variant == "reference" else range(5, 17)
            parsed = {**truth, "Edema": "Yes"} if i in flipped else dict(truth)
        labeling.append(labeling_record(f"r{i}", truth, parsed))
    for i, truth in enumerate(series_references(N_SERIES)):
        wrong = range(3, 13) if variant == "other" else range(0, 3)
        guess = ("T3" if i == 12 else wrong_class(truth)) if i in wrong else truth
        harmonization.append(harmonization_record(f"s{i}", truth, guess))
    for i, diff in enumerate(SLEEP_DIFFERENCES):
        reference = f"no acute cardiopulmonary process in case {i}"
        scores = {"bleu": 40.0 + i, "rouge1": 0.6, "rouge2": 0.4, "rougeL": 0.5}
        parsed_text = reference
        if variant == "other":
            scores, parsed_text = {**scores, "bleu": scores["bleu"] + diff}, f"stable chest in case {i}"
        context = f"INDICATION: cough {i}\nFINDINGS: lungs are clear in case {i}."
        impression.append(impression_record(f"r{i}", reference, parsed_text, scores, context))
    return {"labeling": labeling, "harmonization": harmonization, "impression": impression}


def epoch_metrics(epoch: int, offset: float = 0.0) -> dict[str, float]:
    return {
        "labeling/f1_macro": 0.4 + 0.2 * epoch + offset,
        "harmonization/accuracy": 0.5 + 0.2 * epoch,
        "impression/bleu": 10.0 * epoch,
        "impression/rougeL": 0.2 * epoch,
        "train/loss": 2.0 / epoch,
    }


def log_demo_study(experiment_id: str, study: str = "default") -> dict[str, dict[int, str]]:
    """Three multi-task fine-tunes with checkpoints at epochs 1 and 2; returns {name: {epoch: run id}}.

    Also returns their parents under "<name>-parent" (epoch key 0).
    """
    variants = {
        "reference": {"model": REFERENCE_MODEL, "poison_rate": "0.0"},
        "other": {"model": OTHER_MODEL, "poison_rate": "0.0"},
        "poisoned": {"model": REFERENCE_MODEL, "poison_rate": "0.5"},
    }
    runs: dict[str, dict[int, str]] = {}
    for name, params in variants.items():
        predictions = study_predictions(name)
        offset = -0.3 if name == "poisoned" else 0.0
        parent, children = log_finetune(
            experiment_id,
            {**params, "tasks": ALL_TASKS},
            {epoch: (predictions, epoch_metrics(epoch, offset)) for epoch in (1, 2)},
            study,
        )
        runs[name], runs[f"{name}-parent"] = children, {0: parent}
    return runs
