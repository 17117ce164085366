"""Choosing the checkpoint to register, and the assistant's request handling, without a model.

Runs are written by hand into a temporary store (no training), and generation is replaced by a
stub that answers by task, so these tests take seconds.
"""
from __future__ import annotations

import json

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from pipelines.config import ConfigError
from pipelines.serving import assistant_model
from pipelines.serving.assistant_model import answer, request_rows, task_input, validate_row
from pipelines.serving.registration import RegisterConfig, pip_requirements, select_checkpoint, signature
from pipelines.vocabulary import LABEL_KEYS

ALL_TASKS = ("labeling", "harmonization", "impression")
EXPERIMENT = "clinical-slm"


def finetune(tasks: tuple[str, ...], checkpoints: dict[int, dict[str, float]], status: str = "FINISHED",
             experiment: str = EXPERIMENT) -> str:
    """A fine-tune run with one checkpoint child per epoch holding `metrics`; returns its id."""
    mlflow.set_experiment(experiment)
    with mlflow.start_run(tags={"role": "finetune", "tasks": ",".join(tasks)}) as parent:
        mlflow.log_params({"model": "tiny", "tasks": ",".join(tasks), "precision": "fp32"})
        for epoch, metrics in checkpoints.items():
            with mlflow.start_run(nested=True, tags={"role": "checkpoint", "tasks": ",".join(tasks)}):
                mlflow.log_params({"epoch": epoch, "model": "tiny"})
                mlflow.log_metrics(metrics, step=epoch)
        mlflow.set_tag("note", "made by hand")
    if status != "FINISHED":
        mlflow.MlflowClient().set_terminated(parent.info.run_id, status)
    return parent.info.run_id


