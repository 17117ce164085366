"""Sweep files, objective, samplers/pruners, storage and report helpers: fast, no training."""
from __future__ import annotations

import copy
import shlex
import socket
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pipelines import finetune, sweep
from pipelines.redaction import redact_url
from pipelines.registry import UnknownNameError
from pipelines.sweeps.report import rerun_command, write_figures
from pipelines.sweeps.runner import SweepOptions, open_study
from pipelines.sweeps.samplers import build_pruner, build_sampler
from pipelines.sweeps.space import Objective, ObjectiveMetricMissing, SweepSpaceError, load_space, parse_space
from pipelines.sweeps.storage import (
    StaleTrialHandler,
    StorageOptions,
    fail_stale_trials,
    open_storage,
    process_alive,
    storage_kind,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "sweeps").glob("**/*.yaml"))
BASE = {
    "objective": {"metrics": "headline"},
    "fixed": {"tasks": ["harmonization"], "epochs": 4, "train_limit": 4},
    "evaluate_at": [1, 2, 20],
    "params": {"learning_rate": {"type": "float", "low": "1e-4", "high": 1e-2, "log": True},
               "lora_r": {"type": "categorical", "choices": [2, 4]}},
}


def space_with(**changes):
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            data[section][name] = value
        else:
            data[section] = value
    return parse_space(data, "test.yaml")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_sweep_files_load_and_open_with_their_run_command(path):
    space = load_space(path)
    assert space.params and space.resolved_objective().metrics
    first = path.read_text().splitlines()[0]
    assert first.startswith("#")
    assert f"python -m pipelines.sweep --space {path.relative_to(ROOT)}" in path.read_text()


def test_default_space_contains_the_papers_settings_and_headline_objective():
    space = load_space(ROOT / "sweeps" / "default.yaml")
    lr, batch, epochs = space.params["learning_rate"], space.params["batch_size"], space.params["epochs"]
    assert lr.log and lr.low <= 8e-4 <= lr.high
    assert 4 in batch.choices and 100 in epochs.choices
    for name in ("grad_accum", "lora_r", "lora_alpha", "lora_dropout", "lora_targets"):
        assert name in space.params
    objective = space.resolved_objective()
    assert objective.metrics == ("labeling/f1_macro", "harmonization/accuracy", "impression/rougeL")
    assert objective.name.startswith("mean(") and objective.direction == "maximize"
    assert space.sampler == {"name": "tpe", "seed": 42} and space.pruner["name"] == "median"


def test_objective_combinations_and_missing_metric():
    metrics = {"a/x": 0.2, "b/y": 0.6, "perf/a/s": 9.0}
    assert Objective(("a/x", "b/y")).value(metrics) == pytest.approx(0.4)
    assert Objective(("a/x", "b/y"), combine="min").value(metrics) == 0.2
    assert Objective(("b/y",)).name == "b/y"
    with pytest.raises(ObjectiveMetricMissing, match=r"available: a/x, b/y"):
        Objective(("a/z",)).value(metrics)


def test_trial_config_scores_on_validation_and_evaluates_at_reached_epochs():
    space = space_with()
    config = space.trial_config({"learning_rate": 1e-3, "lora_r": 4})
    assert config.eval_split == "validation"
    assert config.checkpoint_epochs == (1, 2, 4)  # 20 is beyond 4 epochs; the last epoch always
    assert config.tasks == ("harmonization",) and config.learning_rate == 1e-3
    assert space.params["learning_rate"].low == 1e-4  # "1e-4" (a YAML string) coerced
    preset = space_with(params__lora_targets={"type": "categorical", "choices": ["preset", "q_proj,k_proj"]})
    assert preset.trial_config({"lora_targets": "preset"}).lora_targets == ()
    assert preset.trial_config({"lora_targets": "q_proj,k_proj"}).lora_targets == ("q_proj", "k_proj")


def test_fixing_a_searched_value_removes_it_from_the_search():
    space = space_with()
    fixed = space.with_fixed({"lora_r": "8", "tasks": "labeling,impression"})
    assert "lora_r" not in fixed.params and fixed.fixed["lora_r"] == 8
    assert fixed.resolved_objective().metrics == ("labeling/f1_macro", "impression/rougeL")
    assert fixed.fingerprint() != space.fingerprint()


