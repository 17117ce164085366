"""Section 5: each task's headline metric at every checkpoint epoch, one line per fine-tune, and the
fine-tunes' training loss (per optimizer step and per epoch)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.sections.base import FigureItem, ReportContext, Section, section
from dashboards.style import hover, layout

# metric -> panel title, format, axis title with units, axis range (fixed: flat means flat)
METRICS = {
    "labeling/f1_macro": ("Labeling: macro F1", ".3f", "macro F1 (0-1)", [0, 1.05]),
    "harmonization/accuracy": ("Harmonization: accuracy", ".3f", "accuracy (0-1)", [0, 1.05]),
    "impression/bleu": ("Impression: BLEU", ".1f", "corpus BLEU (0-100)", [0, 105]),
    "impression/rougeL": ("Impression: ROUGE-L", ".3f", "mean ROUGE-L (0-1)", [0, 1.05]),
}
SERIES = ["model", "tasks", "poison_rate", "seed"]  # what makes checkpoints one fine-tune's line


@section("trajectory", "Epoch trajectories", order=5)
def build(ctx: ReportContext) -> Section:
    metrics = metrics_section(ctx)
    loss = loss_figure(ctx.inputs.loss_history, ctx)
    if loss is not None:
        metrics.figures.append(loss)
    return metrics


def metrics_section(ctx: ReportContext) -> Section:
    long = ctx.table("trajectory_long")
    if long is None:
        return Section.empty("No checkpoint runs with epochs for this selection: no trajectory.")
    long = long[long["metric"].isin(METRICS) & long["epoch"].notna()].copy()
    if long.empty:
        return Section.empty("The checkpoint runs logged none of the headline metrics.")
    long[SERIES] = long[SERIES].astype(str)
    epochs_per_series = long.groupby(SERIES)["epoch"].nunique()
    if epochs_per_series.max() < 2:
        return Section.empty("Each fine-tune here has a single checkpoint epoch: no trajectory to draw.")
    return Section(figures=[trajectory_figure(ctx, long)])


def trajectory_figure(ctx: ReportContext, long: pd.DataFrame) -> FigureItem:
    metrics = [m for m in METRICS if (long["metric"] == m).any()]
    cols = 2 if len(metrics) > 1 else 1
    rows_n = (len(metrics) + cols - 1) // cols
    fig = make_subplots(
        rows=rows_n,
        cols=cols,
        subplot_titles=[METRICS[m][0] for m in metrics],
        vertical_spacing=0.16,
        horizontal_spacing=0.08,
    )
    epochs = sorted(long["epoch"].astype(int).unique())
    log_x = epochs[0] > 0 and epochs[-1] / epochs[0] >= 10  # the paper's 2, 5, 20, 100
    shown_in_legend: set[str] = set()
    for (model, tasks, poison, seed), group in long.groupby(SERIES, sort=True):
        last = group.sort_values("epoch").iloc[-1]
        run = ctx.runs.get(str(last["run_id"]))
        color = ctx.runs.colors.color(model)
        label = _series_label(ctx, run, model, tasks, float(poison), seed)
        for i, metric in enumerate(metrics):
            points = group[group["metric"] == metric].sort_values("epoch")
            if points.empty:
                continue
            fmt = METRICS[metric][1]
            fig.add_trace(
                go.Scatter(
                    x=points["epoch"],
                    y=points["value"],
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=label not in shown_in_legend,
                    line={"color": color, "dash": "dot" if float(poison) > 0 else "solid"},
                    marker={"size": 7},
                    customdata=[[label, r] for r in points["run_id"]],
                    hovertemplate=hover(
                        "%{customdata[0]}",
                        ["checkpoint run %{customdata[1]}", f"epoch %{{x}}: {metric} %{{y:{fmt}}}"],
                    ),
                ),
                row=i // cols + 1,
                col=i % cols + 1,
            )
            shown_in_legend.add(label)
    fig.update_xaxes(title_text="epoch", tickvals=epochs, type="log" if log_x else "linear")
    for i, metric in enumerate(metrics):
        fig.update_yaxes(title_text=METRICS[metric][2], range=METRICS[metric][3], row=i // cols + 1, col=i % cols + 1)
    layout(fig, "Headline metrics at each checkpoint epoch", height=330 * rows_n + 170, panels=True)
    caption = (
        "Each line is one fine-tune evaluated at its checkpoint epochs (color: model; dotted: poisoned "
        f"labeling data; {ctx.n_text('labeling', 'harmonization', 'impression')}); epochs "
        f"{', '.join(map(str, epochs))}" + (" on a log scale." if log_x else ".")
    )
    return FigureItem("metrics_by_epoch", fig, caption)


LOSS_PANELS = {"train/loss_step": ("per optimizer step", "optimizer step"), "train/loss": ("per epoch", "epoch")}


def loss_figure(history: pd.DataFrame, ctx: ReportContext) -> FigureItem | None:
    """Training loss of each fine-tune: every optimizer step (left), each epoch's mean (right)."""
    if history.empty:
        return None
    panels = [m for m in LOSS_PANELS if (history["metric"] == m).any()]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"Training loss {LOSS_PANELS[m][0]}" for m in panels],
                        horizontal_spacing=0.08)
    for (run_id, name, model), group in history.groupby(["finetune_run_id", "run_name", "model"], sort=True):
        label = f"{name} ({run_id[:8]})"
        for col, metric in enumerate(panels, start=1):
            points = group[group["metric"] == metric].sort_values("step")
            if points.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=points["step"], y=points["value"], mode="lines" if len(points) > 20 else "lines+markers",
                    name=label, legendgroup=label, showlegend=col == 1,
                    line={"color": ctx.runs.colors.color(model)},
                    hovertemplate=hover(label, [f"fine-tune run {run_id}",
                                                f"{LOSS_PANELS[metric][1]} %{{x}}: loss %{{y:.4f}}"]),
                ),
                row=1, col=col,
            )
    for col, metric in enumerate(panels, start=1):
        fig.update_xaxes(title_text=LOSS_PANELS[metric][1], row=1, col=col)
        fig.update_yaxes(title_text="cross-entropy loss (nats per target token)", row=1, col=col)
    layout(fig, "Training loss", height=420, panels=True)
    runs, of = history["finetune_run_id"].nunique(), int(history["of"].max())
    which = f"the {runs} newest of the {of} fine-tunes" if of > runs else f"the {runs} fine-tune(s)"
    caption = (f"Training loss of {which} whose checkpoints are analyzed: each optimizer step "
               "(train/loss_step) and the mean of each epoch (train/loss), as logged to MLflow.")
    return FigureItem("training_loss", fig, caption)


def _series_label(ctx: ReportContext, run, model: str, tasks: str, poison: float, seed: str) -> str:
    if run is not None:
        return run.label.replace(f" · e{run.epoch}", "")
    parts = [model, "multi-task" if tasks.count(",") >= 2 else tasks]
    if poison:
        parts.append(f"poison {poison:.0%}")
    return " · ".join(parts + [f"seed {seed}"])