def headline(labeling: float, harmonization: float, impression: float) -> dict[str, float]:
    return {"labeling/f1_macro": labeling, "harmonization/accuracy": harmonization,
            "impression/rougeL": impression, "labeling/parse_fail_rate": 1 - labeling}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating its schema takes seconds); tests use experiments."""
    root = tmp_path_factory.mktemp("register")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        yield uri


@pytest.fixture(scope="module")
def runs(store):
    """An older multi-task fine-tune, the latest multi-task one, then a single-task and a failed one."""
    older = finetune(ALL_TASKS, {1: headline(0.9, 0.9, 0.9)})
    latest = finetune(ALL_TASKS, {1: headline(0.2, 0.3, 0.1), 2: headline(0.6, 0.5, 0.4),
                                  3: headline(0.7, 0.2, 0.3)})
    finetune(("labeling",), {1: headline(0.99, 0, 0)})
    finetune(ALL_TASKS, {1: headline(0.99, 0.99, 0.99)}, status="FAILED")
    return {"older": older, "latest": latest}


def test_default_is_the_best_checkpoint_of_the_latest_finished_multitask_finetune(runs):
    chosen = select_checkpoint(RegisterConfig())
    assert chosen.finetune.info.run_id == runs["latest"]
    assert chosen.epoch == 2  # headline means: 0.2, 0.5, 0.4
    assert chosen.value == pytest.approx(0.5)
    assert chosen.tasks == ALL_TASKS
    assert chosen.checkpoint.data.tags["role"] == "checkpoint"


def test_a_chosen_metric_and_mode_pick_other_epochs(runs):
    assert select_checkpoint(RegisterConfig(metric="labeling/f1_macro")).epoch == 3
    assert select_checkpoint(RegisterConfig(metric="labeling/parse_fail_rate", mode="min")).epoch == 3
    assert select_checkpoint(RegisterConfig(metric="harmonization/accuracy", mode="min")).epoch == 3


def test_explicit_run_epoch_and_checkpoint_run(runs):
    chosen = select_checkpoint(RegisterConfig(run=runs["older"]))
    assert (chosen.finetune.info.run_id, chosen.epoch) == (runs["older"], 1)
    chosen = select_checkpoint(RegisterConfig(run=runs["latest"], epoch=1))
    assert chosen.epoch == 1 and chosen.value == pytest.approx(0.2)
    by_checkpoint = select_checkpoint(RegisterConfig(run=chosen.checkpoint.info.run_id))
    assert by_checkpoint.epoch == 1 and by_checkpoint.finetune.info.run_id == runs["latest"]


def test_ties_go_to_the_later_epoch(store):
    run_id = finetune(ALL_TASKS, {1: headline(0.5, 0.5, 0.5), 4: headline(0.5, 0.5, 0.5)}, experiment="ties")
    assert select_checkpoint(RegisterConfig(run=run_id)).epoch == 4


@pytest.mark.parametrize(("config", "message"), [
    ({"epoch": 7}, "checkpoints at epochs [1, 2, 3], not 7"),
    ({"metric": "labeling/f1"}, "labeling/f1_macro"),  # the error lists the metrics there are
    ({"run": "0123456789abcdef"}, "is not a run"),
])
def test_selection_errors_say_what_to_change(runs, config, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        select_checkpoint(RegisterConfig(**config))


def test_a_checkpoint_run_with_another_epoch_is_refused(runs):
    checkpoint = select_checkpoint(RegisterConfig(run=runs["latest"], epoch=2)).checkpoint
    with pytest.raises(ConfigError, match="epoch-2 checkpoint, not epoch 3"):
        select_checkpoint(RegisterConfig(run=checkpoint.info.run_id, epoch=3))


def test_no_multitask_finetune_says_how_to_get_one(store):
    finetune(("labeling",), {1: headline(0.5, 0, 0)}, experiment="single")
    with pytest.raises(ConfigError, match="no finished multi-task fine-tune.*--run"):
        select_checkpoint(RegisterConfig(experiment="single"))
    with pytest.raises(ConfigError, match="no experiment 'elsewhere'"):
        select_checkpoint(RegisterConfig(experiment="elsewhere"))


@pytest.mark.parametrize(("field", "value"), [
    ("alias", "latest"), ("alias", "v3"), ("alias", "has space"), ("weights_dtype", "int8"),
    ("mode", "best"), ("epoch", -1), ("batch_size", 0), ("name", " "),
])
def test_config_validation(field, value):
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        RegisterConfig(**{field: value})


def test_signature_and_requirements():
    sig = signature()
    assert sig.inputs.input_names() == ["task", "text"]
    assert sig.outputs.input_names() == list(assistant_model.OUTPUT_COLUMNS)
    assert {p.name for p in sig.params.params} == {"max_new_tokens", "batch_size", "decoding"}
    pins = pip_requirements()
    names = {p.split("==")[0] for p in pins}
    assert {"mlflow", "torch", "transformers", "peft"} <= names and "torchvision" not in names
    assert not any("+" in p for p in pins)  # local tags such as +cpu are not on any index


# -- request handling


def test_requests_without_task_and_text_are_bad_requests():
    for bad in ([{"task": "labeling"}], {"text": ["x"]}, ["labeling"], "labeling"):
        with pytest.raises(MlflowException, match="task and text") as info:
            request_rows(bad)
        assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert request_rows({"task": ["labeling"], "text": ["r"]}) == [{"task": "labeling", "text": "r"}]
    assert request_rows({"task": "labeling", "text": "r", "id": 3}) == [{"task": "labeling", "text": "r"}]


def test_row_validation():
    served = ("labeling", "harmonization")
    assert validate_row({"task": " Labeling ", "text": " report "}, served).text == "report"
    assert "unknown task 'summary'; valid tasks: labeling, harmonization" in \
        validate_row({"task": "summary", "text": "x"}, served).error
    assert "not served: this model was fine-tuned on labeling, harmonization" in \
        validate_row({"task": "impression", "text": "x"}, served).error
    assert validate_row({"task": None, "text": "x"}, served).error.startswith("unknown task ''")
    for empty in ("", "  \n", None, float("nan")):
        assert "empty text" in validate_row({"task": "harmonization", "text": empty}, served).error
    assert "findings" in validate_row({"task": "impression", "text": "IMPRESSION: ok"}, ALL_TASKS).error


def test_impression_requests_lose_their_impression_section():
    report = "INDICATION: Cough.\nFINDINGS: Clear lungs.\nIMPRESSION: Normal chest."
    assert task_input("impression", report) == "INDICATION: Cough.\nFINDINGS: Clear lungs."
    assert task_input("labeling", report) == report
    reordered = "IMPRESSION: Normal.\nFINDINGS: Clear lungs."
    assert task_input("impression", reordered) == "FINDINGS: Clear lungs."


def stub_complete(calls: list):
    """A stand-in for pipelines.infer.generation.complete that answers each task's prompts by directive."""
    labels = json.dumps(dict.fromkeys(LABEL_KEYS, "No") | {"Edema": "Yes"})
    replies = {"Report CXR diagnosis.": labels, "Harmonize sequence name.": '{"ax flair": "flair"}',
               "Generate the impression from the findings.": "IMPRESSION: No acute disease."}

    def complete(model, tokenizer, task, prompts, inputs, *, decoding, max_new_tokens, batch_size,
                 max_seq_length, desc):
        assert len(inputs) == len(prompts) and all(text in p for text, p in zip(inputs, prompts, strict=True))
        calls.append((desc, len(prompts), max_new_tokens, batch_size, max_seq_length, decoding))
        return [next(r for d, r in replies.items() if d in p) for p in prompts]

    return complete


