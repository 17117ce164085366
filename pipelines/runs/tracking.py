"""MLflow helpers: the tracking URI, run params, child runs, artifacts and dataset inputs."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow

from pipelines.data.records import DataBundle
from pipelines.data.split import Split
from pipelines.runs import schema

log = logging.getLogger(__name__)

# Params copied from the fine-tune onto each checkpoint run, so the UI can filter model x epoch.
CHECKPOINT_PARAM_COPIES = (
    "model", "tasks", "data", "data_fingerprint", "poison_rate", "seed", "learning_rate",
    "lora_r", "epochs", "batch_size", "train_limit", "eval_limit", "study",
)


# Client retries for a tracking server that is briefly away (a restart, a failover, a network
# blip): urllib3 sleeps 0, 4, 8, ..., 64, then 120 s between tries (factor x 2^(n-1), capped at
# 120 s, plus up to 1 s jitter), so 10 retries ride out about 10 minutes of downtime per call.
# MLflow's own defaults (7 retries, 120 s timeout) give up after about 4 minutes; it refuses more
# than 10 retries. The variables, when set, win.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",  # seconds per try (connect or read), not per upload
}


class TrackingUnavailableError(RuntimeError):
    """The tracking store cannot be reached or written; nothing was logged."""


def configure_http_retries() -> None:
    """Set HTTP_RETRY_DEFAULTS for the variables the user has not set (read by MLflow per request)."""
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)


@contextmanager
def few_retries(retries: int = 1, timeout_s: int = 10) -> Iterator[None]:
    """MLflow HTTP calls in this block give up fast: for a server already known to be away."""
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_tracking_outage(exc: BaseException) -> bool:
    """True when `exc` means the tracking server could not be reached (after MLflow's retries).

    MLflow wraps the requests error in an MlflowException raised inside the handler, so the
    network error is in the exception's context chain.
    """
    import requests

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            return True
        current = current.__cause__ or current.__context__
    text = str(exc)
    return "Max retries exceeded" in text or "failed with timeout exception" in text


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite store `mlflow.db` in the current folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any run is created, when the store is unreachable or unwritable."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise TrackingUnavailableError(
                f"MLflow tracking server {uri} is not reachable ({exc.__class__.__name__}); start it, "
                "or unset MLFLOW_TRACKING_URI to log to the local SQLite store"
            ) from None
    elif parsed.scheme == "sqlite":
        db = Path(uri.split("sqlite:///", 1)[-1])
        folder = db.parent if str(db) else Path.cwd()
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingUnavailableError(f"tracking store folder {folder} does not exist or is not writable")
    elif parsed.scheme in ("", "file"):
        folder = Path(parsed.path or uri)
        parent = folder if folder.exists() else folder.parent
        if not os.access(parent, os.W_OK):
            raise TrackingUnavailableError(f"tracking folder {folder} is not writable")


def check_store_exists(uri: str) -> None:
    """Raise TrackingUnavailableError when a SQLite store's file is missing: a reader would otherwise
    create an empty store there and find no runs (e.g. when started from another folder)."""
    if urlparse(uri).scheme == "sqlite":
        db = Path(uri.split("sqlite:///", 1)[-1])
        if not db.is_file():
            raise TrackingUnavailableError(
                f"no MLflow store at {uri} ({db} does not exist); run from the folder holding mlflow.db, "
                "or pass --tracking-uri (or set MLFLOW_TRACKING_URI)")


def shown_uri(uri: str) -> str:
    """The URI without a user name or password, for messages."""
    parsed = urlparse(uri)
    if parsed.password is None and parsed.username is None:
        return uri
    return parsed._replace(netloc=parsed.hostname + (f":{parsed.port}" if parsed.port else "")).geturl()


def connect(must_exist: bool = False) -> str:
    """Point MLflow at the tracking store (retry defaults set, reachability checked) and log which
    store it is; returns the URI. must_exist: refuse a SQLite store that does not exist yet (readers)."""
    configure_http_retries()
    uri = default_tracking_uri()
    check_tracking_uri(uri)
    if must_exist:
        check_store_exists(uri)
    mlflow.set_tracking_uri(uri)
    log.info("MLflow store: %s", shown_uri(uri))
    return uri


# -- links into the MLflow UI (MLflow 3's app routes: a hash router; `workflowType=machine_learning`
# opens an experiment on its runs table instead of the GenAI overview)
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_address(uri: str) -> str:
    """The UI's address for a store: a tracking server serves its own UI; a local store needs `mlflow ui`."""
    return shown_uri(uri).rstrip("/") if urlparse(uri).scheme in ("http", "https") else UI_ADDRESS


def experiment_link(experiment_id: str, uri: str) -> str:
    """The experiment's runs table in the MLflow UI."""
    return f"{ui_address(uri)}/#/experiments/{experiment_id}?workflowType=machine_learning"


def run_link(experiment_id: str, run_id: str, uri: str) -> str:
    """One run's page in the MLflow UI."""
    return f"{ui_address(uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def where_to_look(run_id: str = "", uri: str | None = None, experiment_id: str = "") -> str:
    """Finish-message lines: how to open the UI on this store, then links to the experiment's runs
    and to `run_id` (its experiment is looked up unless given)."""
    uri = uri or mlflow.get_tracking_uri()
    experiment_id = experiment_id or mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id
    lines = [] if urlparse(uri).scheme in ("http", "https") else [
        f"Open the MLflow UI:  mlflow ui --backend-store-uri {uri}   then:"]
    lines.append(f"  runs:     {experiment_link(experiment_id, uri)}")
    if run_id:
        lines.append(f"  this run: {run_link(experiment_id, run_id, uri)}")
    return "\n".join(lines)


def setup_tracking(experiment: str, must_exist: bool = False) -> str:
    """Point MLflow at the tracking store and experiment; returns the URI.

    Under `mlflow run` the run is already created (MLFLOW_RUN_ID): keep it, in the experiment the
    user chose (--experiment-name); one left in the Default experiment moves to `experiment`
    (adopt_project_run). MLFLOW_EXPERIMENT_ID alone is no such sign: mlflow.set_experiment itself
    exports it, so it outlives the store it belonged to in a long process.
    """
    uri = connect(must_exist)
    if os.environ.get("MLFLOW_RUN_ID"):
        adopt_project_run(experiment)
    else:
        ensure_experiment(experiment)
        mlflow.set_experiment(experiment)
    return uri


DEFAULT_EXPERIMENT_ID = "0"  # MLflow's "Default" experiment
REAP_WAIT_S = 120.0  # how long a reaper waits for `mlflow run` to end its run
_ADOPTED: set[str] = set()  # runs adopt_project_run created: `mlflow run` does not know them


def adopt_project_run(experiment: str) -> None:
    """Under `mlflow run` without --experiment-name, move MLflow's run out of the Default experiment.

    The MLproject file cannot name an experiment, so `mlflow run` puts its run in Default unless
    told otherwise. A new run in `experiment`, with the same name, tags and params, becomes this
    command's run (MLFLOW_RUN_ID, so every later start_run continues it); MLflow's run is deleted
    once `mlflow run` has ended it (delete_when_ended).
    """
    from mlflow.entities import Param

    client = mlflow.MlflowClient()
    wrapper = client.get_run(os.environ["MLFLOW_RUN_ID"])
    if wrapper.info.experiment_id != DEFAULT_EXPERIMENT_ID:
        return
    if client.get_experiment(DEFAULT_EXPERIMENT_ID).name == experiment:
        return
    ensure_experiment(experiment)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    tags = {k: v for k, v in wrapper.data.tags.items() if k != "mlflow.runName"}
    run = client.create_run(experiment_id, tags=tags, run_name=wrapper.info.run_name)
    params = [Param(k, v) for k, v in wrapper.data.params.items()]
    for start in range(0, len(params), 100):  # MLflow's batch limit
        client.log_batch(run.info.run_id, params=params[start:start + 100])
    client.set_tag(wrapper.info.run_id, "moved_to", run.info.run_id)
    delete_when_ended(wrapper.info.run_id)
    _ADOPTED.add(run.info.run_id)
    os.environ["MLFLOW_RUN_ID"] = run.info.run_id
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    log.info("mlflow run put its run in the Default experiment; it continues as run %s in experiment %r "
             "(mlflow run --experiment-name NAME picks another)", run.info.run_id, experiment)


def discard_project_run(reason: str) -> str:
    """Leave no run behind under `mlflow run` after bad input, or after a plan: delete the run MLflow
    created for this command (MLFLOW_RUN_ID), once `mlflow run` has ended it. A run that already
    holds results (metrics or a role tag: the command got past its checks) is kept, with the reason
    as tag `failure_reason`. Returns 'deleted', 'kept' or '' (not under mlflow run, or no store)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return ""
    try:
        client = mlflow.MlflowClient()
        run = client.get_run(run_id)
        if run.info.lifecycle_stage != "active":
            return ""
        client.set_tag(run_id, "failure_reason", reason[:5000])
        if run.info.status == "RUNNING" and run_id in _ADOPTED:  # ours to end, not `mlflow run`'s
            client.set_terminated(run_id, "FAILED")
        if run.data.metrics or "role" in run.data.tags:
            return "kept"
        if run_id in _ADOPTED:
            client.delete_run(run_id)
        else:
            delete_when_ended(run_id)
        return "deleted"
    except Exception as exc:  # already failing: a store error must not hide the user's mistake
        log.warning("could not clean up mlflow run's run %s: %s", run_id, exc)
        return ""


def delete_when_ended(run_id: str) -> None:
    """Delete `run_id` once `mlflow run` has ended it, after this process exits.

    `mlflow run` ends its run after the command exits and fails on a deleted one (mlflow 3.17's
    _maybe_set_run_terminated compares a status string with RunStatus integers, so it always
    updates the run). A detached reaper (reap_run) therefore waits for that update, then deletes.
    """
    import atexit

    atexit.register(_start_reaper, run_id)


def _start_reaper(run_id: str) -> None:
    import sys

    subprocess.Popen([sys.executable, "-c", f"from pipelines.runs.tracking import reap_run; reap_run({run_id!r})"],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def reap_run(run_id: str, wait_s: float = REAP_WAIT_S) -> None:
    """Wait until run `run_id` is no longer RUNNING (at most `wait_s`), then delete it."""
    client = mlflow.MlflowClient()
    deadline = time.monotonic() + wait_s
    while client.get_run(run_id).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    if client.get_run(run_id).info.status == "RUNNING":  # `mlflow run` itself was killed
        client.set_terminated(run_id, "FAILED")
    client.delete_run(run_id)


def ensure_experiment(name: str) -> None:
    """Create experiment `name` unless it exists, tolerating another process creating it meanwhile.

    mlflow.set_experiment alone loses that race: when its create fails with
    RESOURCE_ALREADY_EXISTS it returns without making the experiment active, and the run then
    lands in the Default experiment (seen with mlflow 3.17 and two fine-tunes started together).
    """
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    if client.get_experiment_by_name(name) is not None:
        return
    try:
        client.create_experiment(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def git_commit() -> str:
    """The current git commit of the project, or 'unknown' outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parents[2])  # the project root
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_params_once(params: dict[str, Any]) -> None:
    """Log params the active run does not have yet.

    `mlflow run` already logged the entry point's own params in the user's spelling
    (e.g. learning_rate=8e-4); logging them again with another spelling would be an error.
    """
    run = mlflow.active_run()
    existing = mlflow.get_run(run.info.run_id).data.params if run else {}
    fresh = {k: str(v)[:6000] for k, v in params.items() if k not in existing}
    if fresh:
        mlflow.log_params(fresh)


