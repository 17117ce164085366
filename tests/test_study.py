"""Studies: the shipped study files, run keys, the claims table (two workers never take the same
run, stale claims are taken over), and plan / run / interrupt / resume / skip on a tiny study."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipelines.studies import (
    ClaimStore,
    StudyError,
    estimate_cost,
    format_plan,
    load_study,
    run_states,
    run_study,
)
from pipelines.studies import runner as study_runner
from pipelines.studies.runner import execute_run, post_study, run_tags

ROOT = Path(__file__).resolve().parent.parent
STUDY_FILES = sorted((ROOT / "studies").rglob("*.yaml"))


def write_study(folder: Path, data: dict) -> Path:
    path = folder / f"{data['name']}.yaml"
    path.write_text("# test study\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def fake_study(folder: Path, n: int = 4) -> Path:
    """n fine-tune entries that differ by seed: cheap to load, never trained (tests pass a fake executor)."""
    return write_study(folder, {"name": "fake", "finetune": {"epochs": 2, "checkpoint_epochs": [2]},
                                "runs": [{"name": f"run-{i}", "seed": i} for i in range(n)]})


# ---------------------------------------------------------------- study files and keys


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.name)
def test_shipped_study_files_load_and_say_how_to_run_them(path):
    study = load_study(path)
    text = path.read_text()
    assert text.startswith("#") and f"python -m pipelines.study studies/{path.name}" in text
    assert len({r.key for r in study.runs}) == len(study.runs)
    kinds = Counter(r.kind for r in study.runs)
    assert kinds["baseline"] == 2
    modes = {r.config.prompting for r in study.runs if r.kind == "baseline"}
    assert modes == {"zero-shot", "prompt-engineered"}
    finetunes = [r.config for r in study.runs if r.kind == "finetune"]
    assert sorted(c.poison_rate for c in finetunes if c.poison_rate) == [0.25, 0.5, 0.75, 1.0]
    single = sorted(c.tasks[0] for c in finetunes if len(c.tasks) == 1)
    assert single == ["harmonization", "impression", "labeling"]
    assert all(r.config.study == study.name for r in study.runs)


def test_paper_study_is_the_papers_matrix():
    study = load_study(ROOT / "studies" / "paper.yaml")
    finetunes = [r.config for r in study.runs if r.kind == "finetune"]
    assert len(finetunes) == 12
    assert {c.model for c in finetunes if len(c.tasks) == 3 and not c.poison_rate} == {
        "opt-350m", "phi-4-mini", "llama-3.2-1b", "mistral-7b", "qwen3-4b"}
    assert {(c.epochs, c.checkpoint_epochs, c.batch_size, c.learning_rate) for c in finetunes} == {
        (100, (2, 5, 20, 100), 4, 8e-4)}
    assert {c.model for c in finetunes if c.poison_rate or len(c.tasks) == 1} == {"opt-350m"}
    baselines = [r.config for r in study.runs if r.kind == "baseline"]
    assert {(b.backend, b.model, b.allow_remote) for b in baselines} == {("openai", "gpt-4o", False)}
    allowed = load_study(ROOT / "studies" / "paper.yaml", {"allow_remote": True})
    assert all(r.config.allow_remote for r in allowed.runs if r.kind == "baseline")


def test_run_keys_follow_result_relevant_settings_only(tmp_path):
    base = {"name": "k", "finetune": {"epochs": 2, "checkpoint_epochs": [2]}, "runs": [{"name": "a"}]}
    key = load_study(write_study(tmp_path, base)).runs[0].key
    renamed = {**base, "runs": [{"name": "b", "device": "cpu"}]}
    assert load_study(write_study(tmp_path, renamed)).runs[0].key == key
    assert load_study(write_study(tmp_path, base), {"epochs": 3}).runs[0].key != key
    coerced = load_study(write_study(tmp_path, base), {"learning_rate": "8e-4"})
    assert coerced.runs[0].config.learning_rate == 8e-4


@pytest.mark.parametrize("change, message", [
    ({"runs": [{"name": "a", "epoch": 3}]}, "unknown finetune setting 'epoch'; valid:"),
    ({"runs": [{"name": "a"}, {"name": "b"}]}, "declare the same settings"),
    ({"runs": [{"name": "a", "seed": 1}, {"name": "a", "seed": 2}]}, "two runs are named"),
    ({"runs": [{"name": "a", "kind": "sweep"}]}, "kind must be one of"),
    ({"runs": [{"name": "a", "study": "x"}]}, "set by the study"),
    ({"name": "bad name"}, "letters, digits"),
    ({"runs": [{"name": "a", "checkpoint_epochs": [5]}]}, "run 'a': --checkpoint-epochs"),
])
def test_study_errors_name_the_run_and_the_fix(tmp_path, change, message):
    data = {"name": "e", "finetune": {"epochs": 2, "checkpoint_epochs": [2]}, "runs": [{"name": "a"}]}
    data.update(change)
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(StudyError, match=message):
        load_study(path)


# ---------------------------------------------------------------- claims


def test_two_workers_claim_disjoint_runs(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    ClaimStore(url)  # schema first, as a deployment would
    keys = [f"run-{i}" for i in range(30)]
    won: dict[str, list[str]] = {"w1": [], "w2": []}
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        store, start = ClaimStore(url), time.time()
        barrier.wait()
        for key in keys:
            if store.claim("s", key, name, start):
                won[name].append(key)

    threads = [threading.Thread(target=worker, args=(w,)) for w in won]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(won["w1"]) & set(won["w2"])
    assert sorted(won["w1"] + won["w2"]) == sorted(keys)


def test_stale_failed_and_own_claims_are_taken_over_only_when_they_should_be(tmp_path):
    store = ClaimStore(f"sqlite:///{tmp_path / 'claims.db'}", stale_after_s=0.2)
    start = time.time()
    assert store.claim("s", "k1", "a", start)
    assert not store.claim("s", "k1", "b", start)  # live claim
    assert store.claim("s", "k1", "a", start)  # a worker restarted under its own id
    time.sleep(0.3)
    assert store.claim("s", "k1", "b", start)  # a's heartbeat is stale now
    assert not store.heartbeat("s", "k1", "a") and store.heartbeat("s", "k1", "b")

    assert store.claim("s", "k2", "a", start)
    store.finish("s", "k2", "a", "failed")
    assert not store.claim("s", "k2", "b", start)  # b started before the failure: no retry alongside
    assert store.claim("s", "k2", "b", time.time() + 1)  # a later invocation retries it
    assert store.get("s", "k2").worker == "b" and store.get("s", "k2").status == "running"


def test_heartbeat_keeps_a_long_run_claimed(tmp_path):
    from pipelines.studies.claims import Heartbeat

    store = ClaimStore(f"sqlite:///{tmp_path / 'claims.db'}", stale_after_s=0.3)
    assert store.claim("s", "k", "a", time.time())
    with Heartbeat(store, "s", "k", "a", interval_s=0.05):
        time.sleep(0.6)
        assert store.get("s", "k").live(0.3)
        assert not store.claim("s", "k", "b", time.time())


def test_two_study_workers_run_each_run_once(store, tmp_path):
    study = load_study(fake_study(tmp_path, 6))
    mlflow.set_experiment(study.experiment)  # create the store's schema before the threads use it
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    ClaimStore(url)
    executed: list[tuple[str, str]] = []

    def make_executor(worker: str):
        def execute(study_, run):
            time.sleep(0.05)
            executed.append((worker, run.name))
            return f"fake-{run.name}"
        return execute

    reports = {}

    def worker(name: str) -> None:
        reports[name] = run_study(study, ClaimStore(url), name, execute=make_executor(name), post_steps=False)

    threads = [threading.Thread(target=worker, args=(w,)) for w in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(name for _, name in executed) == sorted(r.name for r in study.runs)
    for name, report in reports.items():
        ran = {o.name for o in report.outcomes if o.status == "ran"}
        assert ran == {run for w, run in executed if w == name}
        assert all(o.status in ("ran", "elsewhere") for o in report.outcomes)


def test_a_failed_run_is_reported_and_the_rest_go_on_unless_fail_fast(store, tmp_path):
    study = load_study(fake_study(tmp_path, 3))

    def execute(study_, run):
        if run.name == "run-1":
            raise RuntimeError("out of memory")
        return "fake"

    report = run_study(study, ClaimStore(f"sqlite:///{tmp_path / 'c1.db'}"), "w", execute=execute,
                       post_steps=False)
    assert [o.status for o in report.outcomes] == ["ran", "failed", "ran"]
    assert "out of memory" in report.failed[0].detail
    report = run_study(study, ClaimStore(f"sqlite:///{tmp_path / 'c2.db'}"), "w", execute=execute,
                       post_steps=False, fail_fast=True)
    assert [o.status for o in report.outcomes] == ["ran", "failed"]
    with pytest.raises(ValueError, match="matches none"):
        run_study(study, ClaimStore(f"sqlite:///{tmp_path / 'c2.db'}"), "w", execute=execute, only=["x*"])


def test_plan_command_prints_the_matrix_and_flags_remote_baselines(store, capsys):
    from pipelines.study import main

    assert main([str(ROOT / "studies" / "paper.yaml"), "--plan", "--set", "eval_limit=2;train_limit=2"]) == 0
    out = capsys.readouterr().out
    assert "study 'paper'" in out and "0 done, 14 to run" in out
    assert out.count("refused without --allow-remote") == 2
    assert "opt-350m-multitask-poison0.25" in out and "100 ep @ 2,5,20,100, bs 4, lr 0.0008" in out


def test_plan_never_prints_a_password_given_in_the_endpoint_url(store, tmp_path, capsys):
    from pipelines.study import main

    path = write_study(tmp_path, {
        "name": "secret-url",
        "baseline": {"backend": "openai", "model": "gpt-4o",
                     "base_url": "https://team:s3cret-pass@llm.example.org/v1"},
        "runs": [{"name": "gpt-zero-shot", "kind": "baseline", "prompting": "zero-shot"}]})
    assert main([str(path), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "https://team:***@llm.example.org/v1" in out and "s3cret-pass" not in out


def fake_analysis(monkeypatch, log_run: bool = False) -> list:
    """Stand in for the analysis job in post_study: records each (config, out_dir, active run) it is
    given; its 'publish' writes no tables and logs a real role=analysis run only when `log_run`."""
    import analysis.job
    from analysis.outputs import log_analysis_run

    calls = []

    class Result:
        runs, reference = ["a", "b", "c"], type("Reference", (), {"run_id": "reference-id"})

    def run_analysis(config, client=None):
        calls.append({"config": config, "active": mlflow.active_run(), "uri": client.tracking_uri})
        return Result()

    def publish(result, out_dir, log_to_mlflow=True, experiment=None):
        calls[-1]["out_dir"] = out_dir
        if not log_run:
            return None
        out_dir.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.get_experiment_by_name(experiment or "Default").experiment_id
        return log_analysis_run(out_dir, {}, {}, experiment_id, "fake")

    monkeypatch.setattr(analysis.job, "run_analysis", run_analysis)
    monkeypatch.setattr(analysis.job, "publish", publish)
    return calls


def test_post_steps_call_the_analysis_with_the_baselines_and_skip_the_report_without_tables(
        store, tmp_path, monkeypatch):
    study = load_study(fake_study(tmp_path, 1))
    calls = fake_analysis(monkeypatch)
    notes = post_study(study, ["baseline-run-id"])
    config = calls[0]["config"]
    assert (config.selection.experiment, config.selection.study) == (study.experiment, "fake")
    assert config.include == ("baseline-run-id",) and calls[0]["uri"] == store
    assert calls[0]["out_dir"] == Path("outputs") / "studies" / "fake" / "analysis"
    assert notes[0].startswith("analysis: done") and "report: skipped" in notes[1]
    assert "3 runs analyzed against reference reference-id" in notes[0] and "analysis run" not in notes[0]


def test_post_steps_log_their_own_runs_beside_an_active_study_run(store, tmp_path, monkeypatch):
    """Under `mlflow run` the study's own run is active: the analysis does not see it and logs a run
    of its own (as it did as a subprocess); the study's run stays active."""
    study = load_study(write_study(tmp_path, {"name": "fake", "analysis": {"args": ["--log-experiment", "Default"]},
                                              "runs": [{"name": "run-0"}]}))
    calls = fake_analysis(monkeypatch, log_run=True)
    monkeypatch.setattr("dashboards.report.report_from_tables", lambda *a, **kw: (_ for _ in ()).throw(
        FileNotFoundError("summary.json")))
    with mlflow.start_run(experiment_id="0") as outer:  # Default
        notes = post_study(study, [])
        assert mlflow.active_run().info.run_id == outer.info.run_id
    assert calls[0]["active"] is None
    analysis_run = notes[0].rsplit("analysis run: ", 1)[-1]
    assert notes[0].startswith("analysis: done") and analysis_run != outer.info.run_id
    run = MlflowClient().get_run(analysis_run)
    assert run.data.tags["role"] == "analysis" and run.info.status == "FINISHED"
    assert notes[1] == "report: failed: FileNotFoundError: summary.json"


