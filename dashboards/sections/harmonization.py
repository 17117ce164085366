"""Section 3: harmonization accuracy with Wilson intervals, and one run's confusion matrix."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from dashboards.sections.base import FigureItem, ReportContext, Section, section
from dashboards.style import add_published_legend, add_published_lines, escape, hover, layout, runs_height

INVALID = "(invalid)"


@section("harmonization", "Harmonization: accuracy and confusion", order=3)
def build(ctx: ReportContext) -> Section:
    tables = ctx.task_tables("harmonization", "summary")
    if tables is None:
        return Section.no_predictions("harmonization")
    (summary,) = tables
    figures = [accuracy_figure(ctx, summary)]
    confusion = ctx.table("harmonization_confusion")
    if confusion is not None:
        figures.append(confusion_figure(ctx, confusion))
    return Section(figures=figures)


def accuracy_figure(ctx: ReportContext, summary: pd.DataFrame) -> FigureItem:
    runs = ctx.runs.ordered(summary["run_id"])
    rows = summary.drop_duplicates("run_id").set_index("run_id")
    fig = go.Figure()
    for run in runs:
        row = rows.loc[run.run_id]
        fig.add_trace(
            go.Scatter(
                x=[row["accuracy"]],
                y=[run.label],
                mode="markers",
                marker={
                    "color": run.color,
                    "size": 12,
                    "symbol": "diamond" if run.is_reference else "circle",
                },
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [row["ci_high"] - row["accuracy"]],
                    "arrayminus": [row["accuracy"] - row["ci_low"]],
                    "color": run.color,
                    "thickness": 2,
                },
                customdata=[
                    [
                        run.label,
                        run.run_id,
                        row["ci_low"],
                        row["ci_high"],
                        int(row["correct"]),
                        int(row["n"]),
                        row.get("f1_macro", float("nan")),
                    ]
                ],
                hovertemplate=hover(
                    "%{customdata[0]}",
                    [
                        "run %{customdata[1]}",
                        "accuracy %{x:.3f} (%{customdata[4]} of %{customdata[5]})",
                        f"{1 - ctx.alpha:.0%} Wilson CI %{{customdata[2]:.3f}} to %{{customdata[3]:.3f}}",
                        "macro F1 over classes %{customdata[6]:.3f}",
                    ],
                ),
                showlegend=False,
            )
        )
    published = ctx.published("harmonization", "accuracy", rows.index)
    add_published_lines(fig, published, axis="x")
    add_published_legend(fig, published)
    layout(fig, "Harmonization accuracy by run", height=runs_height(len(runs), extra=200), legend=bool(published))
    fig.update_xaxes(
        title_text=f"accuracy (share of descriptions classed right; bars: {1 - ctx.alpha:.0%} CI)",
        range=[-0.02, 1.05],
    )
    fig.update_yaxes(title_text="run", autorange="reversed")
    fig.update_layout(margin={"l": 220})
    values = "; ".join(f"{p.system} {p.value:.3f}" for p in published)
    caption = (
        f"Exact-match accuracy of the sequence class with its {1 - ctx.alpha:.0%} Wilson interval "
        f"({ctx.n_text('harmonization')}); the reference run is a diamond."
        + (
            f" Grey lines: the paper's published accuracies ({values}), "
            "on its institution's own series descriptions "
            "(a different set from this study's)."
            if published
            else ""
        )
    )
    return FigureItem("accuracy", fig, caption)


def confusion_figure(ctx: ReportContext, confusion: pd.DataFrame) -> FigureItem:
    """One heatmap per run (row-normalized color, counts as text), a dropdown to pick the run."""
    runs = ctx.runs.ordered(confusion["run_id"])
    wanted = ctx.options.confusion_run or ctx.inputs.reference_run_id
    first = next((i for i, r in enumerate(runs) if r.run_id == wanted), 0)
    classes = list(dict.fromkeys(confusion["reference"]))
    predicted = classes + [c for c in dict.fromkeys(confusion["predicted"]) if c not in classes]
    fig = go.Figure()
    for i, run in enumerate(runs):
        table = (
            confusion[confusion["run_id"] == run.run_id]
            .pivot_table(index="reference", columns="predicted", values="count", aggfunc="sum")
            .reindex(index=classes, columns=predicted)
            .fillna(0)
        )
        totals = table.sum(axis=1).replace(0, float("nan"))
        share = table.div(totals, axis=0)
        fig.add_trace(
            go.Heatmap(
                z=share.values,
                x=predicted,
                y=classes,
                text=table.values.astype(int),
                texttemplate="%{text}",
                colorscale="Blues",
                zmin=0,
                zmax=1,
                visible=i == first,
                colorbar={"title": {"text": "share of row"}, "tickformat": ".0%"},
                customdata=[[[run.label, run.run_id]] * len(predicted)] * len(classes),
                hovertemplate=hover(
                    "%{customdata[0]}",
                    [
                        "run %{customdata[1]}",
                        "reference %{y}, predicted %{x}",
                        "%{text} descriptions (%{z:.0%} of the row)",
                    ],
                ),
            )
        )
    buttons = [
        {
            "label": run.label,
            "method": "update",
            "args": [
                {"visible": [j == i for j in range(len(runs))]},
                {"title.text": f"Confusion matrix of {escape(run.label)}"},
            ],
        }
        for i, run in enumerate(runs)
    ]
    layout(fig, f"Confusion matrix of {escape(runs[first].label)}", height=520, legend=False)
    fig.update_layout(
        updatemenus=[
            {
                "buttons": buttons,
                "direction": "down",
                "x": 1,
                "xanchor": "right",
                "y": 1.13,
                "yanchor": "top",
                "showactive": True,
                "active": first,
            }
        ],
        margin={"t": 100},
    )
    fig.update_xaxes(title_text=f"predicted class; {INVALID} = no valid class written", side="bottom")
    fig.update_yaxes(title_text="reference class", autorange="reversed")
    caption = (
        f"Rows are the true sequence classes, columns what the model wrote ({ctx.n_text('harmonization')}); "
        "numbers are counts and color is the share of the row. Pick another run in the menu (top right); "
        + (
            "the run chosen for this report shows first."
            if ctx.options.confusion_run
            else "the reference run shows first."
        )
    )
    return FigureItem("confusion", fig, caption)