def log_metrics_at(metrics: dict[str, float], step: int) -> None:
    """Log metrics at `step` (the epoch), skipping NaNs MLflow cannot plot."""
    clean = {k: float(v) for k, v in metrics.items() if v == v}
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_json(obj: Any, artifact_file: str) -> None:
    """Log a JSON-able object as an artifact file."""
    mlflow.log_dict(obj, artifact_file)


def log_folder(folder: Path, artifact_path: str) -> None:
    """Log every file of `folder` under `artifact_path`."""
    mlflow.log_artifacts(str(folder), artifact_path)


def dataset_source(spec: str):
    """An MLflow dataset source whose URI is our data spec, e.g. ``openi-csv:/data/r.csv?unmapped=warn``.

    Built directly: mlflow's resolver takes ``openi-csv:`` for a URI scheme it does not know and
    raises, so a source string only works for plain paths and ``synthetic``.
    """
    from mlflow.data.sources import LocalArtifactDatasetSource

    return LocalArtifactDatasetSource(spec)


def log_dataset_inputs(bundle: DataBundle, splits: dict[str, Split]) -> None:
    """Log each dataset's train and test parts as MLflow dataset inputs with a content digest."""
    import pandas as pd

    frames = {
        "reports": pd.DataFrame(
            [{"id": r.id, "text": r.text(), **r.labels} for r in bundle.reports]
        ),
        "series": pd.DataFrame([{"id": s.id, "description": s.description, "label": s.label}
                                for s in bundle.series]),
    }
    for name, frame in frames.items():
        if frame.empty:
            continue
        source = bundle.notes.get(f"{name}_source", bundle.source)
        for part in ("train", "test"):
            ids = set(getattr(splits[name], part))
            subset = frame[frame["id"].isin(ids)].reset_index(drop=True)
            with warnings.catch_warnings():
                # mlflow's schema hints (e.g. about integer columns); harmless here.
                warnings.simplefilter("ignore", UserWarning)
                dataset = mlflow.data.from_pandas(subset, source=dataset_source(source),
                                                  name=f"{name}-{part}")
            log_input_once(dataset, context="training" if part == "train" else "evaluation")