def test_a_failing_post_step_only_warns_in_one_line(store, tmp_path, monkeypatch, caplog):
    import analysis.job
    from analysis.runs import SelectionError

    def no_runs(config, client=None):
        raise SelectionError("no runs match\n  'tags.study = fake'")

    monkeypatch.setattr(analysis.job, "run_analysis", no_runs)
    study = load_study(fake_study(tmp_path, 1))
    with caplog.at_level("INFO", logger=study_runner.__name__):
        notes = post_study(study, [])
    assert notes == ["analysis: failed: SelectionError: no runs match 'tags.study = fake'",
                     "report: skipped (no analysis tables)"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"study fake: {notes[0]}"]

    # bad arguments in the study file: a failed step, not the study's exit
    study.analysis_args = ["--no-such-option"]
    notes = post_study(study, [])
    assert notes[0].startswith("analysis: failed: ValueError: unrecognized arguments: --no-such-option")


# ---------------------------------------------------------------- a tiny real study


def test_plan_run_interrupt_resume_and_skip_a_tiny_study(store, tiny_model_dir, tmp_path):
    path = write_study(tmp_path, {
        "name": "tiny",
        "shared": {"data": "synthetic?reports=12&series=20", "tasks": ["harmonization"], "eval_limit": 2,
                   "max_new_tokens": 16, "device": "cpu"},
        "finetune": {"model": str(tiny_model_dir), "epochs": 1, "checkpoint_epochs": [1], "train_limit": 2,
                     "batch_size": 2},
        "baseline": {"backend": "local", "model": str(tiny_model_dir)},
        "runs": [{"name": "tiny-ft"}, {"name": "tiny-zero-shot", "kind": "baseline"}],
        "analysis": {"args": ["--param", "epoch=1",
                              "--reference", f"model={tiny_model_dir};tasks=harmonization;epoch=1"]},
    })
    study = load_study(path)
    claims = ClaimStore(f"sqlite:///{tmp_path / 'claims.db'}")

    # -- plan: nothing exists yet; the cost is examples x epochs and tokens
    costs = {run.name: estimate_cost(run) for run in study.runs}
    assert costs["tiny-ft"].examples == 2 and costs["tiny-ft"].train_tokens > 0
    assert costs["tiny-zero-shot"].examples == 2 and costs["tiny-zero-shot"].eval_tokens > 0
    plan = format_plan(study, run_states(study, claims), costs)
    assert "0 done, 2 to run" in plan and plan.count("missing") == 2

    # -- an interrupted first attempt: the fine-tune left RUNNING by a dead worker, the baseline FAILED
    ft, bl = study.runs
    experiment_id = mlflow.set_experiment(study.experiment).experiment_id
    client = MlflowClient()
    dead = client.create_run(experiment_id, tags={"study": "tiny", **run_tags(study, ft)}).info.run_id
    failed = client.create_run(experiment_id, tags={"study": "tiny", **run_tags(study, bl)}).info.run_id
    client.set_terminated(failed, "FAILED")
    assert claims.claim("tiny", ft.key, "dead-worker", time.time())
    with claims.engine.begin() as conn:  # its last heartbeat was long ago
        conn.execute(claims_table().update().values(heartbeat=time.time() - 10_000))
    states = run_states(study, claims)
    assert (states["tiny-ft"].state, states["tiny-zero-shot"].state) == ("stale", "failed")

    # -- resume: both run again, the stale run is closed as KILLED
    executed = []

    def execute(study_, run):
        executed.append(run.name)
        return execute_run(study_, run)

    report = run_study(study, claims, "w1", execute=execute, post_steps=False)
    assert [o.status for o in report.outcomes] == ["ran", "ran"] and report.complete
    assert client.get_run(dead).info.status == "KILLED"
    finished = {o.name: client.get_run(o.run_id) for o in report.outcomes}
    assert finished["tiny-ft"].data.tags["role"] == "finetune"
    assert finished["tiny-zero-shot"].data.tags["role"] == "baseline"
    assert all(r.info.status == "FINISHED" and r.data.tags["study"] == "tiny" for r in finished.values())

    # -- again: everything is done, nothing runs
    assert "2 done, 0 to run" in format_plan(study, run_states(study, claims))
    report = run_study(study, claims, "w2", execute=execute, post_steps=False)
    assert [o.status for o in report.outcomes] == ["skipped", "skipped"]
    assert executed == ["tiny-ft", "tiny-zero-shot"]

    # -- the post steps for real: the analysis (with the baseline), then the report on its tables
    notes = post_study(study, [finished["tiny-zero-shot"].info.run_id])
    assert notes[0].startswith("analysis: done") and notes[1].startswith("report: done"), notes
    assert (Path("outputs") / "studies" / "tiny" / "report" / "report.html").is_file()
    analyses = mlflow.search_runs(experiment_ids=[experiment_id], output_format="list",
                                  filter_string="tags.role = 'analysis'")
    assert len(analyses) == 1
    assert any(a.path == "report" for a in client.list_artifacts(analyses[0].info.run_id))


