"""SIGINT / SIGTERM during a fine-tune: stop at the next optimizer step, save, end the run KILLED.

The first signal only sets a flag: the training loop checks it after each optimizer step, lets
the Trainer save a resumable checkpoint, and returns; `train()` then raises TrainingInterrupted.
A second signal raises KeyboardInterrupt at once (e.g. during a long evaluation), and the run
is still ended KILLED, resuming from the checkpoint saved before.
"""
from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType

log = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving its state; `signum` says which one.

    A KeyboardInterrupt, so callers that stop on Ctrl-C (a sweep, a study) stop on it too, and
    `except Exception` handlers that move on to the next job do not swallow it.
    """

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class GracefulStop:
    """Context manager turning SIGINT/SIGTERM into a stop request; restores the old handlers.

    Outside the main thread (signals cannot be caught there) it installs nothing and never
    requests a stop.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second signal ({signal.Signals(signum).name}): stopping at once")
        self.signum = signum
        log.warning("%s received: stopping after the current step and saving a resumable checkpoint "
                    "(send it again to stop at once)", signal.Signals(signum).name)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
