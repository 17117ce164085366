"""The Plotly report, built from a fabricated study in a temporary MLflow store (see
report_fixtures.build_study): three fine-tunes with known statistics, an Optuna sweep and a
reader study. One report is built per module; the tests read it from every side."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager

import mlflow
import pytest
import report_browser
from report_browser import external_sources
from report_fixtures import STUDY, SWEEP, build_study

from analysis.job import AnalysisConfig
from analysis.runs import RunSelection
from dashboards.__main__ import main
from dashboards.inputs import gather, load_sweep, read_tables
from dashboards.options import ReportOptions
from dashboards.paper import published_for, uses_paper_data
from dashboards.report import build_report, report_from_selection, write_report
from dashboards.runs import RunCatalog
from dashboards.sections import ReportContext, leaderboard, ordered_sections

SECTION_KEYS = ["leaderboard", "labeling", "harmonization", "impression", "trajectory", "poisoning", "sweeps", "reader"]
# figures whose marks are not runs (importances, trials as lines) need no run in their hover text
NOT_PER_RUN = re.compile(r"sweeps-.*_(importances|parallel)$")


@contextmanager
def using_store(uri: str):
    """MLflow's global tracking URI pointed at `uri` for a block, then put back."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield mlflow.MlflowClient(uri)
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The study and its report, built once per test process (session scope: under pytest-xdist's
    plain load distribution this module's tests may share a worker with others in any order, and a
    module-scoped fixture would be rebuilt each time the worker comes back to this module)."""
    folder = tmp_path_factory.mktemp("report")
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        try:
            ids = build_study(folder)  # points MLflow at the new store
            uri = mlflow.get_tracking_uri()
            config = AnalysisConfig(
                selection=RunSelection(experiment="lab-test", study=STUDY, params={"epoch": "2"}),
                correction="holm",
                cache_dir=folder / "cache",
            )
            result = report_from_selection(config, ReportOptions(), folder / "out")
        finally:
            mlflow.set_tracking_uri(previous)
    html = result.html.read_text(encoding="utf-8")
    return {"folder": folder, "ids": ids, "result": result, "html": html, "uri": uri}


def figures_by_id(built) -> dict:
    return {f.div_id: f for f in built["result"].report.figures}


# ---------------------------------------------------------------- content


def test_every_section_in_order_with_figures(built):
    assert [s.key for s in ordered_sections()] == SECTION_KEYS
    report, html = built["result"].report, built["html"]
    for number, section in enumerate(report.sections, start=1):
        assert section.figures, f"section {section.key} drew nothing: {section.note}"
        assert f'<section id="{section.key}"' in html
        assert f"{number}. {section.title}" in html
        for fig in section.figures:
            assert f'id="{fig.div_id}"' in html, fig.div_id
            assert fig.caption in html
    assert "could not be drawn" not in html
    expected = {
        "leaderboard": {"headline_metrics"},
        "labeling": {"per_label_f1", "mcnemar_p_values"},
        "harmonization": {"accuracy", "confusion"},
        "impression": {"score_distributions", "paired_differences"},
        "trajectory": {"metrics_by_epoch", "training_loss"},
        "poisoning": {"metrics_by_poison_rate"},
        "sweeps": {f"{SWEEP}_history", f"{SWEEP}_importances", f"{SWEEP}_parallel"},
        "reader": {"likert_distribution", "likert_means"},
    }
    for section in report.sections:
        assert {f.div_id.removeprefix(f"fig-{section.key}-") for f in section.figures} == expected[section.key]


def test_leaderboard_table_lists_every_run_and_marks_the_best(built):
    html = built["html"]
    table = html[html.index('<table class="sortable leaderboard">') : html.index("</table>")]
    runs = built["ids"]["runs"]
    for name in ("reference", "other", "poisoned"):
        assert runs[name][2] in table
    assert table.count("<tr>") == 4  # header + three runs
    assert '<td data-sort="0.9841' in table or "★ 0.984" in table  # the reference's macro F1 is the best
    assert 'class="best"' in table


def test_every_figure_has_title_axis_titles_hover_naming_the_run_and_a_short_caption(built):
    for div_id, fig in figures_by_id(built).items():
        figure = fig.figure
        assert figure.layout.title.text, div_id
        used_axes = {(getattr(t, "xaxis", None) or "x", getattr(t, "yaxis", None) or "y") for t in figure.data}
        for x_axis, y_axis in used_axes:
            for axis_id in (x_axis, y_axis):
                axis = figure.layout[axis_id.replace("x", "xaxis", 1).replace("y", "yaxis", 1)]
                if axis.visible is False or axis.showticklabels is False:
                    continue
                assert axis.title.text, f"{div_id}: axis {axis_id} has no title"
        hovers = " ".join(str(t.hovertemplate or "") for t in figure.data)
        if not NOT_PER_RUN.search(div_id):
            assert "run" in hovers, f"{div_id}: hover text does not name the run"
        sentences = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z(])", fig.caption.strip()) if s]
        assert 1 <= len(sentences) <= 2, f"{div_id}: caption has {len(sentences)} sentences: {fig.caption}"


def test_colors_are_one_per_model_across_figures(built):
    catalog_colors: dict[str, str] = {}
    report = built["result"].report
    inputs_tables, _ = read_tables(built["folder"] / "out" / "analysis")
    catalog = RunCatalog.from_tables(inputs_tables)
    seen: dict[str, set[str]] = {}
    for fig in report.figures:
        for trace in fig.figure.data:
            custom = trace.customdata
            if custom is None or len(custom) == 0 or trace.type == "heatmap":
                continue
            colors = _trace_colors(trace, len(custom))
            for row, color in zip(custom, colors, strict=True):
                run = catalog.get(str(row[1])) if len(row) > 1 else None
                if run is not None and color:
                    seen.setdefault(run.model, set()).add(color)
    assert set(seen) == {"smollm2-135m", "opt-350m"}
    for model, colors in seen.items():
        assert len(colors) == 1, f"{model} drawn in several colors: {colors}"
        catalog_colors[model] = colors.pop()
    assert catalog_colors["smollm2-135m"] != catalog_colors["opt-350m"]


def _trace_colors(trace, n: int) -> list[str | None]:
    marker = getattr(trace, "marker", None)
    color = marker.color if marker is not None and marker.color is not None else None
    if color is None and getattr(trace, "line", None) is not None:
        color = trace.line.color
    if isinstance(color, list | tuple):
        return [str(c) for c in color]
    return [str(color) if isinstance(color, str) and color.startswith("#") else None] * n


def test_mcnemar_heatmap_marks_the_significant_cell(built):
    # other vs reference on Edema: b = 10, c = 0, exact p = 0.00195; Holm over 14 labels -> 0.0273
    heatmap = figures_by_id(built)["fig-labeling-mcnemar_p_values"].figure
    trace = heatmap.data[0]
    rows = list(trace.y)
    other = next(i for i, label in enumerate(rows) if label.startswith("opt-350m"))
    edema = list(trace.x).index("Edema")
    assert trace.text[other][edema] == "0.027 ★"
    starred = [(i, j) for i, row in enumerate(trace.text) for j, cell in enumerate(row) if "★" in cell]
    assert starred == [(other, edema)]
    boxes = [s for s in heatmap.layout.shapes if s.type == "rect"]
    assert [(b.x0 + 0.5, b.y0 + 0.5) for b in boxes] == [(edema, other)]


def test_paired_t_test_in_impression_figure(built):
    # BLEU differences are Student's sleep data: t = 4.0621, df = 9, p = 0.002833
    fig = figures_by_id(built)["fig-impression-paired_differences"].figure
    bleu = [t for t in fig.data if t.xaxis in (None, "x") and str(t.y[0]).startswith("opt-350m")][0]
    assert bleu.customdata[0][6] == pytest.approx(4.0621, abs=1e-3)
    assert bleu.customdata[0][7] == 9
    assert "★" in bleu.text[0]


def test_example_impressions_beside_references(built):
    html = built["html"]
    table = html[html.index('<table class="examples">') :]
    assert "no acute cardiopulmonary process in case 0" in table
    assert "stable chest in case" in table


def test_sweep_figures_name_each_trial_run(built):
    history = figures_by_id(built)[f"fig-sweeps-{SWEEP}_history"].figure
    points = next(t for t in history.data if "MLflow run" in str(t.hovertemplate))
    assert [row[1] for row in points.customdata] == [f"trial-run-{n}" for n in range(8)]


def test_reader_section_statistics(built):
    fig = figures_by_id(built)["fig-reader-likert_means"]
    assert "t-test" in fig.caption and "kappa" in fig.caption
    assert "4.39 ± 1.00" in fig.caption and "3.65 ± 1.00" in fig.caption  # the paper, cited


# ---------------------------------------------------------------- offline and MLflow


def test_report_is_self_contained_and_offline(built):
    html = built["html"]
    assert external_sources(html) == []  # no <script src>, no stylesheet link: nothing to fetch
    assert len(re.findall(r"\* plotly\.js v\d", html)) == 1  # the bundle is embedded exactly once
    assert "cdn.plot.ly/plotly" not in re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)


def test_report_logged_to_the_analysis_run(built):
    result = built["result"]
    client = mlflow.MlflowClient(built["uri"])
    run = client.get_run(result.run_id)
    assert run.data.tags["role"] == "analysis"
    logged = {a.path for a in client.list_artifacts(result.run_id, "report")}
    assert {"report/report.html", "report/manifest.json", "report/figures"} <= logged
    figures = {a.path.rsplit("/", 1)[1] for a in client.list_artifacts(result.run_id, "report/figures")}
    assert "plotly.min.js" not in figures  # the report embeds the one copy (figure_js json)
    for fig in result.report.figures:
        assert fig.file_name.rsplit("/", 1)[1].replace(".html", ".json") in figures
    tables = {a.path.rsplit("/", 1)[1] for a in client.list_artifacts(result.run_id, "report/tables")}
    assert "labeling_summary.csv" in tables
    manifest = json.loads((result.folder / "manifest.json").read_text())
    assert [s["key"] for s in manifest["sections"]] == SECTION_KEYS


def test_single_figure_pages_share_one_plotly_or_embed_it(built, tmp_path):
    result = built["result"]
    write_report(result.report, tmp_path / "shared", figure_js="shared")
    page = (tmp_path / "shared" / result.report.figures[0].file_name).read_text()
    assert external_sources(page) == ["plotly.min.js"]
    assert "plotly.min.js" in page and "cdn.plot.ly" not in page
    one = build_report_subset(result.report, 1)
    write_report(one, tmp_path / "inline", figure_js="inline")
    inline = (tmp_path / "inline" / one.figures[0].file_name).read_text()
    assert external_sources(inline) == [] and len(re.findall(r"\* plotly\.js v\d", inline)) == 1
    assert not (tmp_path / "inline" / "figures" / "plotly.min.js").exists()


def build_report_subset(report, n_sections: int):
    from dashboards.report import Report

    return Report(report.title, report.meta, report.notes, report.sections[:n_sections])


# ---------------------------------------------------------------- options and other starting points


def offline_inputs(built, keep=None):
    tables, summary = read_tables(built["folder"] / "out" / "analysis")
    if keep is not None:
        tables = {k: v for k, v in tables.items() if k.startswith(keep)}
    return gather(tables, summary, built["folder"] / "scratch", None, built["folder"] / "cache")


def leaderboard_figure(inputs, options):
    runs = RunCatalog.from_tables(inputs.tables, inputs.reference_run_id, inputs.run_params)
    return leaderboard.build(ReportContext(inputs, options, runs)).figures[0].figure


def test_paper_lines_follow_the_data(built):
    assert uses_paper_data("labeling", {"data": "openi-csv:/data/indiana_reports.csv"})
    assert uses_paper_data("impression", {"data": "series-table:/s.csv,openi-xml:/r.tgz"})
    assert uses_paper_data("harmonization", {"data": "openi-csv:/r.csv,series-table:/s.xlsx#2"})
    assert not uses_paper_data("labeling", {"data": "synthetic?reports=40"})
    assert not uses_paper_data("harmonization", {"data": "openi-csv:/r.csv"})
    openi = [{"data": "openi-csv:/r.csv"}]
    assert [p.value for p in published_for("labeling", "f1_macro", "auto", openi)] == [0.894, 0.728]
    assert published_for("harmonization", "accuracy", "auto", openi) == []
    assert [p.value for p in published_for("harmonization", "accuracy", "always", [])] == [0.975, 0.878]
    assert published_for("labeling", "f1_macro", "never", openi) == []
    # in the report: synthetic data draws no line; forced, both tasks' published values appear
    auto = built["result"].report.figures[0].figure
    assert not [s for s in auto.layout.shapes if s.type == "line"]
    forced = leaderboard_figure(offline_inputs(built), ReportOptions(paper_lines="always"))
    assert sorted(s.x0 for s in forced.layout.shapes if s.type == "line") == [0.728, 0.878, 0.894, 0.975]
    assert {t.name for t in forced.data if t.name} == {"paper: multi-task OPT-350m", "paper: GPT-4o, prompt-engineered"}
    # detected: the reference run's reports are Open-i, its series synthetic -> labeling lines only
    inputs = offline_inputs(built)
    inputs.run_params = {inputs.reference_run_id: {"data": "openi-csv:/data/indiana_reports.csv"}}
    detected = leaderboard_figure(inputs, ReportOptions())
    assert sorted(s.x0 for s in detected.layout.shapes if s.type == "line") == [0.728, 0.894]


def test_a_sweep_whose_study_cannot_be_opened_is_one_line_and_creates_nothing(tmp_path):
    missing = tmp_path / "gone" / "optuna-journal.log"
    sweep = load_sweep("lost", ["run-1"], str(missing))
    assert sweep.study is None and "not found" in sweep.problem
    assert not missing.parent.exists()
    hidden = load_sweep("db", ["run-2"], "postgresql://optuna:***@db.example.org/optuna")
    assert "--sweep-storage" in hidden.problem


def test_sections_without_data_say_so_in_one_line(built, tmp_path):
    report = build_report(offline_inputs(built, keep="harmonization"), ReportOptions())
    notes = {s.key: s.note for s in report.sections if not s.figures}
    assert set(notes) == {
        "leaderboard",
        "labeling",
        "impression",
        "trajectory",
        "poisoning",
        "sweeps",
        "reader",
    } - {"leaderboard"}
    for key, note in notes.items():
        assert note and "\n" not in note and len(note) < 200, (key, note)
    assert "No labeling predictions" in notes["labeling"]
    assert "no MLflow store was read" in notes["sweeps"]
    page = write_report(report, tmp_path / "partial").read_text()
    assert page.count('class="report-figure"') == 3  # leaderboard + harmonization's two


def test_cli_from_tables_offline_and_from_the_analysis_run(built, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    tables = built["folder"] / "out" / "analysis"
    assert main(["--tables", str(tables), "--offline", "--output", str(tmp_path / "t"), "--examples", "0"]) == 0
    assert (tmp_path / "t" / "report" / "report.html").is_file()
    # MLproject passes every parameter, empty ones as ''
    run_id = built["result"].run_id
    argv = [
        "--analysis-run",
        run_id,
        "--experiment",
        "",
        "--study",
        "",
        "--param",
        "",
        "--reference",
        "",
        "--include",
        "",
        "--output",
        str(tmp_path / "r"),
        "--figure-js",
        "shared",
        "--importance",
        "ped-anova",
        "--cache-dir",
        str(built["folder"] / "cache"),
    ]
    with using_store(built["uri"]):
        assert main(argv) == 0
    assert (tmp_path / "r" / "analysis" / "labeling_summary.csv").is_file()
    assert (tmp_path / "r" / "report" / "report.html").is_file()
    assert main(["--analysis-run", run_id, "--tables", str(tables)]) == 2
    with pytest.raises(SystemExit):
        main(["--figure-js", "cdn"])


# ---------------------------------------------------------------- a real browser


needs_chromium = pytest.mark.skipif(
    not report_browser.available(),
    reason=f"{report_browser.CHROMIUM} not installed (apt-get install chromium)",
)


@needs_chromium
def test_report_renders_in_headless_chromium(built, tmp_path):
    html_path = built["result"].html
    png = tmp_path / "report.png"
    state = report_browser.load(html_path, tmp_path, screenshot=png, size=(1400, 3000))
    ids = [f.div_id for f in built["result"].report.figures]
    assert state.errors_box.strip() == "" and state.console_errors == [], (
        state.errors_box,
        state.console_errors,
    )
    assert state.status == "ok"
    assert sorted(state.figures) == sorted(ids)
    assert [i for i, rendered in state.figures.items() if not rendered] == []
    assert state.figures_total == state.figures_rendered == len(ids)
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1400, 3000)
        gray = image.convert("L")
        dark = sum(gray.histogram()[:200]) / (image.size[0] * image.size[1])
    assert dark > 0.02, f"screenshot looks blank ({dark:.1%} non-white pixels)"


@needs_chromium
def test_report_renders_as_the_mlflow_ui_artifact_view_shows_it(built, tmp_path):
    result = report_browser.load_as_mlflow_shows_it(built["result"].html, tmp_path)
    ids = sorted(f.div_id for f in built["result"].report.figures)
    assert result.get("status") == "ok", result
    assert result["errors"] == [] and result["console_errors"] == []
    assert sorted(result["figures"]) == ids and all(result["figures"].values())


@needs_chromium
def test_mlflow_view_check_waits_for_a_page_that_settles_on_a_timer(tmp_path):
    """A report still rendering when its last script runs settles from a setTimeout (as on a loaded
    machine); the sandboxed frame's report must still reach the viewer (CI flake of stop 24)."""
    page = tmp_path / "late.html"
    page.write_text(
        '<!DOCTYPE html><html><body data-report-status="loading"><div class="plotly-graph-div" id="late">'
        '</div><script>setTimeout(function () {'
        ' document.getElementById("late").innerHTML = \'<svg class="main-svg"></svg>\';'
        ' document.body.dataset.reportStatus = "ok"; }, 2000);</script></body></html>',
        encoding="utf-8",
    )
    result = report_browser.load_as_mlflow_shows_it(page, tmp_path)
    assert result.get("status") == "ok", result
    assert result["figures"] == {"late": True}


