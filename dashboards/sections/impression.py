"""Section 4: BLEU / ROUGE-L per example by run, paired t-tests against the reference, examples."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.sections.base import FigureItem, ReportContext, Section, section
from dashboards.style import escape, fmt_p, hover, layout, runs_height

# metric -> (axis title with units, format)
METRICS = {
    "bleu": ("BLEU (0-100)", ".1f"),
    "rouge1": ("ROUGE-1 (0-1)", ".3f"),
    "rouge2": ("ROUGE-2 (0-1)", ".3f"),
    "rougeL": ("ROUGE-L (0-1)", ".3f"),
}
DISTRIBUTED = ("bleu", "rougeL")
PAIRED_TEST = "paired_t"
MAX_TEXT = 400  # characters of an impression shown in the examples table


@section("impression", "Impressions: BLEU and ROUGE", order=4)
def build(ctx: ReportContext) -> Section:
    tables = ctx.task_tables("impression", "per_example", "summary")
    if tables is None:
        return Section.no_predictions("impression")
    per_example, summary = tables
    figures = [distribution_figure(ctx, per_example, summary)]
    tests = ctx.table("impression_paired_tests")
    notes = []
    if tests is not None and (tests["test"] == PAIRED_TEST).any():
        figures.append(paired_figure(ctx, tests[tests["test"] == PAIRED_TEST]))
    else:
        notes.append("No paired tests: no other run has impressions to pair with the reference run's.")
    blocks = []
    examples, why = examples_table(ctx, per_example)
    if examples:
        blocks.append(examples)
    elif why:
        notes.append(why)
    return Section(figures=figures, blocks=blocks, note=" ".join(notes))


def distribution_figure(ctx: ReportContext, per_example: pd.DataFrame, summary: pd.DataFrame) -> FigureItem:
    runs = ctx.runs.ordered(per_example["run_id"])
    corpus = summary.drop_duplicates("run_id").set_index("run_id")
    fig = make_subplots(
        rows=1,
        cols=len(DISTRIBUTED),
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=[f"{METRICS[m][0]} per example" for m in DISTRIBUTED],
    )
    for col, metric in enumerate(DISTRIBUTED, start=1):
        title, fmt = METRICS[metric]
        for run in runs:
            rows = per_example[per_example["run_id"] == run.run_id]
            fig.add_trace(
                go.Box(
                    x=rows[metric],
                    y=[run.label] * len(rows),
                    name=run.label,
                    orientation="h",
                    boxpoints="all",
                    jitter=0.4,
                    pointpos=0,
                    hoveron="points",
                    marker={"color": run.color, "size": 5, "opacity": 0.6},
                    line={"color": run.color},
                    fillcolor="rgba(0,0,0,0)",
                    boxmean=True,
                    customdata=[[run.label, run.run_id, str(e)] for e in rows["example_id"]],
                    hovertemplate=hover(
                        "%{customdata[0]}",
                        ["run %{customdata[1]}", "example %{customdata[2]}", f"{metric} %{{x:{fmt}}}"],
                    ),
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=title, range=[-2, 105] if metric == "bleu" else [-0.02, 1.05], row=1, col=col)
    layout(
        fig,
        "Per-example impression scores by run",
        height=runs_height(len(runs), extra=200),
        legend=False,
        panels=True,
    )
    fig.update_yaxes(autorange="reversed", title_text="run", row=1, col=1)
    fig.update_layout(margin={"l": 220}, boxgap=0.35)
    bleu = ", ".join(
        f"{ctx.runs.label(r)} {corpus.at[r, 'bleu']:.1f}"
        for r in corpus.index[:4]
        if math.isfinite(corpus.at[r, "bleu"])
    )
    caption = (
        "Each dot is one test report's generated impression scored against its reference (sentence BLEU, "
        f"ROUGE-L F-measure; {ctx.n_text('impression')}); boxes show quartiles, the dashed line the mean."
        + (f" Corpus BLEU: {escape(bleu)}." if bleu else "")
    )
    return FigureItem("score_distributions", fig, caption)


def paired_figure(ctx: ReportContext, tests: pd.DataFrame) -> FigureItem:
    runs = ctx.runs.ordered(tests["run_id"])
    metrics = [m for m in METRICS if (tests["metric"] == m).any()]
    fig = make_subplots(
        rows=1,
        cols=len(metrics),
        shared_yaxes=True,
        horizontal_spacing=0.03,
        subplot_titles=[f"Δ {METRICS[m][0]}" for m in metrics],
    )
    level = float(tests["ci_level"].iloc[0]) if "ci_level" in tests else 1 - ctx.alpha
    for col, metric in enumerate(metrics, start=1):
        fmt = METRICS[metric][1]
        rows = tests[tests["metric"] == metric].drop_duplicates("run_id").set_index("run_id")
        for run in runs:
            if run.run_id not in rows.index:
                continue
            row = rows.loc[run.run_id]
            significant = str(row.get("significant", "")).lower() == "true"
            fig.add_trace(
                go.Scatter(
                    x=[row["mean_diff"]],
                    y=[run.label],
                    mode="markers+text",
                    text=[f"p {fmt_p(row.get('p_adjusted', row['p_value']))}{' ★' if significant else ''}"],
                    textposition="top center",
                    textfont={"size": 10},
                    marker={
                        "color": run.color if significant else "white",
                        "size": 11,
                        "line": {"color": run.color, "width": 2},
                    },
                    error_x={
                        "type": "data",
                        "symmetric": False,
                        "array": [row["ci_high"] - row["mean_diff"]],
                        "arrayminus": [row["mean_diff"] - row["ci_low"]],
                        "color": run.color,
                    },
                    customdata=[
                        [
                            run.label,
                            run.run_id,
                            row["mean_ref"],
                            row["mean_other"],
                            row["ci_low"],
                            row["ci_high"],
                            row["statistic"],
                            row["df"],
                            fmt_p(row["p_value"]),
                            fmt_p(row.get("p_adjusted", row["p_value"])),
                            int(row["n"]),
                            fmt_p(row.get("p_holm", row["p_value"])),
                            _note(row.get("note")),
                        ]
                    ],
                    hovertemplate=hover(
                        "%{customdata[0]}",
                        [
                            "run %{customdata[1]}",
                            f"mean {metric}: this run %{{customdata[3]:{fmt}}}, reference %{{customdata[2]:{fmt}}}",
                            f"difference %{{x:{fmt}}} ({level:.0%} CI %{{customdata[4]:{fmt}}} "
                            f"to %{{customdata[5]:{fmt}}})",
                            "paired t = %{customdata[6]:.2f}, df %{customdata[7]}, n %{customdata[10]}",
                            "p %{customdata[8]} unadjusted, %{customdata[11]} Holm, %{customdata[9]} in use"
                            "%{customdata[12]}",
                        ],
                    ),
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
        fig.add_vline(x=0, line={"color": "#888", "width": 1}, row=1, col=col)
        fig.update_xaxes(title_text="this run − reference", row=1, col=col)
    reference = ctx.runs.label(ctx.inputs.reference_run_id or "")
    layout(
        fig,
        f"Paired differences in impression scores against {escape(reference)}",
        height=runs_height(len(runs), minimum=300, extra=230),
        legend=False,
        panels=True,
    )
    # reversed by hand, with room above the first run for its p-value label
    fig.update_yaxes(range=[len(runs) - 0.5, -0.9])
    fig.update_yaxes(title_text="run compared", row=1, col=1)
    fig.update_layout(margin={"l": 220})
    caption = (
        f"Mean per-example difference (this run minus the reference; {ctx.n_text('impression')}) with its "
        f"{level:.0%} interval and the paired t-test's p-value, {escape(ctx.correction_text)} in use (hover: "
        f"unadjusted and Holm); filled markers and ★: p < {ctx.alpha:g}, and p n/a marks a degenerate test "
        "(constant differences; the reason is in the hover). Wilcoxon signed-rank results are in the "
        "impression_paired_tests table."
    )
    return FigureItem("paired_differences", fig, caption)


def _note(value) -> str:
    """A degenerate test's reason as a hover suffix ('' for a regular test)."""
    return f"; {escape(str(value))}" if isinstance(value, str) and value else ""


