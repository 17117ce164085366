"""A report section for each registered task that has no section of its own (and predictions in
the analysis): each declared metric that is a mean of per-example scores, by run, with its
bootstrap interval, and the paired tests against the reference run (analysis.tasks.generic).
They are placed after the paper's task sections and keyed by the task's name."""

from __future__ import annotations

from functools import partial

import pandas as pd
import plotly.graph_objects as go

from dashboards.sections.base import SECTIONS, FigureItem, ReportContext, Section, SectionSpec
from dashboards.style import escape, fmt_p, hover, layout, runs_height
from pipelines.tasks import get_task, task_names
from pipelines.tasks.base import Metric, Task


def tasks_without_section() -> list[Task]:
    """Registered tasks that no section module is named after (the paper's three have their own)."""
    return [get_task(name) for name in task_names() if name not in SECTIONS]


ORDER = 4.5  # after the impression section, before the trajectories


def task_sections(ctx: ReportContext) -> list[SectionSpec]:
    """One section per task without its own whose summary the analysis produced."""
    return [SectionSpec(task.name, f"{task.title}: declared metrics", ORDER, partial(build, task=task))
            for task in tasks_without_section() if ctx.table(f"{task.name}_summary") is not None]


def build(ctx: ReportContext, task: Task) -> Section:
    summary = ctx.table(f"{task.name}_summary")
    figures = [metric_figure(ctx, task, m, summary) for m in task.metrics if m.example_score and m.name in summary]
    tests = ctx.table(f"{task.name}_tests")
    blocks = [tests_table(ctx, task, tests)] if tests is not None else []
    if not figures:
        return Section.empty(f"No {task.name} metric is a mean of per-example scores; see its tables.")
    return Section(figures=figures, blocks=blocks)


def metric_figure(ctx: ReportContext, task: Task, metric: Metric, summary: pd.DataFrame) -> FigureItem:
    """One marker per run with its percentile bootstrap interval."""
    column, label = metric.name, metric.label
    rows = summary.drop_duplicates("run_id").set_index("run_id")
    runs = ctx.runs.ordered(rows.index)
    fig = go.Figure()
    for run in runs:
        row = rows.loc[run.run_id]
        low, high = row.get(f"{column}_boot_low", float("nan")), row.get(f"{column}_boot_high", float("nan"))
        fig.add_trace(go.Scatter(
            x=[row[column]], y=[run.label], mode="markers",
            marker={"color": run.color, "size": 12, "symbol": "diamond" if run.is_reference else "circle"},
            error_x={"type": "data", "symmetric": False, "array": [high - row[column]],
                     "arrayminus": [row[column] - low], "color": run.color, "thickness": 2},
            customdata=[[run.label, run.run_id]],
            hovertemplate=hover("%{customdata[0]}", ["run %{customdata[1]}", f"{label} %{{x:{metric.format}}}"]),
            showlegend=False,
        ))
    low, high = metric.scale
    layout(fig, f"{task.title}: {label} by run", height=runs_height(len(runs), extra=200), legend=False)
    fig.update_xaxes(title_text=f"{label} ({low:g}-{high:g}; bars: {1 - ctx.alpha:.0%} bootstrap CI)",
                     range=[low - 0.02 * (high - low), high * 1.05])
    caption = (f"{task.title} {label}, the mean of each example's {metric.example_score} score "
               f"({ctx.n_text(task.name)}); bars are percentile bootstrap intervals over the examples.")
    return FigureItem(column, fig, caption)


def tests_table(ctx: ReportContext, task: Task, tests: pd.DataFrame) -> str:
    """Paired bootstrap tests of each metric against the reference run."""
    rows = []
    for _, row in tests.iterrows():
        name = ctx.runs.label(row["run_id"])
        rows.append(
            f"<tr><td>{escape(name)}</td><td>{escape(row['metric'])}</td><td>{row['value_ref']:.3f}</td>"
            f"<td>{row['value_other']:.3f}</td><td>{row['diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
            f"</td><td>{fmt_p(row['p_value'])}</td><td>{int(row['n'])}</td></tr>")
    return ('<div class="table-wrap"><table><thead><tr><th>Run</th><th>Metric</th><th>Reference</th><th>Run</th>'
            "<th>Difference [CI]</th><th>p</th><th>n</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            f'</div><p class="caption">{escape(task.title)}: paired bootstrap tests against the reference run '
            f"({escape(ctx.n_text(task.name))}), {1 - ctx.alpha:.0%} intervals of the difference "
            "(run - reference).</p>")
