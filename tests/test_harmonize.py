"""The harmonize entry point: a tiny harmonization adapter labels a DICOM folder and a table.

One fine-tune per module (tiny model, one epoch) in its own tracking store; DICOM files are
written with pydicom by the test. The tiny model's output is mostly unparseable, so the
assertions are about the CSV's rows, counts and statuses, not the classes it guesses.
"""
from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import mlflow
import pytest
import yaml
from test_data_sources_tables import write_dicom
from test_fuzz_cli import run_main
from test_infer_loading import write_random_adapter

from pipelines.config import DECODINGS, ConfigError, FinetuneConfig
from pipelines.data.errors import DataError
from pipelines.data.examples import build_test_examples
from pipelines.data.sources import load_data
from pipelines.data.split import split_bundle
from pipelines.harmonize import main, parse_args
from pipelines.infer import series_harmonization as harmonizing
from pipelines.infer.evaluation import answer_task, input_text
from pipelines.infer.series_harmonization import OUTPUT_COLUMNS, HarmonizeConfig, harmonize, mapping_rows, status_counts
from pipelines.models import load_model_and_tokenizer
from pipelines.tasks.base import Example
from pipelines.train.recipe import train
from pipelines.vocabulary import SERIES_CLASSES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A one-epoch harmonization fine-tune of the tiny model, in a store of its own."""
    root = tmp_path_factory.mktemp("harmonize")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        result = train(FinetuneConfig(
            model=str(tiny_model_dir), tasks="harmonization", data="synthetic?reports=40&series=40", epochs=1,
            checkpoint_epochs=(1,), train_limit=4, eval_limit=2, batch_size=2))
        yield result


@pytest.fixture
def pacs(tmp_path: Path) -> Path:
    """Three series descriptions over five series (seven files), plus files that are skipped."""
    folder = tmp_path / "pacs"
    for index in range(3):
        write_dicom(folder / "s1" / f"IM{index}", "AX T2 FLAIR", "1.2.3.1")
    write_dicom(folder / "s2" / "IM0", "AX T2 FLAIR", "1.2.3.2")
    write_dicom(folder / "s3" / "IM0.dcm", "DWI TRACE", "1.2.3.3")
    write_dicom(folder / "s4" / "IM0.dcm", "sag t1 mprage", "1.2.3.4")
    write_dicom(folder / "s4" / "IM1.dcm", "sag t1 mprage", "1.2.3.4")
    write_dicom(folder / "s5" / "IM0.dcm", None, "1.2.3.5")
    (folder / "export.txt").write_text("PACS export log")
    return folder


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == OUTPUT_COLUMNS
        return list(reader)


def check_statuses(rows: list[dict[str, str]]) -> None:
    for row in rows:
        assert row["parse_status"] in ("ok", "partial", "failed"), row
        assert (row["class"] == "") == (row["parse_status"] == "failed"), row
        assert row["class"] in ("", *SERIES_CLASSES), row


def base_model_of(adapter_folder: Path) -> str:
    return json.loads((adapter_folder / "adapter_config.json").read_text())["base_model_name_or_path"]


@pytest.fixture
def fixed_output(monkeypatch):
    """Skip generation: every description gets the same raw output (input handling tests)."""
    def classify(model, tokenizer, descriptions, batch_size, decoding="constrained"):
        return ['{"x": "SWI"}'] * len(descriptions)

    monkeypatch.setattr(harmonizing, "classify", classify)


def test_dicom_folder_gives_one_row_per_description_and_a_run(trained, pacs, tmp_path):
    out = tmp_path / "pacs-map.csv"
    config = HarmonizeConfig(adapter=trained.run_id, input=str(pacs), output=str(out), study="pacs")
    result = harmonize(config)
    rows = read_csv(out)
    assert [(r["description"], r["count"]) for r in rows] == [
        ("AX T2 FLAIR", "2"), ("DWI TRACE", "1"), ("sag t1 mprage", "1")]
    check_statuses(rows)
    assert sum(result.counts.values()) == 3
    assert result.counts == status_counts(result.rows)
    assert result.adapter.run_id == trained.checkpoint_runs[1] and result.adapter.epoch == 1

    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["role"] == "harmonize" and run.data.tags["study"] == "pacs"
    assert run.data.params["source_run"] == trained.checkpoint_runs[1]
    assert run.data.params["input_kind"] == "dicom"
    assert run.data.params["base_model"] == mlflow.MlflowClient().get_run(trained.run_id).data.params["model"]
    assert run.data.metrics["harmonize/n_descriptions"] == 3
    assert run.data.metrics["harmonize/input_non_dicom_files"] == 1
    assert run.data.metrics["harmonize/input_without_description"] == 1
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["series-descriptions"]
    local = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="harmonize/pacs-map.csv",
                                                dst_path=str(tmp_path / "dl"))
    assert read_csv(Path(local)) == rows
    table = mlflow.load_table("predictions/harmonization.json", run_ids=[result.run_id])
    assert list(table["description"]) == [r["description"] for r in rows]


def test_table_from_an_adapter_folder_without_tracking(trained, tmp_path):
    table = tmp_path / "series.csv"
    table.write_text("PatientID,Series Description\np1,DWI TRACE\np2, AX T2 FLAIR\np3,\np4,DWI TRACE\n",
                     encoding="utf-8")
    folder = trained.output_dir / "epoch-1" / "adapter"
    result = harmonize(HarmonizeConfig(adapter=str(folder), input=str(table), track=False))
    assert result.run_id == "" and result.adapter.folder == folder.resolve()
    assert result.model == base_model_of(folder)
    assert result.output == Path("outputs") / "harmonized-series.csv"
    rows = read_csv(result.output)
    assert [(r["description"], r["count"]) for r in rows] == [("DWI TRACE", "2"), ("AX T2 FLAIR", "1")]
    check_statuses(rows)


def test_xlsx_sheet_and_explicit_column(trained, tmp_path, fixed_output):
    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "notes"
    sheet = book.create_sheet("export")
    sheet.append(["Protocol", "SeriesDescription"])
    for protocol, description in (("brain", "AX SWI"), ("brain", "ADC map"), ("spine", "AX SWI")):
        sheet.append([protocol, description])
    path = tmp_path / "series.xlsx"
    book.save(path)
    config = HarmonizeConfig(adapter=trained.run_id, input=f"{path}#export", column="SeriesDescription",
                             track=False)
    assert config.output_path() == Path("outputs") / "harmonized-series-export.csv"
    result = harmonize(config)
    assert [(r["description"], r["count"], r["class"]) for r in result.rows] == [
        ("AX SWI", 2, "SWI"), ("ADC map", 1, "SWI")]
    assert result.counts == {"ok": 2, "partial": 0, "failed": 0}


def test_malformed_output_is_a_counted_result():
    items = [("AX T1", 3), ("cor flair", 1), ("loc", 2), ("AX T9", 1)]
    outputs = ['{"AX T1": "T1"}', "FLAIR\nmore text", "}}{ not json", '{"AX T9": "T9"}']
    rows = mapping_rows(items, outputs)
    assert [(r["class"], r["parse_status"], r["count"]) for r in rows] == [
        ("T1", "ok", 3), ("T2/FLAIR", "partial", 1), ("", "failed", 2), ("", "failed", 1)]
    assert [r["raw_output"] for r in rows] == outputs
    assert status_counts(rows) == {"ok": 1, "partial": 1, "failed": 2}


def test_command_line_reports_counts_of_unparseable_output(trained, pacs, tmp_path, monkeypatch, capsys):
    def classify(model, tokenizer, descriptions, batch_size, decoding="constrained"):
        return ["<garbage>"] * len(descriptions)

    monkeypatch.setattr(harmonizing, "classify", classify)
    out = tmp_path / "cli.csv"
    assert main(["--adapter", trained.run_id, "--input", str(pacs), "--output", str(out), "--no-track"]) == 0
    printed = capsys.readouterr().out
    assert f"Harmonized 3 distinct descriptions -> {out}" in printed
    assert "parsed ok 0, partial 0, failed 3" in printed
    assert all(r["class"] == "" and r["raw_output"] == "<garbage>" for r in read_csv(out))
    assert parse_args(["--adapter", "a", "--input", "b"]).track is True


def test_bad_inputs_name_the_path_or_column(trained, tmp_path, capsys):
    def error(input_text: str, **options) -> str:
        with pytest.raises((DataError, ConfigError)) as caught:
            harmonize(HarmonizeConfig(adapter=trained.run_id, input=input_text, track=False, **options))
        return str(caught.value)

    absent = tmp_path / "absent"
    assert error(str(absent)) == (
        f"{absent}: not found; give a folder of DICOM files or a CSV/TSV/XLSX table")
    assert main(["--adapter", trained.run_id, "--input", str(absent), "--no-track"]) == 2
    assert f"error: {absent}: not found" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert error(str(empty)) == (
        f"{empty}: no DICOM files found (1 non-DICOM and 0 unreadable file(s) skipped)")
    assert error(str(empty), column="SeriesDescription") == (
        f"--column 'SeriesDescription' applies to a table; {empty} is read as DICOM")

    table = tmp_path / "series.csv"
    table.write_text("id,protocol\n1,brain\n", encoding="utf-8")
    assert error(str(table)) == (
        f"{table}, line 1, column 'description': missing column; the header has ['id', 'protocol'] "
        "(set the column with the option --column=<name>)")
    assert error(str(table), column="Series Desc").startswith(
        f"{table}, line 1, column 'Series Desc': missing column")
    blank = tmp_path / "blank.csv"
    blank.write_text("description,id\n  ,1\n,2\n", encoding="utf-8")
    assert error(str(blank)) == (
        f"{blank}, line 1, column 'description': every cell of the description column is empty")

    with pytest.raises(ConfigError, match="neither a folder nor a run id"):
        harmonize(HarmonizeConfig(adapter="no-such-run", input=str(table), track=False))
    with pytest.raises(ConfigError, match="--adapter is required"):
        HarmonizeConfig(input=str(table))


# ---------------------------------------------------------------- decoding: the path evaluation scores


@pytest.fixture(scope="module")
def random_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A random (non-zero) LoRA adapter folder on the tiny model: no fine-tune needed."""
    return write_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("harmonize-adapter") / "adapter")


