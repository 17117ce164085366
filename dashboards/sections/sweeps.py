"""Section 7: Optuna sweeps of the study: optimization history, importances, parallel coordinates."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState

from dashboards.inputs import SweepStudy
from dashboards.sections.base import FigureItem, ReportContext, Section, section
from dashboards.style import escape, layout

log = logging.getLogger(__name__)

EVALUATORS: dict[str, Callable[[], object]] = {
    "fanova": lambda: optuna.importance.FanovaImportanceEvaluator(seed=0),
    "ped-anova": lambda: optuna.importance.PedAnovaImportanceEvaluator(),
    "mdi": lambda: optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0),
}


@section("sweeps", "Hyperparameter sweeps", order=7)
def build(ctx: ReportContext) -> Section:
    sweeps = ctx.inputs.sweeps
    if not sweeps:
        return Section.empty(f"No sweep study found: {ctx.inputs.sweep_note or 'none was looked for'}.")
    figures, notes = [], []
    for sweep in sweeps:
        if sweep.study is None:
            notes.append(f"Sweep study {sweep.name!r} (run {sweep.run_ids[0]}) not drawn: {sweep.problem}.")
            continue
        made, note = study_figures(ctx, sweep)
        figures += made
        if note:
            notes.append(note)
    if not figures:
        return Section.empty(" ".join(notes))
    return Section(figures=figures, note=" ".join(notes))


def study_figures(ctx: ReportContext, sweep: SweepStudy) -> tuple[list[FigureItem], str]:
    study = sweep.study
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return [], f"Sweep study {sweep.name!r} has no completed trial yet."
    objective = str(study.user_attrs.get("objective", "objective value"))
    key = _file_key(sweep.name)
    runs = {t.number: str(t.user_attrs.get("mlflow_run_id", "")) for t in study.get_trials(deepcopy=False)}
    counts = {s.name.lower(): n for s in TrialState if (n := len(study.get_trials(deepcopy=False, states=(s,)))) > 0}
    counted = ", ".join(f"{n} {state}" for state, n in counts.items())
    direction = study.direction.name.lower()
    items = []

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental-feature warnings
        history = optuna.visualization.plot_optimization_history(study, target_name=objective)
    for trace in history.data:
        if trace.mode == "markers" and trace.name == objective:  # one point per trial
            trace.customdata = [[n, runs.get(n, "") or "not logged"] for n in trace.x]
            trace.hovertemplate = (
                "<b>trial %{customdata[0]}</b><br>MLflow run %{customdata[1]}<br>"
                f"{escape(objective)} %{{y:.4f}}<extra></extra>"
            )
    _restyle(history, f"{sweep.name}: optimization history", "trial number", f"{objective} (validation)")
    items.append(
        FigureItem(
            f"{key}_history",
            history,
            f"Objective of each trial of Optuna study {escape(sweep.name)} ({counted}; "
            f"direction: {direction}) and the best value so far; hover a point for its MLflow run.",
        )
    )

    if len(complete) >= 2:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importance = optuna.visualization.plot_param_importances(
                    study, evaluator=EVALUATORS[ctx.options.importance](), target_name=objective
                )
            _restyle(
                importance,
                f"{sweep.name}: hyperparameter importances",
                f"importance ({ctx.options.importance}, share of the objective's variation)",
                "hyperparameter",
            )
            items.append(
                FigureItem(
                    f"{key}_importances",
                    importance,
                    f"How much of the variation in {escape(objective)} each searched hyperparameter "
                    f"explains ({ctx.options.importance} over {len(complete)} completed trials).",
                )
            )
        except (RuntimeError, ValueError, ZeroDivisionError) as err:
            log.info("importances of %s not drawn: %s", sweep.name, err)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parallel = optuna.visualization.plot_parallel_coordinate(study, target_name=objective)
    _restyle(
        parallel,
        f"{sweep.name}: parallel coordinates",
        "objective, then each searched hyperparameter",
        "value (each axis on its own scale)",
    )
    items.append(
        FigureItem(
            f"{key}_parallel",
            parallel,
            f"Each line is a completed trial through its hyperparameter values, colored by "
            f"{escape(objective)} (color bar); the first axis is the objective itself.",
        )
    )
    return items, ""


def _restyle(fig: go.Figure, title: str, x_title: str, y_title: str) -> None:
    layout(fig, escape(title), height=440, legend=True)
    fig.update_layout(margin={"l": 130})
    if x_title:
        fig.update_xaxes(title_text=x_title)
    if y_title:
        fig.update_yaxes(title_text=y_title)


def _file_key(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]