def test_answer_groups_by_task_keeps_order_and_formats_outputs(monkeypatch):
    calls: list = []
    monkeypatch.setattr("pipelines.infer.generation.complete", stub_complete(calls))
    request = [
        {"task": "impression", "text": "FINDINGS: Clear."},
        {"task": "labeling", "text": "FINDINGS: Edema."},
        {"task": "x-ray", "text": "FINDINGS: Clear."},
        {"task": "harmonization", "text": "ax flair"},
        {"task": "labeling", "text": ""},
        {"task": "labeling", "text": "FINDINGS: Edema again."},
    ]
    rows = answer(None, None, request, ALL_TASKS, batch_size=4, max_seq_length=512)
    assert [r["task"] for r in rows] == [r["task"] for r in request]
    assert [c[:2] for c in calls] == [("serve labeling", 2), ("serve harmonization", 1),
                                      ("serve impression", 1)]
    assert all(c[3:] == (4, 512, "constrained") for c in calls)
    labels = json.loads(rows[1]["output"])
    assert list(labels) == list(LABEL_KEYS) and labels["Edema"] == "Yes" and rows[1]["parse_status"] == "ok"
    assert rows[3]["output"] == "T2/FLAIR" and rows[3]["parse_status"] == "ok"
    assert rows[0]["output"] == "No acute disease." and rows[0]["raw_output"].startswith("IMPRESSION:")
    for bad in (rows[2], rows[4]):
        assert bad["parse_status"] == "failed" and bad["output"] == "" and bad["error"]
    assert all(r["error"] == "" for i, r in enumerate(rows) if i not in (2, 4))


def test_max_new_tokens_caps_each_tasks_budget(monkeypatch):
    from pipelines.tasks import get_task

    calls: list = []
    monkeypatch.setattr("pipelines.infer.generation.complete", stub_complete(calls))
    answer(None, None, [{"task": t, "text": "x"} for t in ALL_TASKS], ALL_TASKS)
    assert [c[2] for c in calls] == [get_task(t).max_new_tokens for t in ALL_TASKS]
    calls.clear()
    answer(None, None, [{"task": t, "text": "x"} for t in ALL_TASKS], ALL_TASKS, max_new_tokens=80)
    assert [c[2] for c in calls] == [80, get_task("harmonization").max_new_tokens, 80]


def test_pyfunc_predict_applies_the_models_and_the_requests_caps(monkeypatch):
    calls: list = []
    monkeypatch.setattr("pipelines.infer.generation.complete", stub_complete(calls))
    assistant = assistant_model.ClinicalAssistant()
    assistant.model = assistant.tokenizer = None
    assistant.served, assistant.batch_size, assistant.max_seq_length = ALL_TASKS, 8, 640
    assistant.max_new_tokens = 100  # the fine-tune evaluated with this cap
    assistant.decoding = "constrained"
    frame = assistant.predict(None, [{"task": "labeling", "text": "x"}, {"task": "impression", "text": "y"}],
                              params={"max_new_tokens": 0, "batch_size": -1})
    assert list(frame.columns) == list(assistant_model.OUTPUT_COLUMNS) and len(frame) == 2
    assert [c[2:] for c in calls] == [(100, 8, 640, "constrained"), (96, 8, 640, "constrained")]
    calls.clear()
    assistant.predict(None, [{"task": "labeling", "text": "x"}],
                      params={"max_new_tokens": 20, "batch_size": 2, "decoding": "free"})
    assert calls[0][2:4] == (20, 2) and calls[0][5] == "free"
    with pytest.raises(ValueError, match="param decoding must be one of"):
        assistant.predict(None, [{"task": "labeling", "text": "x"}], params={"decoding": "beam"})
