"""What the machine can do and what a run used: matrix-multiply peak, memory, timers."""
from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that a timer reads the work's real end."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Stopwatch:
    seconds: float = 0.0


@contextmanager
def timed(device: str) -> Iterator[Stopwatch]:
    """Time a block on `device` (GPU work is waited for at both ends)."""
    watch = Stopwatch()
    synchronize(device)
    start = time.perf_counter()
    yield watch
    synchronize(device)
    watch.seconds = time.perf_counter() - start


def matmul_peak_flops(device: str, dtype: torch.dtype, size: int = 0, repeats: int = 10) -> float:
    """The best FLOP/s of a square matrix product on `device` (2·n³ FLOPs per product).

    n defaults to 2048 on CPU and 8192 on a GPU; the best of `repeats` timed products after a
    warm-up, so the figure is what this machine's matmul can reach, the denominator of MFU.
    """
    n = size or (8192 if device.startswith("cuda") else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        with timed(device) as t:
            torch.mm(a, b)
        best = min(best, t.seconds)
    return 2 * n**3 / best


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def peak_gpu_mb(device: str) -> float:
    """Peak GPU memory allocated by PyTorch so far, in MiB (0 on CPU)."""
    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0


def lora_training_flops_per_token(total_params: int) -> float:
    """Model FLOPs per trained token with frozen base weights: 2N forward + 2N for the input
    gradients of the backward pass (no weight gradients except LoRA's, which are negligible).

    Attention's own FLOPs (about 4·layers·seq·width per token) are left out; at the prompt
    lengths here they are a few percent. A full fine-tune would be the usual 6N.
    """
    return 4.0 * total_params
