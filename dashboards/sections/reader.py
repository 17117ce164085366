"""Section 8: the blinded reader study of impressions: Likert distributions, means ± SD, t-test, kappa."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from dashboards.colors import PAPER_COLOR
from dashboards.paper import LIKERT, LIKERT_P_VALUE, uses_paper_data
from dashboards.sections.base import FigureItem, ReportContext, Section, section
from dashboards.style import escape, fmt_p, hover, layout

LIKERT_SCORES = (1, 2, 3, 4, 5)


@section("reader", "Reader study", order=8)
def build(ctx: ReportContext) -> Section:
    tables = ctx.inputs.reader
    summary, distribution = tables.get("reader_summary"), tables.get("reader_distribution")
    if summary is None or summary.empty or distribution is None:
        return Section.empty(f"No reader-study ratings: {ctx.inputs.reader_note or 'none found'}.")
    ttest = tables.get("reader_ttest")
    kappa = tables.get("reader_kappa")
    stats = stats_sentence(ttest, kappa, ctx.alpha)
    figures = [distribution_figure(ctx, distribution, summary), means_figure(ctx, summary, stats)]
    return Section(
        figures=figures,
        note=f"Ratings from {escape(ctx.inputs.reader_source)}." if ctx.inputs.reader_source else "",
    )


def _run_of(ctx: ReportContext, model: str) -> str:
    ratings = ctx.inputs.reader.get("reader_ratings")
    if ratings is None or "run_id" not in ratings:
        return ""
    ids = ratings.loc[ratings["model"] == model, "run_id"].dropna().unique()
    return str(ids[0]) if len(ids) else ""


def distribution_figure(ctx: ReportContext, distribution: pd.DataFrame, summary: pd.DataFrame) -> FigureItem:
    fig = go.Figure()
    for model in summary["model"]:
        rows = distribution[distribution["model"] == model].set_index("score").reindex(LIKERT_SCORES)
        run_id = _run_of(ctx, model)
        fig.add_trace(
            go.Bar(
                x=list(LIKERT_SCORES),
                y=rows["share"] * 100,
                name=str(model),
                marker={"color": ctx.runs.colors.color(str(model))},
                customdata=[[str(model), run_id or "(not recorded)", int(c) if c == c else 0] for c in rows["count"]],
                hovertemplate=hover(
                    "%{customdata[0]}",
                    ["run %{customdata[1]}", "score %{x}: %{y:.0f}% of ratings", "%{customdata[2]} ratings"],
                ),
            )
        )
    layout(fig, "Likert scores of generated impressions, by model", height=420)
    fig.update_layout(barmode="group")
    fig.update_xaxes(
        title_text="Likert score (1 unacceptable – 5 clear, concise and accurate)",
        tickvals=list(LIKERT_SCORES),
    )
    fig.update_yaxes(title_text="share of ratings (%)", rangemode="tozero")
    n = int(summary["n_ratings"].sum())
    caption = (
        f"Distribution of the {n} blinded ratings (every rater, every item) of each model's impressions; "
        "raters did not know which model wrote which impression."
    )
    return FigureItem("likert_distribution", fig, caption)


def means_figure(ctx: ReportContext, summary: pd.DataFrame, stats: str) -> FigureItem:
    fig = go.Figure()
    for row in summary.to_dict("records"):
        model = str(row["model"])
        fig.add_trace(
            go.Scatter(
                x=[row["mean"]],
                y=[model],
                mode="markers",
                name=model,
                marker={"color": ctx.runs.colors.color(model), "size": 13},
                error_x={
                    "type": "data",
                    "array": [row["sd"]],
                    "color": ctx.runs.colors.color(model),
                    "thickness": 2,
                },
                customdata=[
                    [
                        model,
                        _run_of(ctx, model) or "(not recorded)",
                        row["sd"],
                        int(row["n_items"]),
                        int(row["n_ratings"]),
                    ]
                ],
                hovertemplate=hover(
                    "%{customdata[0]}",
                    [
                        "run %{customdata[1]}",
                        "mean %{x:.2f} ± %{customdata[2]:.2f} (SD)",
                        "%{customdata[3]} items, %{customdata[4]} ratings",
                    ],
                ),
            )
        )
    rated_runs = [r for r in (_run_of(ctx, str(m)) for m in summary["model"]) if r]
    paper = ctx.options.paper_lines == "always" or (
        ctx.options.paper_lines == "auto"
        and any(uses_paper_data("impression", p) for p in ctx.runs.params_of(rated_runs))
    )
    if paper:
        for item in LIKERT:
            fig.add_trace(
                go.Scatter(
                    x=[item.mean],
                    y=[item.system],
                    mode="markers",
                    name=item.system,
                    marker={"color": PAPER_COLOR, "size": 11, "symbol": "diamond-open"},
                    error_x={"type": "data", "array": [item.sd], "color": PAPER_COLOR},
                    hovertemplate=hover(item.system, [f"published mean {item.mean:.2f} ± {item.sd:.2f}"]),
                )
            )
    layout(
        fig,
        "Mean Likert score ± SD, by model",
        height=260 + 40 * (len(summary) + (2 if paper else 0)),
        legend=False,
    )
    fig.update_xaxes(title_text="Likert score (1-5), mean ± SD", range=[0.5, 5.5], tickvals=list(LIKERT_SCORES))
    fig.update_yaxes(title_text="model", autorange="reversed")
    published = (
        f" The paper reported {LIKERT[0].mean:.2f} ± {LIKERT[0].sd:.2f} for OPT-350m against "
        f"{LIKERT[1].mean:.2f} ± {LIKERT[1].sd:.2f} for GPT-4o (p = {LIKERT_P_VALUE})"
        + (", drawn as grey diamonds." if paper else ".")
    )
    return FigureItem("likert_means", fig, (stats + published).strip())


def stats_sentence(ttest: pd.DataFrame | None, kappa: pd.DataFrame | None, alpha: float) -> str:
    """One sentence: the t-test between the models and the raters' weighted kappa."""
    parts = []
    if ttest is not None and not ttest.empty:
        t = ttest.iloc[0]
        verdict = "significant" if float(t["p_value"]) < alpha else "not significant"
        parts.append(
            f"unpaired two-tailed t-test on {t['unit']} scores, "
            f"{escape(t['model_b'])} − {escape(t['model_a'])} = {float(t['mean_diff_b_minus_a']):+.2f}: "
            f"t = {float(t['statistic']):.2f}, df {float(t['df']):g}, "
            f"p {fmt_p(float(t['p_value']))} ({verdict} at {alpha:g})"
        )
    if kappa is not None and not kappa.empty:
        pairs = ", ".join(
            f"{escape(r['rater_a'])}–{escape(r['rater_b'])} {float(r['kappa_quadratic']):.2f}"
            for r in kappa.to_dict("records")
        )
        parts.append(f"quadratic-weighted Cohen's kappa between raters {pairs}")
    text = "; ".join(parts) + "."
    return text[0].upper() + text[1:] if parts else ""