def examples_table(ctx: ReportContext, per_example: pd.DataFrame) -> tuple[str, str]:
    """(HTML, note): the reference run's worst, median and best impressions by BLEU, beside the
    reference text and up to two other runs' impressions of the same reports."""
    if ctx.options.examples == 0:
        return "", ""
    if ctx.inputs.predictions is None:
        return "", "Example impressions need the runs' predictions from the MLflow store, not read here."
    # the reference run picks the examples; without impressions of its own, the first run that has them
    reference = ctx.inputs.reference_run_id
    if reference not in set(per_example["run_id"]):
        reference = ctx.runs.ordered(per_example["run_id"])[0].run_id
    own = per_example[per_example["run_id"] == reference].sort_values("bleu", kind="stable")
    n = min(ctx.options.examples, len(own))
    picks = [own["example_id"].iloc[round(i * (len(own) - 1) / max(n - 1, 1))] for i in range(n)]
    picks = list(dict.fromkeys(picks))
    others = (
        per_example[per_example["run_id"] != reference].groupby("run_id")["bleu"].mean().sort_values(ascending=False)
    )
    shown = [reference, *others.index[:2]]
    records = {run_id: ctx.inputs.predictions(run_id, "impression") or {} for run_id in shown}
    if not records[reference]:
        return "", "The impression predictions could not be read from the MLflow store: no examples."
    head = "<th>example</th><th>reference impression</th>" + "".join(
        f'<th><span class="swatch" style="background:{ctx.runs.color(r)}"></span>{escape(ctx.runs.label(r))}</th>'
        for r in shown
    )
    rows = []
    for example_id in picks:
        truth = records[reference].get(example_id, {}).get("reference", "")
        cells = [f"<td class='runid'>{escape(example_id)}</td>", f"<td>{_text(truth)}</td>"]
        for run_id in shown:
            record = records[run_id].get(example_id)
            if record is None:
                cells.append("<td>–</td>")
                continue
            generated = record.get("parsed") if isinstance(record.get("parsed"), str) else record.get("output", "")
            bleu = (record.get("scores") or {}).get("bleu")
            score = f'<div class="runid">BLEU {bleu:.1f}</div>' if isinstance(bleu, int | float) else ""
            cells.append(f"<td>{_text(generated)}{score}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    html = (
        '<div class="table-wrap"><table class="examples"><thead><tr>'
        + head
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
        f'<p class="caption">{len(picks)} of the {escape(ctx.test_size("impression"))} spread over the BLEU '
        f"range of {escape(ctx.runs.label(reference))} (lowest to highest), each with the radiologist's impression"
        " and the generated ones of that run and of the two other runs with the highest mean BLEU.</p>"
    )
    return html, ""


def _text(value) -> str:
    text = str(value or "")
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + " …"
    return escape(text) if text else "<em>(empty)</em>"
