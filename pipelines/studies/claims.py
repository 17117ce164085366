"""Claims: which worker trains which study run, so several workers never train the same one.

MLflow's store has no atomic "create if absent", so claims live in a small table of their own
(SQLAlchemy: a SQLite file for workers on one machine or a shared disk, PostgreSQL for several
machines). The primary key (study, run key) makes an INSERT the lock: exactly one worker's insert
succeeds. A claim is taken over only by compare-and-swap on its version number, when it is

- `running` but its heartbeat is older than `stale_after_s` (the worker died),
- `failed` or `done` before the claiming worker started (a later invocation retries a failure,
  or re-runs a run whose MLflow record was deleted; workers running alongside do not),
- held under the claiming worker's own id (a worker restarted with the same --worker-id).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, create_engine, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

log = logging.getLogger(__name__)

DEFAULT_STALE_AFTER_S = 600.0  # 10 heartbeats missed
HEARTBEAT_S = 60.0

METADATA = MetaData()
CLAIMS = Table(
    "study_claims", METADATA,
    Column("study", String(200), primary_key=True),
    Column("run_key", String(64), primary_key=True),
    Column("worker", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # running | done | failed
    Column("version", Integer, nullable=False),
    Column("claimed_at", Float, nullable=False),
    Column("heartbeat", Float, nullable=False),
)


@dataclass(frozen=True)
class Claim:
    study: str
    run_key: str
    worker: str
    status: str
    version: int
    claimed_at: float
    heartbeat: float

    def live(self, stale_after_s: float, now: float | None = None) -> bool:
        """Held by a worker that is (as far as its heartbeat says) still working on it."""
        return self.status == "running" and (now or time.time()) - self.heartbeat <= stale_after_s


def default_worker_id() -> str:
    """host-pid-random: unique per process, and per thread-started worker in one process."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def default_claims_url(tracking_uri: str) -> str:
    """A SQLite file next to a SQLite tracking store; else study-claims.db in the current folder."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return f"sqlite:///{db.parent / 'study-claims.db'}"
    return f"sqlite:///{Path.cwd() / 'study-claims.db'}"


class ClaimStore:
    """The claims table behind a SQLAlchemy URL (created on first use)."""

    def __init__(self, url: str, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        self.url, self.stale_after_s = url, stale_after_s
        sqlite = url.startswith("sqlite")
        if sqlite and url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, connect_args={"timeout": 60} if sqlite else {})
        self._create_schema()

    def _create_schema(self) -> None:
        # Several workers may start at once on a fresh database; the loser of a CREATE race retries.
        for attempt in range(5):
            try:
                METADATA.create_all(self.engine, checkfirst=True)
                return
            except (IntegrityError, OperationalError, ProgrammingError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def get(self, study: str, key: str) -> Claim | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(CLAIMS).where(CLAIMS.c.study == study, CLAIMS.c.run_key == key)).first()
        return Claim(*row) if row else None

    def all(self, study: str) -> dict[str, Claim]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(CLAIMS).where(CLAIMS.c.study == study)).all()
        return {row.run_key: Claim(*row) for row in rows}

    def claim(self, study: str, key: str, worker: str, session_start: float) -> bool:
        """True when `worker` now holds the run; False when another worker does (or did, this session)."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(CLAIMS).values(study=study, run_key=key, worker=worker, status="running",
                                                   version=1, claimed_at=now, heartbeat=now))
            return True
        except IntegrityError:
            pass
        current = self.get(study, key)
        if current is None:  # released in between: try once more from the top
            return self.claim(study, key, worker, session_start)
        takeable = (
            current.worker == worker
            or (current.status == "running" and not current.live(self.stale_after_s, now))
            or (current.status in ("failed", "done") and current.heartbeat < session_start)
        )
        if not takeable:
            return False
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(CLAIMS)
                .where(CLAIMS.c.study == study, CLAIMS.c.run_key == key, CLAIMS.c.version == current.version)
                .values(worker=worker, status="running", version=current.version + 1, claimed_at=now,
                        heartbeat=now)
            ).rowcount
        if taken and current.status == "running" and current.worker != worker:
            log.warning("took over the stale claim of %s on run %s (no heartbeat for %.0f s)",
                        current.worker, key, now - current.heartbeat)
        return bool(taken)

    def _set(self, study: str, key: str, worker: str, **values) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(
                update(CLAIMS)
                .where(CLAIMS.c.study == study, CLAIMS.c.run_key == key, CLAIMS.c.worker == worker)
                .values(heartbeat=time.time(), **values)
            ).rowcount)

    def heartbeat(self, study: str, key: str, worker: str) -> bool:
        """Refresh the claim; False when it is no longer this worker's (taken over as stale)."""
        return self._set(study, key, worker)

    def finish(self, study: str, key: str, worker: str, status: str) -> None:
        """Mark the claim done or failed (kept, so workers running alongside do not repeat it)."""
        if status not in ("done", "failed"):
            raise ValueError(f"a claim finishes as done or failed, not {status!r}")
        if not self._set(study, key, worker, status=status):
            log.warning("claim on run %s was taken over by another worker before it finished here", key)

    def dispose(self) -> None:
        self.engine.dispose()


class Heartbeat:
    """Context manager: refresh a claim every `interval_s` from a daemon thread while a run trains."""

    def __init__(self, store: ClaimStore, study: str, key: str, worker: str, interval_s: float = HEARTBEAT_S):
        self.store, self.args, self.interval_s = store, (study, key, worker), interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{key}")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not self.store.heartbeat(*self.args):
                    log.warning("lost the claim on run %s to another worker", self.args[1])
            except Exception:  # a flaky database must not kill the training run
                log.exception("heartbeat failed")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