@pytest.fixture(scope="module")
def series_examples() -> list[Example]:
    """Harmonization test examples of the synthetic data, one per distinct description."""
    bundle = load_data("synthetic?reports=40&series=40")
    ids = {name: split.test for name, split in split_bundle(bundle, 0).items()}
    examples = build_test_examples(bundle, ids, ("harmonization",), 6)["harmonization"]
    distinct: dict[str, Example] = {}
    for example in examples:
        distinct.setdefault(input_text(example.prompt), example)
    return list(distinct.values())


def evaluation_answers(base_dir: Path, adapter: Path, examples: list[Example], decoding: str) -> list[str]:
    """What evaluation answers (answer_task), the adapter applied by hand with peft."""
    from peft import PeftModel

    model, tokenizer = load_model_and_tokenizer(base_dir, "fp32", "cpu")
    model = PeftModel.from_pretrained(model, adapter)
    return answer_task(model, tokenizer, "harmonization", examples, decoding=decoding)


def description_table(folder: Path, descriptions: list[str]) -> Path:
    path = folder / "descriptions.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["description"])
        writer.writerows([d] for d in descriptions)
    return path


@pytest.mark.parametrize("decoding", DECODINGS)
def test_answers_are_evaluations_for_the_same_adapter_and_descriptions(tiny_model_dir, random_adapter,
                                                                      series_examples, tmp_path, monkeypatch,
                                                                      decoding):
    monkeypatch.chdir(tmp_path)
    descriptions = [input_text(e.prompt) for e in series_examples]
    assert len(descriptions) >= 3
    options = {} if decoding == "constrained" else {"decoding": decoding}  # constrained: the default
    table = description_table(tmp_path, descriptions)
    result = harmonize(HarmonizeConfig(adapter=str(random_adapter), input=str(table), output=str(tmp_path / "map.csv"),
                                       device="cpu", precision="fp32", track=False, **options))
    assert [r["description"] for r in result.rows] == descriptions
    assert [r["raw_output"] for r in result.rows] == evaluation_answers(tiny_model_dir, random_adapter,
                                                                         series_examples, decoding)
    if decoding == "constrained":  # always one of the task's valid answers, as evaluation scores it
        assert result.counts == {"ok": len(descriptions), "partial": 0, "failed": 0}
        assert all(json.loads(str(r["raw_output"])) == {r["description"]: r["class"]} for r in result.rows)