_DUPLICATE_ROW_MARKERS = ("UNIQUE constraint failed", "duplicate key value", "IntegrityError")


def log_input_once(dataset, context: str, attempts: int = 3) -> None:
    """mlflow.log_input, tolerating another run inserting the same dataset at the same moment.

    The store looks a dataset up by (experiment, name, digest) and inserts it when missing; two
    fine-tunes of one experiment starting together can both miss it, and the slower insert then
    fails on the unique constraint (seen with mlflow 3.17 behind `mlflow server`). Retried, the
    lookup finds the row the other run wrote.
    """
    for attempt in range(1, attempts + 1):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except Exception as exc:  # RestException, MlflowException or sqlalchemy's IntegrityError
            if attempt == attempts or not any(m in str(exc) for m in _DUPLICATE_ROW_MARKERS):
                raise
            time.sleep(0.2 * attempt)


@contextmanager
def child_run(run_name: str, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    """A nested run under the active run."""
    with mlflow.start_run(run_name=run_name, nested=True, tags=tags) as run:
        yield run


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder for files about to be logged as artifacts."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def prediction_table(records: list[dict[str, Any]]):
    """Prediction records as a DataFrame the MLflow UI tabulates: nested values (a labeling
    reference's 14 labels, per-example scores) become JSON text in their column."""
    import pandas as pd

    def cell(value: Any) -> Any:
        return json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, (dict, list)) else value

    return pd.DataFrame([{k: cell(v) for k, v in r.items()} for r in records])


