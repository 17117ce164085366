"""Section 1: every run with its headline metrics, best marked, published values as reference lines.

Intervals: the harmonization accuracy's is Wilson's; the others are percentile bootstrap intervals
over the test examples (analysis.stats), shown where the analysis computed them.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.runs import model_name, tasks_text
from dashboards.sections.base import FigureItem, ReportContext, Section, section
from dashboards.style import (
    add_published_legend,
    add_published_lines,
    bar_text_positions,
    escape,
    hover,
    layout,
    panel_title,
    runs_height,
)
from pipelines.tasks import get_task, headline_metric_keys, task_names

Column = tuple[str, str, str, bool, str]  # (task, column, table header, higher is better, number format)


def leaderboard_columns() -> tuple[Column, ...]:
    """The table's columns: every registered task's leaderboard metrics (pipelines.tasks), in order."""
    return tuple((task, m.name, f"{get_task(task).title} {m.label}", m.higher_is_better, m.format)
                 for task in task_names() for m in get_task(task).reported_metrics if m.in_leaderboard)


def charted() -> dict[str, tuple[str, str, list[float]]]:
    """Charted `task/metric` -> (panel title, axis title with its scale, axis range): the headline metrics."""
    out = {}
    for key in headline_metric_keys():
        task, name = key.split("/", 1)
        metric = get_task(task).metric(name)
        low, high = metric.scale
        out[key] = (f"{get_task(task).title}: {metric.label}", f"{metric.label} ({low:g}-{high:g})",
                    [low, high * 1.05])
    return out


def headline_frame(ctx: ReportContext) -> pd.DataFrame:
    """One row per run (index run_id), one column per `task/column` of COLUMNS (NaN: not scored)."""
    frame = pd.DataFrame()
    columns = leaderboard_columns()
    for task in task_names():
        summary = ctx.table(f"{task}_summary")
        if summary is None:
            continue
        wanted = [c for t, c, *_ in columns if t == task and c in summary]
        extra = [c for c in ("ci_low", "ci_high") if task == "harmonization" and c in summary]
        extra += [f"{c}_{end}" for c in wanted for end in ("boot_low", "boot_high") if f"{c}_{end}" in summary]
        part = summary.drop_duplicates("run_id").set_index("run_id")[wanted + extra]
        part.columns = [f"{task}/{c}" for c in part.columns]
        frame = part if frame.empty else frame.join(part, how="outer")
    return frame


def best_runs(frame: pd.DataFrame) -> dict[str, set[str]]:
    """column -> run ids holding its best value (ties all marked; none when every run ties)."""
    best = {}
    for task, column, _, higher, _ in leaderboard_columns():
        key = f"{task}/{column}"
        if key not in frame or frame[key].dropna().nunique() < 2:
            continue
        target = frame[key].max() if higher else frame[key].min()
        best[key] = set(frame.index[frame[key] == target])
    return best


@section("leaderboard", "Leaderboard", order=1)
def build(ctx: ReportContext) -> Section:
    frame = headline_frame(ctx)
    if frame.empty:
        return Section.empty("No task summary in this analysis: no run was scored on any task.")
    runs = ctx.runs.ordered(frame.index)
    best = best_runs(frame)
    panels = charted()
    shown = [key for key in panels if key in frame and frame[key].notna().any()]
    fig = make_subplots(
        rows=1,
        cols=len(shown),
        shared_yaxes=True,
        subplot_titles=[panel_title(panels[k][0], len(shown)) for k in shown],
        horizontal_spacing=0.03,
    )
    lines, drawn = [], []
    for col, key in enumerate(shown, start=1):
        task, column = key.split("/")
        fmt = get_task(task).metric(column).format
        values = [frame.at[r.run_id, key] for r in runs]
        marks = ["★ " if r.run_id in best.get(key, ()) else "" for r in runs]
        fig.add_trace(
            go.Bar(
                x=values,
                y=[r.label for r in runs],
                orientation="h",
                marker={
                    "color": [r.color for r in runs],
                    "line": {"color": ["#222" if m else "rgba(0,0,0,0)" for m in marks], "width": 2},
                },
                text=[m + (format(v, fmt) if _finite(v) else "not scored") for m, v in zip(marks, values, strict=True)],
                textposition=bar_text_positions(values, panels[key][2][1]),
                cliponaxis=False,
                customdata=[[r.label, r.run_id] for r in runs],
                hovertemplate=hover("%{customdata[0]}", ["run %{customdata[1]}", f"{key}: %{{x:{fmt}}}"]),
                showlegend=False,
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text=panel_title(panels[key][1], len(shown)), range=panels[key][2], row=1, col=col)
        published = ctx.published(task, column, frame.index)
        add_published_lines(fig, published, axis="x", row=1, col=col)
        lines += [f"{p.system} {p.value:.3f} ({task})" for p in published]
        drawn += published
    fig.update_yaxes(autorange="reversed", title_text="run", row=1, col=1)
    add_published_legend(fig, drawn)
    layout(
        fig,
        "Headline metric of each task, by run",
        height=runs_height(len(runs), extra=190 + (40 if drawn else 0)),
        legend=bool(drawn),
        panels=True,
    )
    fig.update_layout(margin={"l": 220, "b": 80})  # room for two-line axis titles
    caption = (
        f"Each bar is one run (color: model; {ctx.n_text(*task_names())}); ★ and a dark outline mark the best run per "
        "metric. "
    ) + (
        f"Grey lines are the paper's published values ({'; '.join(lines)})."
        if lines
        else "The paper's published values are not drawn: no run here used the paper's data."
    )
    return Section(figures=[FigureItem("headline_metrics", fig, caption)], blocks=[leaderboard_table(ctx, frame, best)])


def leaderboard_table(ctx: ReportContext, frame: pd.DataFrame, best: dict[str, set[str]]) -> str:
    """A sortable HTML table (click a header); best cells carry ★."""
    present = [(t, c, title, fmt) for t, c, title, _, fmt in leaderboard_columns() if f"{t}/{c}" in frame]
    head = ["Run", "Model", "Tasks", "Epoch", "Poison"] + [
        title + (" [CI]" if _has_interval(frame, f"{t}/{c}") else "") for t, c, title, _ in present]
    kinds = ["text", "text", "text", "num", "num"] + ["num"] * len(present)
    header = "".join(
        f'<th data-kind="{k}" title="click to sort">{escape(h)}</th>' for h, k in zip(head, kinds, strict=True)
    )
    rows = []
    for run in ctx.runs.ordered(frame.index):
        badge = ' <span class="badge">reference</span>' if run.is_reference else ""
        cells = [
            f'<td data-sort="{escape(run.label)}"><span class="swatch" style="background:{run.color}"></span>'
            f'{escape(run.label)}{badge}<div class="runid">{escape(run.run_id)}</div></td>',
            f'<td title="{escape(run.model)}">{escape(model_name(run.model))}</td>',
            f"<td>{escape(tasks_text(run.tasks))}</td>",
            _num_cell(run.epoch, "d"),
            _num_cell(run.poison_rate, ".0%"),
        ]
        for task, column, _, fmt in present:
            key = f"{task}/{column}"
            value = frame.at[run.run_id, key]
            shown = (format(value, fmt) if _finite(value) else "–") + _interval(frame, run.run_id, key, fmt)
            is_best = run.run_id in best.get(key, ())
            cells.append(
                f'<td data-sort="{value if _finite(value) else ""}" class="{"best" if is_best else ""}">'
                f"{'★ ' if is_best else ''}{shown}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<div class="table-wrap"><table class="sortable leaderboard"><thead><tr>'
        + header
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
        f'<p class="caption">Every run of the analysis with its headline metrics '
        f"({escape(ctx.n_text(*task_names()))}); "
        "click a column header to sort. ★ marks the best value per column (lowest for parse failures); "
        f"intervals are {1 - ctx.alpha:.0%} {_bootstrap_text(ctx)}, except the Wilson interval of harmonization "
        "accuracy. The paper's macro F1 averages all 14 labels, a label absent from references and "
        "predictions scoring 1.0; the second averages only the labels with a positive reference.</p>"
    )


def _bootstrap_text(ctx: ReportContext) -> str:
    """"percentile bootstrap intervals (2000 resamples of the test examples, seed 7)"."""
    params = ctx.inputs.params
    resamples, seed = params.get("bootstrap_resamples"), params.get("bootstrap_seed")
    detail = f" ({resamples} resamples of the test examples, seed {seed})" if resamples and seed else ""
    return f"percentile bootstrap intervals{detail}"


def _interval_columns(key: str) -> tuple[str, str]:
    """The columns holding column `key`'s interval: the Wilson interval of harmonization accuracy,
    else the bootstrap interval."""
    if key == "harmonization/accuracy":
        return "harmonization/ci_low", "harmonization/ci_high"
    return f"{key}_boot_low", f"{key}_boot_high"


def _interval(frame: pd.DataFrame, run_id: str, key: str, fmt: str) -> str:
    """' [low, high]' of column `key` for one run, '' without one."""
    low, high = _interval_columns(key)
    if low not in frame or not _finite(frame.at[run_id, low]):
        return ""
    return f' <span class="ci">[{frame.at[run_id, low]:{fmt}}, {frame.at[run_id, high]:{fmt}}]</span>'


def _has_interval(frame: pd.DataFrame, key: str) -> bool:
    """Whether the frame holds an interval for column `key`."""
    return _interval_columns(key)[0] in frame


def _num_cell(value, fmt: str) -> str:
    if value is None or not _finite(value):
        return '<td data-sort="">–</td>'
    return f'<td data-sort="{value}">{format(value, fmt)}</td>'


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
