"""Where a sweep's Optuna study lives, and what becomes of the trials of a worker that died.

`--storage` takes:
  - a file path (default `optuna-journal.log`): Optuna's JournalStorage on a local file, safe for
    several worker processes on one machine (file lock, append-only log; NFS works too);
  - `postgresql://user:pass@host/db`, `mysql+pymysql://...`, `sqlite:///file.db`: an Optuna
    RDBStorage, with heartbeats so a crashed worker's trial is failed and re-queued;
  - `redis://host:6379`: JournalStorage on Redis (needs the redis package);
  - `grpc://host:port`: an `optuna grpc-proxy` server in front of any of these.

A worker that dies mid-trial (killed, out of memory, machine lost) leaves its trial RUNNING.
RDB storages notice through heartbeats: each running trial writes one every
`heartbeat_interval` seconds, and the next worker to ask for a trial fails every trial silent
for `grace_period` seconds. On every storage, a RUNNING trial whose worker ran on this machine
and whose process no longer exists is failed at once, without waiting for the grace period (the
journal file has no heartbeats, so there it is the only check; on an RDB storage it means the
last worker on a machine does not leave a dead neighbour's trial RUNNING because the grace period
had not passed when it finished). Either way the failed trial is re-queued (WAITING) up to
`max_retry` times, the next free worker runs it, and its MLflow runs are marked FAILED.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "optuna-journal.log"


@dataclass(frozen=True)
class StorageOptions:
    """The study's storage and how crashed workers' trials are detected and retried."""

    url: str = DEFAULT_STORAGE
    heartbeat_interval: int = 60  # seconds between heartbeats of a running trial (RDB storages)
    grace_period: int = 180  # seconds without a heartbeat before the trial counts as dead
    max_retry: int = 1  # times a dead worker's trial is re-queued

    def __post_init__(self) -> None:
        if self.heartbeat_interval < 1 or self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"--heartbeat-interval ({self.heartbeat_interval}) must be >= 1 and below --grace-period "
                f"({self.grace_period}); a grace of 2-3 heartbeats tolerates a busy machine"
            )
        if self.max_retry < 0:
            raise ValueError(f"--max-retry must be >= 0, got {self.max_retry}")


def storage_kind(url: str) -> str:
    """'journal-file', 'journal-redis', 'grpc' or 'rdb'."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    if not scheme:
        return "journal-file"
    if scheme in ("redis", "rediss"):
        return "journal-redis"
    return "grpc" if scheme == "grpc" else "rdb"


@contextmanager
def sqlite_schema_lock(url: str) -> Iterator[None]:
    """Serialize schema creation of a SQLite database: several processes creating a brand-new one
    at once race (alembic IntegrityError, duplicate column). Other URLs need no lock."""
    if not url.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    # The lock file lives in the temp folder (SQLite is one machine's anyway), not beside the db.
    db = Path(url[len("sqlite:///"):]).resolve()
    digest = hashlib.sha1(str(db).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"sqlite-schema-{digest}.lock"
    with FileLock(str(lock), timeout=300):
        yield


def worker_id() -> str:
    """'host:pid' of this worker process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_attrs() -> dict[str, object]:
    """User attrs a trial carries so that others can tell which worker runs it."""
    return {"worker": worker_id(), "worker_host": socket.gethostname(), "worker_pid": os.getpid()}


class StaleTrialHandler:
    """Called for each trial failed because its worker died: mark its MLflow runs, then re-queue it.

    `on_failed(trial)` (the sweep sets it once MLflow is set up) marks the MLflow side.
    """

    def __init__(self, max_retry: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.on_failed: Callable[[FrozenTrial], None] | None = None
        self.failed: list[int] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        log.warning("trial %d (worker %s) stopped without finishing: marked FAIL and re-queued "
                    "if retries are left", trial.number, trial.user_attrs.get("worker", "?"))
        self.failed.append(trial.number)
        if self.on_failed is not None:
            try:
                self.on_failed(trial)
            except Exception as exc:  # the study must stay usable even if MLflow is unreachable
                log.warning("could not mark the MLflow runs of trial %d: %s", trial.number, exc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry(study, trial)


def _journal_or_proxy(url: str, kind: str) -> BaseStorage | None:
    """A journal (file or Redis) or gRPC proxy storage for `url`; None for a database URL."""
    if kind == "journal-file":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(Path(url).expanduser())))
    if kind == "journal-redis":
        from optuna.storages.journal import JournalRedisBackend

        return optuna.storages.JournalStorage(JournalRedisBackend(url))
    if kind == "grpc":
        parts = urlsplit(url)
        return optuna.storages.GrpcStorageProxy(host=parts.hostname or "localhost", port=parts.port or 13000)
    return None


def open_storage(options: StorageOptions, handler: StaleTrialHandler) -> BaseStorage:
    """The Optuna storage named by `options.url`, for a sweep (created if new, with heartbeats)."""
    kind = storage_kind(options.url)
    if kind == "journal-file":
        Path(options.url).expanduser().parent.mkdir(parents=True, exist_ok=True)
    storage = _journal_or_proxy(options.url, kind)
    if storage is not None:
        return storage
    with warnings.catch_warnings(), sqlite_schema_lock(options.url):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            options.url,
            heartbeat_interval=options.heartbeat_interval,
            grace_period=options.grace_period,
            heartbeat_stale_trial_callback=handler,
        )


def open_existing_storage(url: str) -> BaseStorage | str:
    """The storage named by `url`, for reading a finished sweep (the report): a journal or SQLite
    file that is not there is a FileNotFoundError, never created."""
    kind = storage_kind(url)
    local, what = None, ""
    if kind == "journal-file":
        local, what = Path(url).expanduser(), "journal file"
    elif url.startswith("sqlite:///"):
        local, what = Path(url[len("sqlite:///"):]), "SQLite file"
    if local is not None and not local.is_file():
        raise FileNotFoundError(f"{what} {local} not found from {Path.cwd()} (pass --sweep-storage PATH or URL)")
    return _journal_or_proxy(url, kind) or url


def fail_stale_trials(study: optuna.Study, handler: StaleTrialHandler) -> list[int]:
    """Fail (and re-queue) the RUNNING trials of dead workers now; returns their numbers.

    Heartbeat storages: trials silent for the grace period (Optuna also checks before each new
    trial). Every storage: trials whose worker on this machine has exited. The sweep calls this
    at start, after each trial and at the end.
    """
    before = len(handler.failed)
    if optuna.storages._heartbeat.is_heartbeat_enabled(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    _fail_trials_of_dead_local_workers(study, handler)
    return handler.failed[before:]


def storage_kind_of(study: optuna.Study) -> str:
    storage = study._storage
    if isinstance(storage, optuna.storages.JournalStorage):
        from optuna.storages.journal import JournalFileBackend

        return "journal-file" if isinstance(storage._backend, JournalFileBackend) else "journal-redis"
    return "rdb" if isinstance(storage, optuna.storages.RDBStorage) else "other"


def _fail_trials_of_dead_local_workers(study: optuna.Study, handler: StaleTrialHandler) -> None:
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("worker_pid")
        if trial.user_attrs.get("worker_host") != host or not isinstance(pid, int) or process_alive(pid):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # finished or failed by another worker meanwhile
            continue
        handler(study, study.get_trials(deepcopy=True)[trial.number])


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (a zombie counts as dead)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")
