"""Section 2: per-label F1 by run, McNemar p-values per label against the reference run, and the
paired bootstrap test of each macro-F1 difference beside the per-label counts of significant tests."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboards.sections.base import FigureItem, ReportContext, Section, section
from dashboards.style import escape, fmt_p, hover, layout, runs_height

PATTERNS = ("", "/", ".", "x", "-", "|", "+", "\\")  # tell apart runs of one model (one color)
P_FLOOR = 1e-4  # heatmap color saturates here


def pattern_by_run(runs) -> dict[str, str]:
    """Within each model, the first run plain, the next ones hatched."""
    seen: dict[str, int] = {}
    out = {}
    for run in runs:
        out[run.run_id] = PATTERNS[seen.get(run.model, 0) % len(PATTERNS)]
        seen[run.model] = seen.get(run.model, 0) + 1
    return out


def shown_runs(ctx: ReportContext, summary: pd.DataFrame) -> tuple[list, str]:
    """The runs to draw as bars: all, or the best `max_bar_runs` by macro F1 plus the reference."""
    limit = ctx.options.max_bar_runs
    ranked = summary.sort_values("f1_macro", ascending=False)["run_id"].tolist()
    if len(ranked) <= limit:
        return ctx.runs.ordered(ranked), ""
    reference = ctx.inputs.reference_run_id
    keep = ranked[:limit] + ([reference] if reference in ranked[limit:] else [])
    return ctx.runs.ordered(keep), f" Only the {limit} runs with the highest macro F1 (and the reference) are drawn."


@section("labeling", "Labeling: per-label F1 and McNemar tests", order=2)
def build(ctx: ReportContext) -> Section:
    tables = ctx.task_tables("labeling", "per_label", "summary")
    if tables is None:
        return Section.no_predictions("labeling")
    per_label, summary = tables
    figures = [per_label_figure(ctx, per_label, summary)]
    mcnemar = ctx.table("labeling_mcnemar")
    note, blocks = "", []
    if mcnemar is not None:
        figures.append(mcnemar_figure(ctx, mcnemar))
        blocks.append(tests_table(ctx, mcnemar, ctx.table("labeling_f1_macro_tests")))
    else:
        note = "No McNemar tests: no other run has labeling predictions to pair with the reference run's."
    return Section(figures=figures, blocks=blocks, note=note)


def per_label_figure(ctx: ReportContext, per_label: pd.DataFrame, summary: pd.DataFrame) -> FigureItem:
    runs, limited = shown_runs(ctx, summary)
    labels = list(dict.fromkeys(per_label["label"]))
    patterns = pattern_by_run(runs)
    fig = go.Figure()
    for run in runs:
        rows = per_label[per_label["run_id"] == run.run_id].set_index("label").reindex(labels)
        fig.add_trace(
            go.Bar(
                name=run.label,
                x=labels,
                y=rows["f1"],
                marker={"color": run.color, "pattern": {"shape": patterns[run.run_id]}},
                customdata=[
                    [run.label, run.run_id, _int(s), p, r]
                    for s, p, r in zip(rows["support"], rows["precision"], rows["recall"], strict=True)
                ],
                hovertemplate=hover(
                    "%{customdata[0]}",
                    [
                        "run %{customdata[1]}",
                        "%{x}: F1 %{y:.3f}",
                        "precision %{customdata[3]:.3f}, recall %{customdata[4]:.3f}",
                        "reference positives: %{customdata[2]}",
                    ],
                ),
            )
        )
    layout(fig, "Per-label F1 by run", height=480)
    fig.update_layout(barmode="group", bargap=0.25)
    fig.update_xaxes(title_text="CheXpert label", tickangle=-35)
    fig.update_yaxes(title_text="F1 (0-1)", range=[0, 1.05])
    caption = (
        f'F1 of each of the 14 labels (positive class: "Yes"; {ctx.n_text("labeling")}), one bar per run colored '
        "by model; hatching tells runs of the same model apart, and a label with no positives that no run "
        "predicted scores 1.0." + limited
    )
    return FigureItem("per_label_f1", fig, caption)


def _int(value) -> int | None:
    return int(value) if value is not None and np.isfinite(value) else None


def mcnemar_figure(ctx: ReportContext, mcnemar: pd.DataFrame) -> FigureItem:
    labels = list(dict.fromkeys(mcnemar["label"]))
    runs = ctx.runs.ordered(mcnemar["run_id"])
    p_column = "p_adjusted" if "p_adjusted" in mcnemar else "p_value"
    correction = str(mcnemar["correction"].iloc[0]) if "correction" in mcnemar else "none"
    z, text, custom, marked = [], [], [], []
    for i, run in enumerate(runs):
        rows = mcnemar[mcnemar["run_id"] == run.run_id].set_index("label").reindex(labels)
        p = rows[p_column].astype(float)
        significant = rows["significant"].astype(str).str.lower().eq("true") if "significant" in rows else p < ctx.alpha
        z.append([-math.log10(max(v, P_FLOOR)) if np.isfinite(v) else None for v in p])
        text.append([fmt_p(v) + (" ★" if s else "") for v, s in zip(p, significant, strict=True)])
        custom.append(
            [
                [run.label, run.run_id, fmt_p(pv), fmt_p(pr), b, c, ar, ao, m]
                for pv, pr, b, c, ar, ao, m in zip(
                    rows["p_value"],
                    p,
                    rows["ref_only_correct"],
                    rows["other_only_correct"],
                    rows["accuracy_ref"],
                    rows["accuracy_other"],
                    rows["method"],
                    strict=True,
                )
            ]
        )
        marked += [(j, i) for j, s in enumerate(significant) if s]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=labels,
            y=[r.label for r in runs],
            text=text,
            texttemplate="%{text}",
            textfont={"size": 10},
            customdata=custom,
            colorscale="Blues",
            zmin=0,
            zmax=-math.log10(P_FLOOR),
            colorbar={
                "title": {"text": "p-value"},
                "tickvals": [0, -math.log10(0.05), 3, 4],
                "ticktext": ["1", "0.05", "0.001", "≤ 0.0001"],
                "len": 1.0,
                "thickness": 14,
            },
            hovertemplate=hover(
                "%{customdata[0]}",
                [
                    "run %{customdata[1]}",
                    "label %{x}",
                    "p %{customdata[2]}, adjusted %{customdata[3]}",
                    "only the reference right: %{customdata[4]} reports",
                    "only this run right: %{customdata[5]} reports",
                    "label accuracy: reference %{customdata[6]:.3f}, this run %{customdata[7]:.3f}",
                    "test: %{customdata[8]}",
                ],
            ),
        )
    )
    for x, y in marked:
        fig.add_shape(
            type="rect",
            x0=x - 0.5,
            x1=x + 0.5,
            y0=y - 0.5,
            y1=y + 0.5,
            line={"color": "#D55E00", "width": 2.5},
        )
    reference = ctx.runs.label(ctx.inputs.reference_run_id or "")
    layout(
        fig,
        f"McNemar p-values per label, each run against {escape(reference)}",
        height=runs_height(len(runs), minimum=360, extra=250),
        legend=False,
    )
    fig.update_xaxes(title_text="CheXpert label", tickangle=-35)
    fig.update_yaxes(title_text="run compared", autorange="reversed")
    fig.update_layout(margin={"l": 220})
    adjusted = f"adjusted with {correction} across the 14 labels" if correction != "none" else "unadjusted"
    caption = (
        f"McNemar's test on paired per-report correctness of each label against the reference run "
        f"({escape(reference)}; {ctx.n_text('labeling')}); p-values {adjusted}, the table below counts both. "
        f"Cells with p < {ctx.alpha:g} carry ★ and an orange box; darker means smaller p."
    )
    return FigureItem("mcnemar_p_values", fig, caption)


def tests_table(ctx: ReportContext, mcnemar: pd.DataFrame, macro: pd.DataFrame | None) -> str:
    """Per compared run: each macro-F1 difference with its bootstrap interval and p-value, and how
    many labels McNemar finds significant unadjusted and Holm-adjusted."""
    metrics = [("f1_macro", "Δ macro F1, 14 labels (paper)"), ("f1_macro_supported", "Δ macro F1, labels present")]
    head = ["Run compared"] + [title for _, title in metrics] + ["Labels p < α, unadjusted", "Labels p < α, Holm"]
    rows = []
    for run in ctx.runs.ordered(mcnemar["run_id"]):
        cells = [f'<td><span class="swatch" style="background:{run.color}"></span>{escape(run.label)}</td>']
        for metric, _ in metrics:
            cells.append(f"<td>{_difference(macro, run.run_id, metric)}</td>")
        mine = mcnemar[mcnemar["run_id"] == run.run_id]
        for column in ("significant_unadjusted", "significant_holm"):
            count = int(mine[column].astype(str).str.lower().eq("true").sum()) if column in mine else None
            cells.append(f"<td>{count if count is not None else '–'}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    level = f"{1 - ctx.alpha:.0%}"
    resamples = ""
    if macro is not None and "resamples" in macro and len(macro):
        resamples = f" ({int(macro['resamples'].max())} resamples of the reports, seed {macro['boot_seed'].iloc[0]})"
    return (
        '<div class="table-wrap"><table class="tests"><thead><tr>'
        + "".join(f"<th>{escape(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
        f'<p class="caption">Each run against {escape(ctx.runs.label(ctx.inputs.reference_run_id or ""))} '
        f"({escape(ctx.n_text('labeling'))}): the macro-F1 difference (this run − reference) with its {level} "
        f"paired percentile bootstrap interval and p-value{escape(resamples)}, and the labels whose McNemar test "
        f"has p < {ctx.alpha:g} before and after Holm's correction across the 14 labels. In use for ★ and "
        f"the heatmap: {escape(ctx.correction_text)}.</p>"
    )


def _difference(tests: pd.DataFrame | None, run_id: str, metric: str) -> str:
    """'+0.052 [−0.010, 0.120], p 0.110' for one run and metric, '–' without a test."""
    if tests is None or "metric" not in tests:
        return "–"
    row = tests[(tests["run_id"] == run_id) & (tests["metric"] == metric)]
    if row.empty or not np.isfinite(row["diff"].iloc[0]):
        return "–"
    r = row.iloc[0]
    return f'{r["diff"]:+.3f} <span class="ci">[{r["ci_low"]:.3f}, {r["ci_high"]:.3f}]</span>, p {fmt_p(r["p_value"])}'