def claims_table():
    from pipelines.studies.claims import CLAIMS

    return CLAIMS


def test_plan_tells_how_the_study_differs_from_the_paper_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """A new user's `study studies/paper.yaml --plan` in an empty folder: the deviations (synthetic
    data, constrained decoding), the weights missing here with their `hf download`, the hours; and
    the folder (no tracking store, no claims database) and the caches stay as they were."""
    from benchmarks.study_estimate import estimate_study
    from pipelines.study import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("CLINICAL_SLM_CACHE", str(tmp_path / "lab"))
    (tmp_path / "hub").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    paper = ROOT / "studies" / "paper.yaml"

    assert main([str(paper), "--plan"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert "14 of 14 runs train or score on synthetic (generated) data" in out
    assert "12 of 12 fine-tunes use constrained decoding" in out and "--set decoding=free" in out
    assert f"opt-350m (8 runs): hf download facebook/opt-350m --local-dir {tmp_path / 'lab' / 'opt-350m'}" in out
    for model in ("phi-4-mini", "llama-3.2-1b", "mistral-7b", "qwen3-4b"):
        assert f"  {model} (1 run): hf download " in out
    assert "smollm2-135m" not in out  # the embedded model is always here
    throughput = json.loads((ROOT / "benchmarks" / "results" / "h200-throughput.json").read_text())
    hours = sum(e.hours for e in estimate_study(str(paper), throughput)[0])
    assert f"about {hours:.1f} h of fine-tuning" in out and 20 < hours < 40  # README: about 28 GPU-hours

    # with the paper's decoding, that deviation is gone
    assert main([str(paper), "--plan", "--set", "decoding=free"]) == 0
    out = capsys.readouterr().out
    assert "synthetic (generated)" in out and "constrained decoding" not in out
