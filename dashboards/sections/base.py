"""What a report section is, and the registry that holds them in the report's order."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go

from dashboards.inputs import ReportInputs
from dashboards.options import ReportOptions
from dashboards.paper import Published, published_for
from dashboards.runs import RunCatalog
from pipelines.registry import Registry
from pipelines.tasks import TASKS, get_task


@dataclass(frozen=True)
class FigureItem:
    """One figure: `name` is unique within its section (it names the file), caption 1-2 sentences."""

    name: str
    figure: go.Figure
    caption: str


@dataclass
class Section:
    """What a builder returns: figures and HTML blocks (already escaped), or a one-line note."""

    figures: list[FigureItem] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)  # HTML after the figures (tables)
    note: str = ""  # shown instead of figures when there is nothing to draw (or above them)

    @classmethod
    def empty(cls, note: str) -> Section:
        return cls(note=note)

    @classmethod
    def no_predictions(cls, task: str) -> Section:
        """The note of a task section when the analysis scored no run on that task."""
        return cls(note=f"No {task} predictions in this analysis.")


# What one test example is, by the dataset a task reads, for "n = ..." in captions.
EXAMPLE_UNITS = {"reports": "reports", "series": "series descriptions"}


@dataclass
class ReportContext:
    """What every builder reads."""

    inputs: ReportInputs
    options: ReportOptions
    runs: RunCatalog

    def table(self, name: str) -> pd.DataFrame | None:
        """An analysis table, or None when the analysis did not produce it (or it is empty)."""
        frame = self.inputs.tables.get(name)
        return frame if frame is not None and not frame.empty else None

    def task_tables(self, task: str, *names: str) -> list[pd.DataFrame] | None:
        """The analysis tables `<task>_<name>` for each of `names`, or None when one is missing."""
        frames = [self.table(f"{task}_{name}") for name in names]
        return None if any(frame is None for frame in frames) else frames

    @property
    def alpha(self) -> float:
        return self.inputs.alpha

    def test_size(self, task: str) -> str:
        """"20 test reports": the task's number of test examples (a range if runs differ), "" if unknown."""
        summary = self.table(f"{task}_summary")
        if summary is None or "n" not in summary:
            return ""
        sizes = sorted({int(n) for n in summary["n"].dropna()})
        if not sizes:
            return ""
        count = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        dataset = get_task(task).dataset if task in TASKS else ""
        return f"{count} test {EXAMPLE_UNITS.get(dataset, 'examples')}"

    def n_text(self, *tasks: str) -> str:
        """"n = 20 test reports" for one task; "n = 20 test reports (labeling), ..." for several."""
        sizes = [(task, self.test_size(task)) for task in tasks]
        sizes = [(task, size) for task, size in sizes if size]
        if not sizes:
            return "n unknown"
        if len(tasks) == 1:
            return f"n = {sizes[0][1]}"
        return "n = " + ", ".join(f"{size} ({task})" for task, size in sizes)

    @property
    def correction_text(self) -> str:
        """Which significance is in use: "unadjusted (the paper's choice)" or "Holm-adjusted" etc."""
        correction = self.inputs.params.get("correction", "none")
        names = {"none": "unadjusted p-values (the paper's choice)", "holm": "Holm-adjusted p-values"}
        return names.get(correction, f"{correction}-adjusted p-values")

    def published(self, task: str, metric: str, run_ids: Iterable[str]) -> list[Published]:
        return published_for(task, metric, self.options.paper_lines, self.runs.params_of(run_ids))


@dataclass(frozen=True)
class SectionSpec:
    key: str  # anchor and file-name prefix
    title: str
    order: float  # position in the report
    build: Callable[[ReportContext], Section]


SECTIONS: Registry[SectionSpec] = Registry("report section")


def section(key: str, title: str, order: int) -> Callable[[Callable[[ReportContext], Section]], Callable]:
    """Register a builder under `key`, shown at position `order` of the report."""

    def register(build: Callable[[ReportContext], Section]) -> Callable[[ReportContext], Section]:
        SECTIONS.add(key, SectionSpec(key, title, order, build))
        return build

    return register


def ordered_sections() -> list[SectionSpec]:
    """Every registered section, in report order."""
    return sorted((SECTIONS.get(name) for name in SECTIONS.names()), key=lambda s: s.order)