@needs_chromium
def test_single_figure_page_renders_from_the_report_folder(built, tmp_path):
    fig = built["result"].report.figures[0]
    write_report(built["result"].report, tmp_path / "shared", figure_js="shared")
    state = report_browser.load(tmp_path / "shared" / fig.file_name, tmp_path)
    assert state.figures == {fig.div_id: True}
    assert state.console_errors == []
    # the MLflow UI's preview cannot load the shared plotly.min.js: the page says so (docs/reports.md)
    shown = report_browser.load_as_mlflow_shows_it(tmp_path / "shared" / fig.file_name, tmp_path)
    assert any("Plotly is not defined" in line for line in shown["console_errors"])


@needs_chromium
def test_browser_check_catches_a_broken_page(built, tmp_path):
    """The check above must fail a page whose figures cannot render or whose scripts throw."""
    html = built["html"]
    start = html.index('<script type="text/javascript">/**')
    broken = html[:start] + html[html.index("</script>", start) + len("</script>") :]  # no plotly.js
    page = tmp_path / "broken.html"
    page.write_text(broken, encoding="utf-8")
    state = report_browser.load(page, tmp_path)
    assert state.status == "error"
    assert "Plotly is not defined" in state.errors_box
    assert "figures not rendered" in state.errors_box
    assert state.figures and not any(state.figures.values())