@pytest.mark.parametrize("changes, message", [
    ({"params__eval_split": {"type": "categorical", "choices": ["test"]}}, "set by the sweep itself"),
    ({"fixed__checkpoint_epochs": "1,2"}, "set by the sweep itself"),
    ({"params__lora_rank": {"type": "int", "low": 1, "high": 4}},
     "unknown parameter 'lora_rank'; valid names"),
    ({"params__lora_r": {"type": "float", "low": 1, "high": 4}}, "is an integer"),
    ({"params__model": {"type": "int", "low": 1, "high": 4}}, "type: categorical"),
    ({"params__learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}},
     "log scale needs low > 0"),
    ({"params__learning_rate": {"type": "float", "low": 1, "high": 0.1}}, "low <= high"),
    ({"params__lora_r": {"type": "categorical", "choices": []}}, "non-empty `choices:`"),
    ({"params__lora_r": {"type": "uniform"}}, "needs `type:`"),
    ({"fixed__lora_r": 8}, "both fixed and searched"),
    ({"fixed__batch_size": "four"}, "batch_size must be a number"),
    ({"fixed__batch_size": 0}, "test.yaml: the fixed values fail: --batch-size must be >= 1"),
    ({"params__lora_dropout": {"type": "float", "low": 0, "high": 1}},
     "params.lora_dropout = 1.0 fails: --lora-dropout must be within [0, 1)"),
    ({"objective": {"metrics": ["labeling/f1_macro"]}}, "for a trained task"),
    ({"objective": {"metrics": "headline", "direction": "up"}}, "direction must be one of"),
    ({"objective": {"metrics": "headline", "combine": "median"}},
     "objective.combine 'median' is unknown; valid: mean, min, max"),
    ({"evaluate_at": [0, 2]}, "must be >= 1"),
    ({"params": {}}, "`params:` is empty"),
    ({"samplers": {"name": "tpe"}}, "unknown section(s) ['samplers']"),
])
def test_invalid_sweep_files_fail_with_the_key_and_the_fix(changes, message):
    with pytest.raises(ValueError) as excinfo:
        space_with(**changes)
    assert message in str(excinfo.value)


def test_missing_sweep_file_lists_shipped_ones(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SweepSpaceError, match="shipped files: sweeps/default.yaml"):
        load_space("sweeps/nope.yaml")


def test_samplers_and_pruners_by_name():
    sampler = build_sampler({"name": "tpe", "seed": 42}, worker_index=2)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert isinstance(build_sampler({"name": "random", "seed": 1}), optuna.samplers.RandomSampler)
    assert isinstance(build_pruner({"name": "median"}), optuna.pruners.MedianPruner)
    assert isinstance(build_pruner({"name": "threshold", "lower": 0.5}), optuna.pruners.ThresholdPruner)
    with pytest.raises(UnknownNameError, match="valid names: cmaes, gp, qmc, random, tpe"):
        build_sampler({"name": "bayes"})
    with pytest.raises(SweepSpaceError, match="accepted: n_startup_trials, n_warmup_steps"):
        build_pruner({"name": "median", "patience": 3})


def test_workers_draw_different_start_up_trials_from_one_seed():
    def first_values(index):
        study = optuna.create_study(sampler=build_sampler({"name": "tpe", "seed": 42}, index))
        return [study.ask().suggest_float("x", 0, 1) for _ in range(3)]

    assert first_values(0) == first_values(0)
    assert first_values(0) != first_values(1)


def test_storage_urls_and_redaction():
    assert storage_kind("optuna-journal.log") == "journal-file"
    assert storage_kind("/shared/sweeps/a.log") == "journal-file"
    assert storage_kind("postgresql://u:p@db/optuna") == "rdb"
    assert storage_kind("sqlite:///x.db") == "rdb"
    assert storage_kind("redis://cache:6379") == "journal-redis"
    assert storage_kind("grpc://proxy:13000") == "grpc"
    assert redact_url("postgresql://optuna:s3cret@db:5432/optuna") == "postgresql://optuna:***@db:5432/optuna"
    assert redact_url("postgresql://optuna@db/optuna") == "postgresql://optuna@db/optuna"
    with pytest.raises(ValueError, match="below --grace-period"):
        StorageOptions(heartbeat_interval=10, grace_period=10)


def test_journal_file_storage_fails_and_requeues_trials_of_dead_local_workers(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not process_alive(dead.pid) and process_alive(1)
    handler = StaleTrialHandler(max_retry=1)
    study = optuna.create_study(storage=open_storage(StorageOptions(str(tmp_path / "j.log")), handler))
    orphan, live = study.ask(), study.ask()
    orphan.suggest_float("x", 0, 1)
    for trial, pid in ((orphan, dead.pid), (live, 1)):
        trial.set_user_attr("worker_host", socket.gethostname())
        trial.set_user_attr("worker_pid", pid)
    assert fail_stale_trials(study, handler) == [orphan.number]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    retry = study.get_trials()[2]
    assert retry.params == orphan.params and retry.system_attrs["failed_trial"] == orphan.number
    assert fail_stale_trials(study, handler) == []  # once only


def test_joining_a_study_requires_the_same_space_and_direction(tmp_path):
    storage = StorageOptions(str(tmp_path / "j.log"))
    first = SweepOptions(space=space_with(), storage=storage, study_name="shared")
    open_study(first, StaleTrialHandler(1))
    open_study(SweepOptions(space=space_with(), storage=storage, study_name="shared"), StaleTrialHandler(1))
    other = space_with(params__lora_r={"type": "categorical", "choices": [2, 4, 8]})
    with pytest.raises(SweepSpaceError, match="another search space"):
        open_study(SweepOptions(space=other, storage=storage, study_name="shared"), StaleTrialHandler(1))
    minimize = space_with(objective={"metrics": "headline", "direction": "minimize"})
    with pytest.raises(SweepSpaceError, match="the sweep file says minimize"):
        open_study(SweepOptions(space=minimize, storage=storage, study_name="shared"), StaleTrialHandler(1))


def test_rerun_command_is_a_finetune_of_the_trial_on_the_test_split():
    space = space_with(fixed__model="opt-350m")
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    values = {name: spec.suggest(trial) for name, spec in space.params.items()}
    study.tell(trial, 0.5)
    command = rerun_command(space, study.best_trial, "lab", "lr-best")
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "pipelines.finetune"] and "--eval-split" not in argv
    config = finetune.parse_args(argv[3:])
    expected = space.trial_config(values)
    for name in ("model", "tasks", "epochs", "checkpoint_epochs", "learning_rate", "lora_r", "train_limit"):
        assert getattr(config, name) == getattr(expected, name), name
    assert config.eval_split == "test" and config.study == "lab" and config.run_name == "lr-best"


def test_figures_need_enough_completed_trials(tmp_path):
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    status = write_figures(study, tmp_path)
    assert status["param_importances"].startswith("skipped: needs 2 completed trial(s), the study has 1")
    html = (tmp_path / "optimization_history.html").read_text()
    assert "<script src=" not in html and len(html) > 1_000_000  # plotly.js inlined: opens offline
    assert {p.name for p in tmp_path.iterdir()} == {"optimization_history.html", "parallel_coordinate.html",
                                                     "slice.html"}


def test_command_line_overrides_the_sweep_file(tmp_path):
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(BASE))
    options = sweep.parse_args([
        "--space", str(tmp_path / "s.yaml"), "--tasks", "labeling", "--set", "lora_r=16",
        "--sampler", "random",
        "--seed", "7", "--pruner", "none", "--n-trials", "3", "--timeout", "0", "--study-name", "s",
        "--storage", "postgresql://u:p@db/o", "--heartbeat-interval", "5", "--grace-period", "20",
    ])
    assert options.space.resolved_objective().metrics == ("labeling/f1_macro",)
    assert "lora_r" not in options.space.params and options.space.fixed["lora_r"] == 16
    assert options.space.sampler == {"name": "random", "seed": 7} and options.space.pruner == {"name": "none"}
    assert options.n_trials == 3 and options.timeout is None and options.study_tag == "s"
    assert options.storage.heartbeat_interval == 5 and options.storage.grace_period == 20
    assert sweep.main(["--space", str(tmp_path / "s.yaml"), "--set", "eval_split=test"]) == 2


def test_data_specs_lists_the_fixed_data_or_each_searched_choice():
    assert space_with(fixed__data="synthetic?reports=40").data_specs() == ["synthetic?reports=40"]
    searched = space_with(params__data={"type": "categorical", "choices": ["synthetic?seed=1", "synthetic?seed=2"]})
    assert searched.data_specs() == ["synthetic?seed=1", "synthetic?seed=2"]