def test_the_run_logs_the_decoding_it_used(random_adapter, store, tmp_path):
    table = description_table(tmp_path, ["AX T2 FLAIR", "DWI TRACE"])
    default = harmonize(HarmonizeConfig(adapter=str(random_adapter), input=str(table),
                                        output=str(tmp_path / "default.csv"), device="cpu"))
    assert mlflow.get_run(default.run_id).data.params["decoding"] == "constrained"
    assert main(["--adapter", str(random_adapter), "--input", str(table), "--output", str(tmp_path / "free.csv"),
                 "--device", "cpu", "--decoding", "free", "--run-name", "free-run"]) == 0
    runs = mlflow.search_runs(experiment_names=["clinical-slm"], filter_string="tags.role = 'harmonize'",
                              output_format="list")
    decodings = {r.info.run_name: r.data.params["decoding"] for r in runs}
    assert decodings["free-run"] == "free" and len(decodings) == 2
    assert set(decodings.values()) == set(DECODINGS)


def test_an_invalid_decoding_is_refused_in_one_line_naming_the_option(tmp_path):
    code, err = run_main(main, ["--adapter", "a", "--input", "b", "--decoding", "greedy"])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "--decoding" in err, err
    config_file = tmp_path / "harmonize.yaml"
    config_file.write_text("adapter: a\ninput: b\ndecoding: beam\n")
    code, err = run_main(main, ["--config", str(config_file)])
    assert code == 2 and err == "error: --decoding must be one of ('constrained', 'free'), got 'beam'\n", err
    with pytest.raises(ConfigError, match="^--decoding must be one of"):
        HarmonizeConfig(adapter="a", input="b", decoding="greedy")
    with pytest.raises(ConfigError, match="^--decoding must be one of"):
        harmonizing.classify(None, None, ["AX T1"], 1, decoding="greedy")