def table_file(task: str) -> str:
    """Where a task's predictions table goes, beside predictions/<task>.jsonl (which analysis reads)."""
    return schema.predictions_table(task)


def log_prediction_tables(records_by_task: dict[str, list[dict[str, Any]]], run_id: str,
                          client: mlflow.MlflowClient | None = None) -> None:
    """Each task's predictions as an MLflow table (the UI's Evaluation view and mlflow.load_table read
    it); skipped where the run has the table already: log_table appends to an existing one."""
    client = client or mlflow.MlflowClient()
    have = {a.path for a in client.list_artifacts(run_id, schema.PREDICTIONS_DIR)}
    for task, records in records_by_task.items():
        if table_file(task) not in have and records:
            client.log_table(run_id, prediction_table(records), table_file(task))


def log_predictions(records_by_task: dict[str, list[dict[str, Any]]]) -> None:
    """The active run's predictions: predictions/<task>.jsonl (one record per line) and each as a table."""
    with scratch_dir("predictions-") as folder:
        for task, records in records_by_task.items():
            write_jsonl(records, folder / f"{task}.jsonl")
        log_folder(folder, schema.PREDICTIONS_DIR)
    log_prediction_tables(records_by_task, mlflow.active_run().info.run_id)


@contextmanager
def scored_run(run_name: str, params: dict[str, Any], tags: dict[str, str], *, manifest: dict | None = None,
               config: dict[str, Any] | None = None, entry_point: str = "") -> Iterator[mlflow.ActiveRun]:
    """Open the run of a model scored on a split (evaluate, baseline, harmonize): its params, tags
    (schema.run_tags), split manifest and resolved config (`--config` repeats it) logged first;
    nested when a run is active (a study's or a sweep's)."""
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
        log_params_once(params)
        mlflow.set_tags(tags)
        if manifest is not None:
            log_json(manifest, schema.SPLIT_MANIFEST)
        if config is not None:
            log_json(config, schema.config_artifact(entry_point))
        yield run


def log_scores(metrics: dict[str, float], records_by_task: dict[str, list[dict[str, Any]]], step: int) -> None:
    """A scored run's results: the metrics at `step` and each task's prediction records."""
    log_metrics_at(metrics, step=step)
    log_predictions(records_by_task)


def write_jsonl(records: list[dict[str, Any]], path: Path) -> Path:
    """Write records as JSON lines."""
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
