"""Build an expensive test result once per test session, however pytest-xdist spreads its tests.

A session fixture is per worker process, and grouping tests with `xdist_group` is not honoured
by pytest 9 with pytest-xdist 3.8 (xdist renames `item._nodeid`, which pytest 9 no longer
reads), so a fixture shared by several tests would be built on each worker that runs one of
them. Here the first worker builds under a file lock in the session's shared temp folder and
pickles the result; the others load it (or re-raise its skip or failure).
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from filelock import FileLock

T = TypeVar("T")


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], T]) -> T:
    """`build(folder)` once per session; its result must pickle; `folder` outlives the session."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent  # one folder per session, above each worker's
    with FileLock(str(shared / f"{name}.lock")):
        done = shared / f"{name}.pickle"
        if done.is_file():
            kind, value = pickle.loads(done.read_bytes())
            if kind == "skip":
                pytest.skip(value)
            if kind == "error":
                raise RuntimeError(f"{name} failed on another xdist worker: {value}")
            return value
        folder = shared / name
        folder.mkdir(exist_ok=True)
        try:
            result: Any = build(folder)
        except pytest.skip.Exception as exc:
            done.write_bytes(pickle.dumps(("skip", str(exc))))
            raise
        except BaseException as exc:
            done.write_bytes(pickle.dumps(("error", repr(exc))))
            raise
        done.write_bytes(pickle.dumps(("ok", result)))
        return result
