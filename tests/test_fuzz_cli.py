"""Property tests: every entry point refuses an invalid option with exit status 2 and a message that
names the option, before any MLflow run exists.

Each property draws one invalid value for one option of an entry point (negative, zero, non-numeric,
inf/nan, unknown names, malformed lists and data specs), adds it to a command line that is
otherwise valid and tiny (the test model, 12 synthetic reports, one epoch: a value wrongly accepted
costs seconds, not hours) and calls the entry point's main(argv) in-process. The tracking store is a
SQLite file in a temporary folder; after every example it must hold no run. Two subprocess checks
run the real command lines.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.stats import CORRECTIONS

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = "synthetic?reports=12&series=12"

# Generated cases per property (recorded in README's Tests table).
N_FINETUNE = 60
N_EVALUATE = 40
N_BASELINE = 50
N_SWEEP = 40
N_STUDY = 30
N_ANALYZE = 40

# ---------------------------------------------------------------- invalid values

NOT_A_NUMBER = st.sampled_from(["abc", "1e", "--", "½", "0x10", "one", "", " "])
NOT_AN_INT = NOT_A_NUMBER | st.sampled_from(["1.5", "2e3", "1_0_"])
NON_FINITE = st.sampled_from(["inf", "-inf", "nan", "NaN", "Infinity"])


def below(limit: int) -> st.SearchStrategy[str]:
    """Integers below `limit` as text (zero and negatives, small and huge)."""
    return st.integers(max_value=limit - 1).map(str) | st.sampled_from([str(limit - 1), "-1", "-10000000000"])


def floats_outside(low: float | None, high: float | None, *, low_ok: bool = True) -> st.SearchStrategy[str]:
    """Finite floats outside [low, high] ((low, high] when not low_ok), as text; -0.0 counts as 0."""
    parts = []
    if low is not None:
        parts.append(st.floats(max_value=low, allow_nan=False, allow_infinity=False).filter(
            lambda x: x < low or (x == low and not low_ok)))
    if high is not None:
        parts.append(st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False))
    return st.one_of(*parts).map(repr)


UNKNOWN_NAME = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
BAD_TASKS = st.sampled_from(["", ",", "summarize", "labeling,summarize", "LABELING", "labeling;impression"])
# Specs the grammar refuses (checked with the options), and specs refused only when the data is
# loaded (a missing file, two report sources, a negative size).
SPEC_ERRORS = st.one_of(
    st.sampled_from(["", ",", "nosuchsource", ":x", "openi-csv", "labeled-csv", "series-table?class=x",
                     "synthetic?bogus=1", "synthetic?reports", "synthetic?reports&series=1"]),
    UNKNOWN_NAME.filter(lambda n: n != "synthetic").map(lambda n: f"{n}:/data/x.csv"),
)
LOAD_ERRORS = st.sampled_from(["openi-csv:/nonexistent/indiana.csv", "openi-csv:/a.csv,labeled-csv:/b.csv",
                               "dicom:/nonexistent", "synthetic?reports=-1", "series-table:/nonexistent.xlsx#2"])
BAD_DATA = SPEC_ERRORS | LOAD_ERRORS
DATA_NAMES = ("data", "nonexistent")  # the option, or the missing file it names
BAD_CHECKPOINTS = st.sampled_from(["", ",", "x", "1,x", "0", "-1", "1.5", "2;5", "1,,0"]) | st.integers(
    min_value=2).map(str)  # with --epochs 1, any epoch above 1


def choice_errors(option: str, valid: list[str], names: str | None = None) -> st.SearchStrategy:
    return UNKNOWN_NAME.filter(lambda v: v not in valid).map(lambda v: ([option, v], (names or option,)))


def option_errors(option: str, values: st.SearchStrategy[str],
                  names: str | tuple[str, ...] | None = None) -> st.SearchStrategy[tuple[list[str], tuple]]:
    """([option, value], what the message must contain, one of): the option unless `names` says."""
    wanted = (names,) if isinstance(names, str) else names or (option,)
    return values.map(lambda v: ([option, v], wanted))


# ---------------------------------------------------------------- running an entry point


def count_runs(uri: str) -> int:
    if not Path(uri.removeprefix("sqlite:///")).exists():
        return 0
    mlflow.set_tracking_uri(uri)
    return len(mlflow.search_runs(search_all_experiments=True, output_format="list"))


def run_main(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of main(argv); argparse errors exit through SystemExit."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


def assert_refused(main: Callable[[list[str]], int], argv: list[str], names: tuple[str, ...], uri: str) -> None:
    """Exit status 2, an error line naming the option (or one of `names`; case, '-' and '_' ignored),
    and no run in the store."""
    code, err = run_main(main, argv)

    def norm(text: str) -> str:
        return text.lower().replace("_", "-")

    errors = [norm(line) for line in err.splitlines() if "error" in line.lower()]
    assert code == 2, f"{argv}: exit {code}, stderr {err[-600:]!r}"
    assert any(norm(n) in line for n in names for line in errors), f"{argv}: none of {names} in {errors}"
    assert count_runs(uri) == 0, f"{argv}: a run was created"


@pytest.fixture
def empty_store(tmp_path, monkeypatch, migrated_db) -> str:
    """A migrated, empty SQLite store (MLFLOW_TRACKING_URI) and the temporary folder as cwd."""
    import shutil

    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


def check_property(strategy, main, base: list[str], uri: str, examples: int) -> None:
    @settings(max_examples=examples, deadline=None)
    @given(case=strategy)
    def check(case: tuple[list[str], tuple[str, ...]]) -> None:
        args, names = case
        assert_refused(main, [*base, *args], names, uri)

    check()


# ---------------------------------------------------------------- finetune

FINETUNE_ERRORS = st.one_of(
    *(option_errors(f"--{o}", below(1) | NOT_AN_INT) for o in
      ("epochs", "batch-size", "grad-accum", "lora-r", "lora-alpha", "max-seq-length", "eval-batch-size")),
    *(option_errors(f"--{o}", below(0) | NOT_AN_INT) for o in ("train-limit", "eval-limit", "max-new-tokens")),
    option_errors("--learning-rate", floats_outside(0.0, None, low_ok=False) | NON_FINITE | NOT_A_NUMBER),
    option_errors("--poison-rate", floats_outside(0.0, 1.0) | NON_FINITE | NOT_A_NUMBER),
    option_errors("--lora-dropout", floats_outside(0.0, 1.0) | st.just("1.0") | NON_FINITE),
    option_errors("--checkpoint-epochs", BAD_CHECKPOINTS),
    option_errors("--seed", NOT_AN_INT),
    choice_errors("--preset", ["paper", "demo"]),
    choice_errors("--precision", ["auto", "fp32", "bf16", "fp16"]),
    choice_errors("--eval-split", ["test", "validation"]),
    choice_errors("--decoding", ["constrained", "free"]),
    option_errors("--tasks", BAD_TASKS, "task"),
    option_errors("--model", UNKNOWN_NAME.map(lambda n: f"no-such-model-{n}"), "model"),
    option_errors("--device", st.sampled_from(["tpu", "cuda:99", "gpu", "mps:1", ""]), "device"),
    option_errors("--data", BAD_DATA, DATA_NAMES),
    option_errors("--experiment", st.sampled_from(["", " "]), "experiment"),
)


def test_finetune_refuses_bad_options_before_any_run(empty_store, tiny_model_dir) -> None:
    from pipelines import finetune

    base = ["--model", str(tiny_model_dir), "--epochs", "1", "--checkpoint-epochs", "1", "--tasks",
            "harmonization", "--data", TINY_DATA, "--train-limit", "2", "--eval-limit", "1"]
    check_property(FINETUNE_ERRORS, finetune.main, base, empty_store, N_FINETUNE)


# ---------------------------------------------------------------- evaluate

EVALUATE_ERRORS = st.one_of(
    *(option_errors(f"--{o}", below(0) | NOT_AN_INT) for o in ("epoch", "eval-limit", "max-new-tokens")),
    *(option_errors(f"--{o}", below(1) | NOT_AN_INT) for o in ("eval-batch-size", "max-seq-length")),
    choice_errors("--split", ["test", "all"]),
    choice_errors("--precision", ["auto", "fp32", "bf16", "fp16"]),
    choice_errors("--decoding", ["constrained", "free"]),
    option_errors("--tasks", BAD_TASKS, "task"),
    option_errors("--adapter", st.sampled_from(["/nonexistent/adapter", "0" * 32, "not-a-run"]), "adapter"),
    option_errors("--model", UNKNOWN_NAME.map(lambda n: f"no-such-model-{n}"), "model"),
    option_errors("--data", BAD_DATA, DATA_NAMES),
    option_errors("--experiment", st.sampled_from(["", " "]), "experiment"),
)


def test_evaluate_refuses_bad_options_before_any_run(empty_store, tiny_model_dir) -> None:
    from pipelines import evaluate

    base = ["--model", str(tiny_model_dir), "--tasks", "harmonization", "--data", TINY_DATA, "--eval-limit", "1"]
    check_property(EVALUATE_ERRORS, evaluate.main, base, empty_store, N_EVALUATE)


# ---------------------------------------------------------------- baseline

LOCAL_URL = ["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"]  # nothing listens on port 9
BASELINE_ERRORS = st.one_of(
    choice_errors("--backend", ["local", "openai"], "backend"),
    choice_errors("--prompting", ["zero-shot", "prompt-engineered"]),
    option_errors("--concurrency", below(1) | NOT_AN_INT),
    option_errors("--max-retries", below(0) | NOT_AN_INT),
    option_errors("--timeout-s", floats_outside(0.0, None, low_ok=False) | NON_FINITE | NOT_A_NUMBER),
    option_errors("--backoff-s", floats_outside(0.0, None) | NON_FINITE),
    option_errors("--temperature", floats_outside(0.0, None) | NON_FINITE),
    option_errors("--eval-limit", below(0) | NOT_AN_INT),
    option_errors("--allow-remote", st.sampled_from(["maybe", "2", "yes please", "truee"])),
    option_errors("--tasks", BAD_TASKS, "task"),
    option_errors("--data", BAD_DATA, DATA_NAMES),
    option_errors("--base-url", st.sampled_from(["ftp://127.0.0.1/v1", "127.0.0.1:8000", "http://", "notaurl"]),
                  "base url"),
    # a public address (a literal: no DNS query) without --allow-remote: the privacy guard refuses
    option_errors("--base-url", st.sampled_from(["http://8.8.8.8/v1", "https://1.1.1.1:443/v1",
                                                  "http://[2001:db8::1]/v1"]), "--allow-remote"),
)


def test_baseline_refuses_bad_options_before_any_run(empty_store, monkeypatch) -> None:
    from pipelines import baseline

    def no_request(*args, **kwargs):
        raise AssertionError("a request was sent")

    import requests

    monkeypatch.setattr(requests.Session, "post", no_request)
    base = [*LOCAL_URL, "--model", "m", "--tasks", "harmonization", "--data", TINY_DATA, "--eval-limit", "1",
            "--cache", ""]
    check_property(BASELINE_ERRORS, baseline.main, base, empty_store, N_BASELINE)


def test_local_backend_refuses_a_temperature() -> None:
    from pipelines.baselines import BaselineConfig

    with pytest.raises(ValueError, match="--temperature"):
        BaselineConfig(backend="local", temperature=0.7)


# ---------------------------------------------------------------- sweep

SWEEP_ERRORS = st.one_of(
    option_errors("--n-trials", below(0) | NOT_AN_INT),
    option_errors("--timeout", floats_outside(0.0, None) | st.sampled_from(["nan", "-inf"]) | NOT_A_NUMBER),
    option_errors("--worker-index", below(0) | NOT_AN_INT),
    option_errors("--heartbeat-interval", below(1) | NOT_AN_INT),
    option_errors("--grace-period", st.integers(-5, 60).map(str), "--grace-period"),  # at or below 60 s heartbeat
    option_errors("--max-retry", below(0) | NOT_AN_INT),
    option_errors("--space", st.sampled_from(["/nonexistent.yaml", str(ROOT / "README.md"), str(ROOT / "sweeps"),
                                              str(ROOT / "studies" / "demo.yaml")])).map(
        lambda c: (c[0], (c[0][1], "space"))),
    choice_errors("--direction", ["maximize", "minimize"]),
    option_errors("--sampler", UNKNOWN_NAME.filter(lambda n: n not in ("tpe", "random", "qmc", "gp", "cmaes")),
                  "sampler"),
    option_errors("--pruner", UNKNOWN_NAME.filter(lambda n: n not in (
        "median", "percentile", "hyperband", "threshold", "none", "successive_halving", "patient", "nop",
        "wilcoxon")), "pruner"),
    # Not here: a metric name the trained tasks do not produce ("harmonization/nosuch") is found only
    # when the first trial reports (its run fails) -- tasks declare no metric names to check against.
    option_errors("--objective", st.sampled_from(["nosuch/metric", "labeling", ",", "labeling/f1"]), "objective"),
    option_errors("--combine", st.sampled_from(["median", "sum", "product", "x"]), "combine"),
    st.sampled_from([("lora_r", "--set"), ("=3", "override"), ("nosuch=1", "nosuch"), ("lora_r=-1", "lora-r"),
                     ("epochs=0", "epochs"), ("learning_rate=inf", "learning-rate"),
                     ("lora_dropout=1.5", "lora-dropout")]).map(lambda c: (["--set", c[0]], (c[1],))),
    # an empty --tasks/--data leaves the sweep file's value (MLproject defaults), so "" is valid here
    option_errors("--tasks", BAD_TASKS.filter(bool), "task"),
    # the sweep loads the trials' data once before it opens the study: missing files included
    option_errors("--data", BAD_DATA.filter(bool), DATA_NAMES),
    option_errors("--train-limit", below(0), "train_limit"),
)


def test_sweep_refuses_bad_options_before_any_run(empty_store, tiny_model_dir) -> None:
    from pipelines import sweep

    base = ["--space", str(ROOT / "sweeps" / "quick.yaml"), "--n-trials", "1", "--model", str(tiny_model_dir),
            "--tasks", "harmonization", "--data", TINY_DATA, "--train-limit", "2", "--eval-limit", "1",
            "--no-figures"]
    check_property(SWEEP_ERRORS, sweep.main, base, empty_store, N_SWEEP)
    # the default journal storage may exist (an unknown sampler or pruner is found while the study
    # is opened) but holds no study
    assert all(f.stat().st_size == 0 for f in Path.cwd().glob("*journal*")), "an Optuna study was created"


# ---------------------------------------------------------------- study

STUDY_FILE = str(ROOT / "studies" / "demo.yaml")
# --plan in every command line: an option wrongly accepted prints the plan (exit 0) instead of
# training the demo study.
STUDY_ERRORS = st.one_of(
    option_errors("--stale-after", floats_outside(0.0, None, low_ok=False) | st.sampled_from(["nan", "inf", "x"])),
    # a bare switch never takes the next word as its value: that word is then an extra argument
    option_errors("--fail-fast", st.sampled_from(["maybe", "nope", "2"]), ("--fail-fast", "unrecognized")),
    option_errors("--allow-remote", st.sampled_from(["maybe", "truee"]), ("--allow-remote", "unrecognized")),
    st.sampled_from([("epochs", "key=value"), ("=1", "key=value"), ("nosuch=1", "nosuch"), ("epochs=0", "epochs"),
                     ("eval_limit=-1", "eval-limit"), ("tasks=summarize", "task"), ("data=nosuch", "data"),
                     ("learning_rate=.inf", "learning-rate"), ("checkpoint_epochs=[7]", "checkpoint-epochs"),
                     ("poison_rate=2", "poison-rate"), ("prompting=few-shot", "prompting")]).map(
        lambda c: (["--set", c[0]], (c[1],))),
).map(lambda c: ([STUDY_FILE, "--plan", *c[0]], c[1])) | st.sampled_from(
    ["/nonexistent/study.yaml", str(ROOT / "README.md"), str(ROOT / "sweeps" / "quick.yaml")]
).map(lambda f: ([f, "--plan"], (f, "study")))


def test_study_refuses_bad_options_before_any_run(empty_store) -> None:
    from pipelines import study

    check_property(STUDY_ERRORS, study.main, [], empty_store, N_STUDY)


# ---------------------------------------------------------------- analyze

ANALYZE_ERRORS = st.one_of(
    option_errors("--alpha", floats_outside(0.0, 1.0) | st.sampled_from(["0", "1", "nan", "inf", "x"]), "alpha"),
    choice_errors("--correction", CORRECTIONS.names()),
    option_errors("--param", st.sampled_from(["noequals", "=x", "a=1;b", ";=;"]), "key=value"),
    option_errors("--reference", st.sampled_from(["=x", "model=a;=b", "a=1;junk"]), "key=value"),
)


def test_analyze_refuses_bad_options_before_any_run(empty_store) -> None:
    from analysis import analyze

    check_property(ANALYZE_ERRORS, analyze.main, ["--no-trajectory"], empty_store, N_ANALYZE)


# ---------------------------------------------------------------- the real command lines


def test_the_command_line_refuses_a_remote_endpoint_before_any_run(tmp_path) -> None:
    """The real `python -m pipelines.baseline` (a fresh interpreter): exit 2, the reason on stderr's
    last line, no tracking store created."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)}
    argv = ["--backend", "openai", "--base-url", "http://8.8.8.8/v1", "--data", TINY_DATA, "--eval-limit", "1"]
    done = subprocess.run([sys.executable, "-m", "pipelines.baseline", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--allow-remote" in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists()


