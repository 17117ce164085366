"""The task registry: the paper's three radiology tasks, looked up by name.

Adding a task is one module defining a `TASK` (see base.Task) plus one entry in
BUILTIN_TASKS below; training, evaluation and the shared tests pick it up from the registry.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.registry import Registry, UnknownNameError
from pipelines.tasks import harmonization, impression, labeling
from pipelines.tasks.base import Task

# Registration order is the order tasks are listed, trained and reported in.
BUILTIN_TASKS: tuple[Task, ...] = (labeling.TASK, harmonization.TASK, impression.TASK)

TASKS: Registry[Task] = Registry("task")
for _task in BUILTIN_TASKS:
    TASKS.add(_task.name, _task)


def get_task(name: str) -> Task:
    """The registered task called `name` (an unknown name lists the valid ones)."""
    return TASKS.get(name)


def task_names() -> list[str]:
    """Every registered task name, in registration order."""
    return TASKS.names()


def parse_task_list(text: str) -> list[str]:
    """Parse a comma-separated task list such as "labeling, impression", keeping the given order.

    Raises ValueError (UnknownNameError for an unknown name) on an empty list, an empty
    element, a repeated task or an unknown name; every message lists the valid names.
    """
    valid = ", ".join(task_names())
    names = [part.strip() for part in text.split(",")]
    if not any(names):
        raise ValueError(f"task list is empty; give one or more of: {valid}")
    if "" in names:
        raise ValueError(f"task list {text!r} has an empty element; give comma-separated names from: {valid}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"task list {text!r} repeats {repeated}; name each task once, from: {valid}")
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise UnknownNameError(f"unknown task(s) {unknown} in {text!r}; valid names: {valid}")
    return names


def task_tuple(tasks: str | Sequence[str]) -> tuple[str, ...]:
    """A config's `tasks` value, comma-separated text or a sequence, validated as by parse_task_list."""
    return tuple(parse_task_list(tasks if isinstance(tasks, str) else ",".join(tasks)))


__all__ = ["BUILTIN_TASKS", "TASKS", "Task", "get_task", "parse_task_list", "task_names", "task_tuple"]