def test_every_option_and_the_mlproject_entry_keep_working():
    argv = ["--adapter", "a", "--input", "b", "--column", "c", "--output", "o.csv", "--epoch", "2", "--model", "m",
            "--batch-size", "4", "--device", "cpu", "--precision", "fp32", "--no-track", "--study", "s",
            "--experiment", "e", "--run-name", "r", "--decoding", "free"]
    assert parse_args(argv) == HarmonizeConfig(
        adapter="a", input="b", column="c", output="o.csv", epoch=2, model="m", batch_size=4, device="cpu",
        precision="fp32", track=False, study="s", experiment="e", run_name="r", decoding="free")
    defaults = parse_args(["--adapter", "a", "--input", "b"])
    assert defaults == HarmonizeConfig(adapter="a", input="b") and defaults.decoding == "constrained"
    assert (defaults.batch_size, defaults.epoch, defaults.track, defaults.study, defaults.experiment) == \
        (16, 0, True, "default", "clinical-slm")
    assert parse_args(["--adapter", "a", "--input", "b", "--study-tag", "t", "--track", "false"]).study == "t"

    entry = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["harmonize"]
    assert entry["parameters"]["decoding"]["default"] == "constrained"
    values = {name: param.get("default", "") for name, param in entry["parameters"].items()}

    def mlflow_argv(**given: str) -> list[str]:
        """The command `mlflow run -e harmonize` runs (parameters shell-quoted), after `python -m ...`."""
        words = shlex.split(entry["command"].format(**{k: shlex.quote(str(v)) for k, v in {**values, **given}.items()}))
        assert words[:3] == ["python", "-m", "pipelines.harmonize"]
        return words[3:]

    assert parse_args(mlflow_argv(adapter="run-id", input="/data/pacs")) == \
        HarmonizeConfig(adapter="run-id", input="/data/pacs")
    assert parse_args(mlflow_argv(adapter="run-id", input="/data/pacs", decoding="free", epoch="3")) == \
        HarmonizeConfig(adapter="run-id", input="/data/pacs", decoding="free", epoch=3)
