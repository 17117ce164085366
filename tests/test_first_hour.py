"""A new user's first hour (issue 17): finish messages that link into the MLflow UI, a report with no
options that names its store, and the MLflow-native records of a real tiny fine-tune (headline,
prediction tables, system metrics, per-step loss, model cards, readable logs)."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow_fixtures import fresh_store, log_demo_study

from analysis.analyze import main as analyze_main
from dashboards.__main__ import main as report_main
from pipelines import evaluate, finetune
from pipelines.infer.model_evaluation import AdapterRef
from pipelines.infer.series_harmonization import base_model_name
from pipelines.models import preset_of
from pipelines.runs import tracking
from pipelines.serving.model_card import CardFacts, finish_adapter, render_card
from pipelines.tasks import get_task

DATA = "synthetic?reports=40&series=40&seed=1"
TASKS = ("labeling", "harmonization", "impression")
LINK = re.compile(r"http://127\.0\.0\.1:5000/#/experiments/(\d+)\?workflowType=machine_learning")


class Records(logging.Handler):
    """Keeps every log message (pytest's caplog is function-scoped; the fine-tune runs once per module)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def values(array) -> list:
    """A plotly JSON array: a list, or a base64 typed array ({"dtype", "bdata"})."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def run_finetune(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = finetune.main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def demo(tiny_model_dir, tmp_path_factory):
    """Two tiny fine-tunes as a newcomer starts them (the command line, --tracking-uri), from a folder
    other than the store's; the second with --system-metrics false."""
    root = tmp_path_factory.mktemp("first-hour")
    (root / "work").mkdir()
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    (root / "store").mkdir()
    records, root_logger = Records(), logging.getLogger()
    level = root_logger.level
    root_logger.addHandler(records)
    root_logger.setLevel(logging.INFO)
    common = ["--model", str(tiny_model_dir), "--data", DATA, "--train-limit", "4", "--eval-limit", "2",
              "--batch-size", "2", "--max-new-tokens", "16", "--study", "first-hour", "--tracking-uri", uri,
              "--output-dir", str(root / "outputs")]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root / "work")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
        try:
            first = run_finetune([*common, "--epochs", "2", "--checkpoint-epochs", "1,2"])
            second = run_finetune([*common, "--epochs", "1", "--checkpoint-epochs", "1", "--system-metrics", "false"])
        finally:
            root_logger.removeHandler(records)
            root_logger.setLevel(level)
        mlflow.set_tracking_uri(uri)
        yield {"root": root, "uri": uri, "first": first, "second": second, "log": records.messages,
               "client": mlflow.MlflowClient(uri)}


def finetunes(demo) -> list:
    """The fine-tune runs, oldest first."""
    runs = demo["client"].search_runs([e.experiment_id for e in demo["client"].search_experiments()],
                                      "tags.role = 'finetune'", order_by=["attributes.start_time ASC"])
    assert len(runs) == 2
    return runs


