"""One fine-tune across several processes (torchrun / accelerate launch): who does what.

The launchers start N copies of the command with RANK, LOCAL_RANK and WORLD_SIZE set. Every
process (rank) loads the data and the model and trains its share of each batch through the
Hugging Face Trainer's DDP. Rank 0 alone opens, writes and ends the MLflow run and holds the run
folder's lock; the checkpoint evaluation is sharded (each rank answers every N-th test example,
rank 0 gathers the answers and scores them). docs/multi_process.md has the commands and figures.

The effective batch (examples per optimizer step) is the config's batch_size x grad_accum
whatever N is: see `per_device_batch`.
"""
from __future__ import annotations

import datetime
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from pipelines.config import ConfigError
from pipelines.infer.evaluation import TaskEvaluation, answer_task, evaluate_all, score_outputs

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=60)  # a rank waits this long for the others (e.g. a long evaluation)


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank `rank` of `size` processes (1: not launched by torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that talks to MLflow and writes the run folder."""
        return self.rank == 0


def world() -> World:
    """The World the launcher (torchrun, accelerate launch) described in the environment."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def launched() -> bool:
    """Whether this process is one of several started by a launcher."""
    return world().size > 1


def command_prefix() -> str:
    """How to start this job again, e.g. in a resume command: `python -m`, or torchrun's equivalent."""
    size = world().size
    return "python -m" if size == 1 else f"torchrun --standalone --nproc_per_node {size} -m"


def start(device: str) -> World:
    """Join the job's process group (gloo on CPU, nccl on CUDA) once; a lone process joins nothing.

    On CUDA each rank uses the GPU of its local rank, so `--device cuda` (or auto) means that one.
    """
    w = world()
    if w.size > 1 and not dist.is_initialized():
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(w.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return w


def per_device_batch(batch_size: int, grad_accum: int, processes: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation) keeping effective = batch_size x grad_accum.

    effective = per-device batch x accumulation x processes. The per-device batch is the largest
    divisor of effective / processes that is <= batch_size, e.g. the paper's 4 x 1 on 2 processes
    is 2 x 1 each, on 4 processes 1 x 1; 4 x 3 on 2 processes is 3 x 2 each (6 = 3 x 2).
    """
    effective = batch_size * grad_accum
    if effective % processes:
        raise ConfigError(
            f"the effective batch --batch-size {batch_size} x --grad-accum {grad_accum} = {effective} is not a "
            f"multiple of the {processes} processes; choose values whose product is a multiple of {processes}")
    share = effective // processes
    per_device = max(d for d in range(1, min(batch_size, share) + 1) if share % d == 0)
    return per_device, share // per_device


def broadcast(obj: T | None) -> T:
    """Rank 0's `obj` on every rank (the others pass anything, e.g. None)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agreed_max(value: int) -> int:
    """The largest `value` over the ranks: e.g. a signal number that only one rank received."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def gather(obj: Any) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on rank 0; None on the other ranks."""
    if not dist.is_initialized():
        return [obj]
    w = world()
    out: list[Any] | None = [None] * w.size if w.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of `items`: every size-th one from its rank (all of them in one process)."""
    w = world()
    return list(items[w.rank :: w.size])


def unshard(parts: list[list[T]]) -> list[T]:
    """The inverse of `shard`: the ranks' shares (in rank order) back in the original order."""
    total = sum(len(p) for p in parts)
    out: list[Any] = [None] * total
    for rank, part in enumerate(parts):
        out[rank :: len(parts)] = part
    return out


def evaluate_sharded(model, tokenizer, test: dict[str, list], **kwargs) -> dict[str, TaskEvaluation] | None:
    """evaluate_all across the ranks: each answers its shard of every task, rank 0 scores the whole.

    Returns the TaskEvaluations on rank 0 (the same as evaluate_all in one process), None elsewhere.
    A task's time is the slowest rank's.
    """
    if not dist.is_initialized():
        return evaluate_all(model, tokenizer, test, **kwargs)
    mine = {}
    for name, examples in test.items():
        start = time.perf_counter()
        share = shard(examples)
        answers = answer_task(model, tokenizer, name, share, **kwargs) if share else []
        mine[name] = (answers, time.perf_counter() - start)
    parts = gather(mine)
    if parts is None:
        return None
    return {name: score_outputs(name, examples, unshard([p[name][0] for p in parts]), max(p[name][1] for p in parts))
            for name, examples in test.items()}
