"""Section 6: each task's metric against the labeling poison rate, with tests on the untouched tasks."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.sections.base import FigureItem, ReportContext, Section, section
from dashboards.style import hover, layout
from pipelines.tasks import PAPER_TASKS

# (task, metric) -> panel title, format, axis title with units, axis range (fixed: flat means flat)
PANELS = {
    ("labeling", "f1_macro"): ("Labeling (poisoned): macro F1", ".3f", "macro F1 (0-1)", [0, 1.05]),
    ("harmonization", "accuracy"): (
        "Harmonization (untouched): accuracy",
        ".3f",
        "accuracy (0-1)",
        [0, 1.05],
    ),
    ("impression", "bleu"): ("Impression (untouched): BLEU", ".1f", "corpus BLEU (0-100)", [0, 105]),
    ("impression", "rougeL"): ("Impression (untouched): ROUGE-L", ".3f", "mean ROUGE-L (0-1)", [0, 1.05]),
}
UNTOUCHED = ("harmonization", "impression")


def significant_changes(ctx: ReportContext) -> set[tuple[str, str, str]]:
    """(poisoned run id, task, metric) whose difference from the unpoisoned run is significant."""
    out = set()
    mcnemar = ctx.table("poisoning_harmonization_mcnemar")
    if mcnemar is not None:
        for row in mcnemar.to_dict("records"):
            if _true(row.get("significant")):
                out.add((str(row["run_id"]), "harmonization", "accuracy"))
    paired = ctx.table("poisoning_impression_paired_tests")
    if paired is not None:
        for row in paired[paired["test"] == "paired_t"].to_dict("records"):
            if _true(row.get("significant")):
                out.add((str(row["run_id"]), "impression", str(row["metric"])))
    return out


@section("poisoning", "Poisoning ablation", order=6)
def build(ctx: ReportContext) -> Section:
    metrics = ctx.table("poisoning_metrics")
    if metrics is None:
        return Section.empty(
            "No poisoning ablation: no fine-tunes here differ only in poison rate (with an unpoisoned one)."
        )
    return Section(figures=[poisoning_figure(ctx, metrics)])


def poisoning_figure(ctx: ReportContext, metrics: pd.DataFrame) -> FigureItem:
    panels = [p for p in PANELS if ((metrics["task"] == p[0]) & (metrics["metric"] == p[1])).any()]
    cols = 2 if len(panels) > 1 else 1
    rows_n = (len(panels) + cols - 1) // cols
    fig = make_subplots(
        rows=rows_n,
        cols=cols,
        subplot_titles=[PANELS[p][0] for p in panels],
        vertical_spacing=0.16,
        horizontal_spacing=0.08,
    )
    significant = significant_changes(ctx)
    rates = sorted(metrics["poison_rate"].astype(float).unique())
    legend_done: set[str] = set()
    for group_id, group in metrics.groupby("unpoisoned_run_id", sort=True):
        clean = ctx.runs.get(str(group_id))
        label = (clean.label if clean else str(group_id)[:8]) + " (poison rate varied)"
        color = ctx.runs.colors.color(str(group["model"].iloc[0]))
        for i, (task, metric) in enumerate(panels):
            points = group[(group["task"] == task) & (group["metric"] == metric)].sort_values("poison_rate")
            if points.empty:
                continue
            fmt = PANELS[(task, metric)][1]
            marks = [(str(r), task, metric) in significant for r in points["run_id"]]
            fig.add_trace(
                go.Scatter(
                    x=points["poison_rate"] * 100,
                    y=points["value"],
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=label not in legend_done,
                    line={"color": color},
                    marker={
                        "size": [13 if m else 8 for m in marks],
                        "symbol": ["x" if m else "circle" for m in marks],
                    },
                    customdata=[
                        [ctx.runs.label(str(r)), str(r), c, "significant" if m else "not significant"]
                        for r, c, m in zip(points["run_id"], points["change"], marks, strict=True)
                    ],
                    hovertemplate=hover(
                        "%{customdata[0]}",
                        [
                            "run %{customdata[1]}",
                            f"poison rate %{{x:.0f}}%: {metric} %{{y:{fmt}}}",
                            f"change from unpoisoned %{{customdata[2]:+{fmt}}}"
                            + (" (%{customdata[3]})" if task in UNTOUCHED else ""),
                        ],
                    ),
                ),
                row=i // cols + 1,
                col=i % cols + 1,
            )
            legend_done.add(label)
    fig.update_xaxes(title_text="labeling labels poisoned (%)", tickvals=[r * 100 for r in rates])
    for i, panel in enumerate(panels):
        fig.update_yaxes(title_text=PANELS[panel][2], range=PANELS[panel][3], row=i // cols + 1, col=i % cols + 1)
    layout(fig, "Task metrics against the labeling poison rate", height=330 * rows_n + 170, panels=True)
    return FigureItem("metrics_by_poison_rate", fig, verdict(metrics, significant, ctx.n_text(*UNTOUCHED_N)))


UNTOUCHED_N = PAPER_TASKS  # tasks whose test-set sizes the caption states


def verdict(metrics: pd.DataFrame, significant: set, sizes: str = "") -> str:
    """Caption: what the lines show (on test sets of `sizes`), and whether the untouched tasks stayed flat."""
    text = (
        "Only the labeling task's training labels were poisoned (forced to negative); harmonization and "
        "impressions were untouched, so flat lines there mean no task-to-task influence. "
    )
    poisoned = metrics[metrics["poison_rate"] > 0]
    labeling = poisoned[(poisoned["task"] == "labeling") & (poisoned["metric"] == "f1_macro")]["change"]
    untouched = [s for s in significant if s[1] != "labeling"]
    parts = []
    if not labeling.empty and math.isfinite(labeling.min()):
        drop = -labeling.min()
        parts.append(f"labeling macro F1 fell by up to {drop:.3f}" if drop > 0 else "labeling macro F1 did not fall")
    if untouched:
        parts.append(f"{len(untouched)} change(s) in the untouched tasks are significant (marked ×)")
    else:
        parts.append("no change in the untouched tasks is significant")
    return text + "Here " + "; ".join(parts) + (f" ({sizes})." if sizes else ".")


def _true(value) -> bool:
    return value is True or str(value).strip().lower() == "true"