def checkpoints(demo, parent_id: str) -> dict[int, object]:
    client = demo["client"]
    children = client.search_runs([client.get_run(parent_id).info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {int(c.data.params["epoch"]): c for c in children}


# ---------------------------------------------------------------- finish message and logs


def test_finish_message_links_to_the_runs_table_and_prints_the_report_command(demo):
    code, out = demo["first"]
    assert code == 0, out
    first = finetunes(demo)[0]
    experiment_id = first.info.experiment_id
    assert LINK.search(out).group(1) == experiment_id
    assert f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{first.info.run_id}" in out
    assert f"mlflow ui --backend-store-uri {demo['uri']}" in out
    assert f"python -m dashboards --study first-hour --tracking-uri {demo['uri']}" in out
    assert "{'loss'" not in out and "{'train_runtime'" not in out


def test_config_is_a_yaml_block_and_the_trainer_logs_lines(demo):
    messages = demo["log"]
    config = next(m for m in messages if m.startswith("config:\n"))
    assert "\nepochs: 2\n" in config and "\ncheckpoint_epochs: [1, 2]\n" in config
    assert "\ntasks: [labeling, harmonization, impression]\n" in config
    assert any(re.fullmatch(r"epoch 2/2: train/loss \d+\.\d{4} \(\d+ optimizer steps\)", m) for m in messages)
    assert not any(m.lstrip().startswith("{'") for m in messages)
    assert any(m.startswith("MLflow store: sqlite:///") for m in messages)


def test_ui_links_for_a_tracking_server():
    uri = "https://alice:secret@mlflow.example.org/"
    assert tracking.experiment_link("7", uri) == (
        "https://mlflow.example.org/#/experiments/7?workflowType=machine_learning")
    assert tracking.run_link("7", "abc", uri) == "https://mlflow.example.org/#/experiments/7/runs/abc"
    text = tracking.where_to_look(uri=uri, experiment_id="7")
    assert "mlflow ui" not in text and "secret" not in text


# ---------------------------------------------------------------- MLflow-native records


def test_loss_per_optimizer_step_beside_the_epoch_mean(demo):
    client = demo["client"]
    run_id = finetunes(demo)[0].info.run_id
    steps = {m.step: m.value for m in client.get_metric_history(run_id, "train/loss_step")}
    epochs = {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}
    # 12 training examples (4 per task) in batches of 2 = 6 optimizer steps per epoch
    assert sorted(steps) == list(range(1, 13))
    assert sorted(epochs) == [1, 2]
    for epoch, value in epochs.items():
        in_epoch = [steps[s] for s in range(6 * (epoch - 1) + 1, 6 * epoch + 1)]
        assert value == pytest.approx(sum(in_epoch) / len(in_epoch), abs=1e-9)


def test_system_metrics_on_by_default_and_off_by_option(demo):
    client = demo["client"]
    first, second = finetunes(demo)
    assert any(k.startswith("system/") for k in client.get_run(first.info.run_id).data.metrics)
    assert second.data.params["system_metrics"] == "False"
    assert not any(k.startswith("system/") for k in client.get_run(second.info.run_id).data.metrics)


def test_headline_is_the_mean_of_the_task_headlines(demo):
    first = finetunes(demo)[0]
    for epoch, child in checkpoints(demo, first.info.run_id).items():
        metrics = child.data.metrics
        expected = sum(metrics[f"{t}/{get_task(t).headline_metric}"] for t in TASKS) / 3
        assert metrics["headline"] == pytest.approx(expected), epoch
        history = demo["client"].get_metric_history(first.info.run_id, "headline")
        assert {m.step for m in history} == {1, 2}


def test_predictions_logged_as_tables_beside_the_jsonl(demo):
    first = finetunes(demo)[0]
    child = checkpoints(demo, first.info.run_id)[2]
    for task in TASKS:
        table = mlflow.load_table(f"predictions/{task}.json", run_ids=[child.info.run_id])
        jsonl = mlflow.artifacts.download_artifacts(run_id=child.info.run_id, artifact_path=f"predictions/{task}.jsonl")
        rows = [json.loads(line) for line in Path(jsonl).read_text().splitlines()]
        assert list(table["id"]) == [r["id"] for r in rows]
        assert list(table["output"]) == [r["output"] for r in rows]
        assert json.loads(table["scores"][0]) == rows[0]["scores"]
    logged = json.loads(child.data.tags["mlflow.loggedArtifacts"])
    assert {"path": "predictions/labeling.json", "type": "table"} in logged


def test_every_adapter_has_a_model_card_without_machine_paths(demo, tiny_model_dir):
    first = finetunes(demo)[0]
    fingerprint = first.data.params["data_fingerprint"]
    for epoch, child in checkpoints(demo, first.info.run_id).items():
        card = Path(mlflow.artifacts.download_artifacts(run_id=child.info.run_id, artifact_path="adapter/README.md"))
        text = card.read_text()
        local = (demo["root"] / "outputs" / first.info.run_id / f"epoch-{epoch}" / "adapter" / "README.md")
        assert local.read_text() == text
        assert f"epoch {epoch} of 2" in text and fingerprint in text
        assert "## Intended use" in text and "## Limitations" in text and "Not a medical device" in text
        assert f"| headline | {child.data.metrics['headline']:.4f} |" in text
        assert f"| labeling/f1_macro | {child.data.metrics['labeling/f1_macro']:.4f} |" in text
        assert "labeling 2, harmonization 2, impression 2" in text  # n per task
        assert f"a local model folder named `{tiny_model_dir.name}`" in text
        assert str(Path.home()) not in text and str(demo["root"]) not in text and "/tmp" not in text


def test_model_card_of_a_preset_names_it_and_its_hub_id(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/home/x/.cache/smollm2"}))
    facts = CardFacts(model="smollm2-135m", tasks=("harmonization",), data="openi-csv:/data/site/reports.csv",
                      fingerprint="f00d", epoch=5, epochs=5, run_id="r1", training={"seed": "42"},
                      train_counts={"harmonization": 24}, test_counts={"harmonization": 8},
                      metrics={"headline": 0.5, "harmonization/accuracy": 0.5})
    finish_adapter(folder, facts)
    text = (folder / "README.md").read_text()
    assert "preset `smollm2-135m` = Hugging Face `HuggingFaceTB/SmolLM2-135M-Instruct`" in text
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in text
    assert "`openi-csv:reports.csv`" in text and "/data/site" not in text
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # loading it back without --model finds the preset again (pipelines.harmonize)
    assert preset_of(config["base_model_name_or_path"]) == "smollm2-135m"
    assert base_model_name(type("C", (), {"model": ""})(), AdapterRef(folder=folder)) == "smollm2-135m"
    assert "poisoned" in render_card(CardFacts(**{**facts.__dict__, "poison_rate": 0.5}))


# ---------------------------------------------------------------- the report with no options


def test_report_with_no_options_on_the_demo_store(demo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", demo["uri"])
    assert report_main(["--output", str(tmp_path / "report"), "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert f"MLflow store: {demo['uri']}" in out
    newest = finetunes(demo)[1]
    picked = checkpoints(demo, newest.info.run_id)[1].info.run_id
    assert re.search(rf"^reference: \S+ \({picked}, .*first checkpoint of the newest fine-tune", out, re.M)
    assert LINK.search(out)
    html = (tmp_path / "report" / "report" / "report.html").read_text()
    assert 'id="fig-trajectory-training_loss"' in html
    assert not (tmp_path / "mlflow.db").exists()


def test_report_picks_the_first_checkpoint_of_the_newest_matching_fine_tune(tmp_path, monkeypatch, capsys):
    experiment_id = fresh_store(tmp_path / "store")
    log_demo_study(experiment_id)
    newest = log_demo_study(experiment_id)  # the same study again, later: its reference fine-tune is the newest
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "out"
    argv = ["--tracking-uri", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", "--output", str(out_dir),
            "--cache-dir", str(tmp_path / "cache")]
    assert report_main(argv) == 0
    out = capsys.readouterr().out
    assert f"reference: epoch-1 ({newest['reference'][1]}," in out
    assert "among 4 runs matching model=smollm2-135m, tasks=all three" in out
    folder = out_dir / "report"
    html = (folder / "report.html").read_text()
    # the CSV tables are in the report folder and linked from it; plotly.js is stored once
    links = re.findall(r'<a href="(tables/[\w-]+\.csv)">', html)
    assert "tables/labeling_summary.csv" in links
    assert all((folder / link).is_file() for link in links)
    bundles = [p for p in folder.rglob("*") if p.is_file() and "* plotly.js v" in p.read_text(errors="ignore")]
    assert bundles == [folder / "report.html"]
    assert (folder / "figures" / "trajectory-training_loss.json").is_file()
    training = json.loads((folder / "figures" / "trajectory-training_loss.json").read_text())
    assert len(training["data"]) == 6  # every fine-tune of the analyzed checkpoints; train/loss = 2 / epoch
    assert all(values(t["x"]) == [1, 2] and values(t["y"]) == [2.0, 1.0] for t in training["data"])


def test_readers_refuse_a_missing_store_and_create_none(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert report_main([]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"sqlite:///{tmp_path / 'mlflow.db'}" in err and "--tracking-uri" in err
    assert analyze_main(["--no-log"]) == 1 and "no MLflow store at" in capsys.readouterr().err
    assert evaluate.main(["--adapter", "0123abcd"]) == 2  # a run id needs the store it was logged to
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --adapter '0123abcd' is neither a folder nor a run id: no MLflow store at")
    assert not (tmp_path / "mlflow.db").exists()
