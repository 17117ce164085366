"""Two sweep workers, separate processes, share one Optuna study on a real PostgreSQL server.

The server is Debian's PostgreSQL, started on loopback in a temporary folder for this module
(initdb as the `postgres` user when the tests run as root). Worker A is SIGKILLed mid-trial;
the heartbeat must fail its trial (not leave it RUNNING), re-queue it, and mark its MLflow runs.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from optuna.trial import TrialState
from xdist_once import build_once

ROOT = Path(__file__).resolve().parent.parent
STUDY = "team"
SPACE = {
    "objective": {"metrics": ["harmonization/accuracy"], "direction": "maximize"},
    "sampler": {"name": "random", "seed": 3},
    "pruner": {"name": "none"},
    "evaluate_at": [1, 2],
    "fixed": {"tasks": "harmonization", "data": "synthetic?reports=40&series=40", "train_limit": 4,
              "eval_limit": 2, "batch_size": 2, "epochs": 2, "max_new_tokens": 8, "eval_batch_size": 2},
    "params": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
               "lora_r": {"type": "categorical", "choices": [2, 4]}},
}


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth, no fsync); yields a URL prefix.

    Debian's server binaries; initdb runs as the `postgres` user when the tests run as root."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    import psycopg  # the PostgreSQL driver SQLAlchemy 2.1 uses for postgresql:// (psycopg[binary])

    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def pg(tool: str, *args: str) -> None:
        done = subprocess.run([*as_user, str(bindir / tool), *args], capture_output=True, text=True)
        if done.returncode != 0:
            log = root / "server.log"
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}"
                               + (log.read_text()[-2000:] if log.is_file() else ""))

    try:
        pg("initdb", "-D", str(data), "-U", "lab", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        pg("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
        with psycopg.connect(host="127.0.0.1", port=port, user="lab", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE optuna")
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql://lab@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _start_worker(cwd: Path, env: dict[str, str], model: Path, n_trials: int, index: int, log: Path):
    command = [sys.executable, "-m", "pipelines.sweep", "--space", "space.yaml", "--model", str(model),
               "--storage", env["OPTUNA_URL"], "--study-name", STUDY, "--n-trials", str(n_trials),
               "--worker-index", str(index), "--experiment", "workers", "--no-figures",
               "--heartbeat-interval", "1", "--grace-period", "3", "--max-retry", "1"]
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _trial_query(number: int) -> str:
    return f"tags.role = 'trial' and tags.optuna_study = '{STUDY}' and tags.optuna_trial_number = '{number}'"


def _run_two_workers(folder: Path, postgres_url: str, model: Path) -> dict:
    """Workers A (2 trials) and B (3 trials) start together; A is SIGKILLed during its second
    trial. Returns a snapshot of the study and the MLflow runs (the cluster stops afterwards)."""
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE))
    optuna_url, mlflow_url = f"{postgres_url}/optuna", f"{postgres_url}/mlflow"
    # Create both schemas once, before the workers start (concurrent creation races).
    storage = optuna.storages.RDBStorage(optuna_url)
    client = mlflow.MlflowClient(mlflow_url)
    experiment = client.create_experiment("workers", artifact_location=(folder / "artifacts").as_uri())
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_url, "OPTUNA_URL": optuna_url, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(name, None)
    a = _start_worker(folder, env, model, 2, 0, folder / "a.log")
    b = _start_worker(folder, env, model, 3, 1, folder / "b.log")
    killed = None
    try:
        deadline, study = time.monotonic() + 300, None
        while time.monotonic() < deadline and a.poll() is None:
            try:
                study = study or optuna.load_study(study_name=STUDY, storage=storage)
            except KeyError:  # not created yet
                time.sleep(0.5)
                continue
            mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker_pid") == a.pid]
            running = [t.number for t in mine if t.state == TrialState.RUNNING]
            # Kill A in its second trial as soon as that trial's MLflow run exists, so that B
            # still asks for a trial after the grace period and picks up the retry.
            if len(mine) >= 2 and running and client.search_runs([experiment], _trial_query(running[0])):
                a.send_signal(signal.SIGKILL)
                killed = running[0]
                break
            time.sleep(0.2)
        a.wait(timeout=60)
        b.wait(timeout=300)
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = {name: (folder / f"{name}.log").read_text() for name in ("a", "b")}
    assert killed is not None, "worker A finished before it could be killed mid-trial:\n" + logs["a"][-3000:]
    assert b.returncode == 0, logs["b"][-5000:]
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=True)
    runs = client.search_runs([experiment], max_results=1000)
    return {"trials": trials, "runs": runs, "killed": killed, "a": a.pid, "b": b.pid, "logs": logs}


@pytest.fixture(scope="session")
def two_workers(tiny_model_dir, tmp_path_factory) -> dict:
    def build(folder: Path) -> dict:
        with postgres_cluster() as url:
            return _run_two_workers(folder, url, tiny_model_dir)

    return build_once(tmp_path_factory, "sweep-workers", build)


def _runs(snapshot, role, **tags):
    return [r for r in snapshot["runs"] if r.data.tags.get("role") == role
            and all(r.data.tags.get(k) == v for k, v in tags.items())]


def _trial_runs(snapshot, number=None):
    tags = {"optuna_study": STUDY} | ({"optuna_trial_number": str(number)} if number is not None else {})
    return _runs(snapshot, "trial", **tags)


def test_every_trial_of_both_workers_is_in_the_study_exactly_once(two_workers):
    trials, a, b = two_workers["trials"], two_workers["a"], two_workers["b"]
    assert [t.number for t in trials] == list(range(len(trials)))
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # A WAITING trial is a queued retry, not yet run by anyone (it still carries the dead trial's attrs).
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert all("failed_trial" in t.system_attrs for t in waiting)
    started = [t for t in trials if t.state != TrialState.WAITING]
    by_worker = {pid: [t.number for t in started if t.user_attrs.get("worker_pid") == pid] for pid in (a, b)}
    assert len(by_worker[a]) == 2, by_worker  # one finished, one killed
    assert len(by_worker[b]) == 3, by_worker
    assert sorted(by_worker[a] + by_worker[b]) == [t.number for t in started]


def test_each_finished_trial_has_exactly_one_mlflow_child_run(two_workers):
    finished = [t for t in two_workers["trials"] if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 4
    sweep_runs = {r.info.run_id for r in _runs(two_workers, "sweep", optuna_study=STUDY)}
    assert len(sweep_runs) == 2  # one per worker
    for trial in finished:
        runs = _trial_runs(two_workers, trial.number)
        assert len(runs) == 1, (trial.number, [r.info.run_id for r in runs])
        run = runs[0]
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert run.info.status == "FINISHED" and run.data.tags["optuna_state"] == trial.state.name
        assert run.data.tags["mlflow.parentRunId"] == trial.user_attrs["mlflow_parent_run_id"]
        assert run.data.tags["mlflow.parentRunId"] in sweep_runs
        assert run.data.params["eval_split"] == "validation"
    assert not [r for r in _trial_runs(two_workers) if r.info.status == "RUNNING"]


def test_killed_workers_trial_is_failed_and_retried_not_left_running(two_workers):
    trials, killed = two_workers["trials"], two_workers["killed"]
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1, two_workers["logs"]["b"][-3000:]
    retry = retries[0]
    assert retry.params == trials[killed].params
    # B picks the retry up when it asks for a trial after the grace period; if its budget ran out
    # first the retry waits for the next worker, and B's summary says so.
    if retry.state == TrialState.WAITING:
        assert "WAITING (re-queued from crashed workers)" in two_workers["logs"]["b"]
    else:
        assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert retry.user_attrs["worker_pid"] == two_workers["b"]
        assert _trial_runs(two_workers, retry.number)[0].data.tags["optuna_retry_of"] == str(killed)
    # The killed trial's MLflow runs: FAILED and tagged, not RUNNING forever; so is A's sweep run.
    (dead,) = _trial_runs(two_workers, killed)
    assert dead.info.status == "FAILED" and dead.data.tags["optuna_state"] == "FAIL"
    (parent,) = [r for r in two_workers["runs"] if r.info.run_id == dead.data.tags["mlflow.parentRunId"]]
    assert parent.info.status == "FAILED" and parent.data.tags["sweep_worker_died"] == "true"
    children = [r for r in two_workers["runs"] if r.data.tags.get("mlflow.parentRunId") == dead.info.run_id]
    assert all(c.info.status != "RUNNING" for c in children)
