"""A response cache in a local SQLite file, so re-running a baseline sends no request twice.

Keys are SHA-256 hashes of (backend identity, model, messages, generation params); the prompt
text itself is not stored, only its hash and the response. Only successful responses are kept:
a failed or malformed one is asked again next time.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(backend: str, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """Stable hash of everything that determines a (greedy) response."""
    blob = json.dumps({"backend": backend, "model": model, "messages": messages, "params": params},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """get/put of response texts by key; used from one thread (the one that collects results)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute(SCHEMA)
        self._db.commit()

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, backend: str, model: str, response: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                         (key, backend, model, response, time.time()))
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()
