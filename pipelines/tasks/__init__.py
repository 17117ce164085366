"""The task registry: the paper's three radiology tasks, looked up by name.

Adding a task is one module defining a `TASK` (see base.Task, its metrics declared with
base.Metric) registered in TASKS: here for a built-in task (BUILTIN_TASKS), or by the code that
adds it (`TASKS.add(task.name, task)`, as tests/test_toy_task.py does). Training, evaluation,
analysis and the report iterate this registry; a task with no analysis or report section of its
own gets the generic ones (analysis/tasks/generic.py, dashboards/sections/generic.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.registry import Registry, UnknownNameError
from pipelines.tasks import harmonization, impression, labeling
from pipelines.tasks.base import Metric, Task

# Registration order is the order tasks are listed, trained and reported in.
BUILTIN_TASKS: tuple[Task, ...] = (labeling.TASK, harmonization.TASK, impression.TASK)

TASKS: Registry[Task] = Registry("task")
for _task in BUILTIN_TASKS:
    TASKS.add(_task.name, _task)

# The paper's tasks: what a fine-tune, an evaluation or a baseline runs when --tasks is not given.
PAPER_TASKS: tuple[str, ...] = tuple(t.name for t in BUILTIN_TASKS)


def get_task(name: str) -> Task:
    """The registered task called `name` (an unknown name lists the valid ones)."""
    return TASKS.get(name)


def task_names() -> list[str]:
    """Every registered task name, in registration order."""
    return TASKS.names()


def headline_metric_keys(tasks: Sequence[str] | None = None) -> tuple[str, ...]:
    """`<task>/<metric>` of every headline metric of `tasks` (default: every registered task)."""
    names = task_names() if tasks is None else tasks
    return tuple(f"{name}/{m.name}" for name in names for m in get_task(name).metrics if m.headline)


def metric_spec(key: str) -> Metric | None:
    """The declared metric behind a logged key `<task>/<metric>`, or None (not a declared metric)."""
    task, _, name = key.partition("/")
    return TASKS.get(task).metric(name) if task in TASKS else None


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


__all__ = ["BUILTIN_TASKS", "PAPER_TASKS", "TASKS", "Metric", "Task", "get_task", "headline_metric_keys", "metric_spec",
           "parse_task_list", "task_names", "task_tuple"]
