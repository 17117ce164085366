"""The command-line conventions every entry point shares (pipelines.cli): help that explains each
option and lists its choices, one boolean spelling, no abbreviations, one-line usage errors, and
--config files that repeat a run."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json

import pytest
import yaml
from test_fuzz_cli import run_main

from pipelines import cli
from pipelines.config import DECODINGS, DEMO_PRESET, PRECISIONS, EvaluateConfig, FinetuneConfig, config_document
from pipelines.models import MODEL_PRESETS

# Every `python -m` entry point (module, its main).
ENTRY_POINTS = [
    "pipelines.finetune", "pipelines.evaluate", "pipelines.baseline", "pipelines.harmonize",
    "pipelines.register", "pipelines.study", "pipelines.sweep", "pipelines.upload_outputs",
    "analysis.analyze", "analysis.reader_study", "dashboards.__main__", "benchmarks.__main__",
    "benchmarks.throughput", "benchmarks.study_estimate",
]
BOOLEAN_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
                   argparse.BooleanOptionalAction)


def parser_of(module: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser an entry point builds, caught when `--help` prints it."""
    caught: list[argparse.ArgumentParser] = []

    def catch(self, file=None):
        caught.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(cli.ArgumentParser, "print_help", catch)
    argv = ["export", "--help"] if module == "analysis.reader_study" else ["--help"]
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()):
        importlib.import_module(module).main(argv)
    assert caught, f"{module} does not build a pipelines.cli.ArgumentParser"
    return caught[-1]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_option_has_a_description_and_its_choices(module, monkeypatch):
    parser = parser_of(module, monkeypatch)
    assert parser.allow_abbrev is False
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        text = action.help or ""
        assert len(text.split()) >= 2 and not text.startswith("default:"), f"{module} {name}: {text!r}"
        # one boolean convention: a Switch (`--x`, `--x true|false`, `--no-x`), never store_true & co.
        assert not isinstance(action, BOOLEAN_ACTIONS), f"{module} {name} is a {type(action).__name__}"
        if action.dest in cli.FIELD_CHOICES and action.option_strings:  # refused, or at least listed
            valid = list(cli.FIELD_CHOICES[action.dest]())
            assert list(action.choices or []) == valid or all(v in text for v in valid), f"{module} {name}"


def test_help_lists_presets_decodings_precisions_and_the_demo_defaults(capsys):
    from pipelines import finetune

    with pytest.raises(SystemExit):
        finetune.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in MODEL_PRESETS.names():
        assert name in out
    assert "{" + ",".join(DECODINGS) + "}" in out and "{" + ",".join(PRECISIONS) + "}" in out
    assert "--packing [true|false], --no-packing" in out
    assert f"(default: {DEMO_PRESET['epochs']})" in out and "--study-tag" in out


def test_a_bare_finetune_is_the_demo_and_the_paper_is_a_preset():
    from pipelines.finetune import parse_args

    demo, paper = parse_args([]), parse_args(["--preset", "paper"])
    assert demo == FinetuneConfig(**DEMO_PRESET) and paper == FinetuneConfig()
    assert (demo.epochs, paper.epochs) == (5, 100)


@pytest.mark.parametrize("argv, named", [
    (["--epoch", "3"], "--epoch 3; did you mean --epochs?"),      # no abbreviation of --epochs
    (["--lr", "1"], "--lr"),
    (["--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
    (["--decoding", "beam"], "argument --decoding: invalid choice: 'beam'"),
    (["--packing", "maybe"], "unrecognized arguments: maybe"),
])
def test_mistakes_are_one_line_naming_the_option(argv, named):
    from pipelines import finetune

    code, err = run_main(finetune.main, argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and named in err, err


def test_one_boolean_spelling_with_the_old_ones_still_working():
    from analysis.analyze import build_parser as analyze_parser
    from pipelines.finetune import parse_args
    from pipelines.study import parse_args as study_args

    assert [parse_args(a).packing for a in ([], ["--packing", "false"], ["--no-packing"], ["--packing"])] == \
        [True, False, False, True]
    assert study_args(["--plan", "s.yaml"]).plan is True  # a bare switch never takes the next word
    assert study_args(["s.yaml", "--plan", "false"]).plan is False
    assert study_args(["s.yaml", "--no-analysis"]).analysis is False
    assert study_args(["s.yaml", "--no-analysis", "true"]).analysis is False  # the old MLproject spelling
    assert study_args(["s.yaml", "--analysis", "false"]).analysis is False
    assert analyze_parser().parse_args(["--no-log"]).log is False


def test_the_three_studies_have_distinct_names_and_the_old_ones_still_work():
    from analysis.analyze import build_parser as analyze_parser
    from pipelines.finetune import parse_args
    from pipelines.sweep import build_parser as sweep_parser

    assert parse_args(["--study-tag", "t"]).study == parse_args(["--study", "t"]).study == "t"
    sweep = sweep_parser().parse_args(["--optuna-study", "lr", "--study-tag", "t"])
    assert (sweep.study_name, sweep.study) == ("lr", "t")
    assert sweep_parser().parse_args(["--study-name", "lr"]).study_name == "lr"
    assert analyze_parser().parse_args(["--study", "t"]).study == "t"


# ---------------------------------------------------------------- --config


def test_config_file_round_trip_repeats_the_run(tmp_path):
    from pipelines.finetune import parse_args

    original = parse_args(["--preset", "paper", "--model", "opt-350m", "--tasks", "labeling,impression",
                           "--checkpoint-epochs", "3,7", "--epochs", "7", "--learning-rate", "3e-4",
                           "--lora-targets", "q_proj,k_proj", "--no-packing", "--decoding", "free"])
    logged = tmp_path / "finetune.yaml"
    logged.write_text(yaml.dump(config_document(original)))  # what the run logs (mlflow.log_dict)
    assert parse_args(["--config", str(logged)]) == original
    # ... whatever the preset, and explicit options still win over the file
    assert parse_args(["--preset", "demo", "--config", str(logged)]) == original
    assert parse_args(["--config", str(logged), "--epochs", "9"]).epochs == 9


def test_config_file_written_by_hand(tmp_path):
    from pipelines.finetune import parse_args

    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\ncheckpoint-epochs: [1, 3]\nlearning_rate: 8e-4\ntasks: labeling\npacking: off\n")
    cfg = parse_args(["--config", str(path)])  # YAML reads 8e-4 as a string: converted like the CLI
    assert (cfg.epochs, cfg.checkpoint_epochs, cfg.learning_rate, cfg.tasks, cfg.packing) == \
        (3, (1, 3), 8e-4, ("labeling",), False)
    assert cfg.train_limit == DEMO_PRESET["train_limit"]  # the preset under the file
    evaluate = EvaluateConfig(**cli.load_config_file(_json(tmp_path, config_document(EvaluateConfig(epoch=2))),
                                                     EvaluateConfig))
    assert evaluate == EvaluateConfig(epoch=2)
    for text, named in [("epoch: 3\n", "unknown option 'epoch' (did you mean 'epochs'?)"),
                        ("epochs: many\n", "option 'epochs' must be int, got 'many'"), ("- 1\n", "mapping")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=r"--config .*run.yaml: ") as info:
            parse_args(["--config", str(path)])
        assert named in str(info.value)


def _json(folder, data) -> str:
    path = folder / "evaluate.json"
    path.write_text(json.dumps(data))
    return str(path)
