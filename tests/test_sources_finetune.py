"""A fine-tune of the tiny model on each real-data source, through `mlflow run . -e finetune`.

Three runs cover the five file formats (about a minute each on 2 idle CPU cores): Open-i CSV
with a series XLSX sheet, Open-i XML with a series CSV, and a labeled report CSV with synthetic
series. Each `data` value carries `:`, `?`, `&` and `#`, which must reach the entry point intact
through mlflow's shell quoting. In each report set one report has no impression, and it is one
the frozen split puts in the test set, so the test examples show the impression task leaving it
out while labeling keeps it.
"""
from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from test_data_sources import ecgen_folder, indiana_csv

from pipelines.config import FinetuneConfig
from pipelines.data.split import split_ids
from pipelines.vocabulary import CHEXPERT_LABELS

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "sources"


def no_impression_id(ids: list[str]) -> str:
    """The report to leave without an impression: the first of the test split the runs will use."""
    return split_ids(ids, FinetuneConfig.split_seed).test[0]


# uid, MeSH, indication, comparison, findings, impression: ten usable reports and one with no
# text at all (dropped by the loader).
_OPENI = [
    ("1", "normal", "Cough.", "None.", "Heart size normal. Lungs clear.", "No acute disease."),
    ("2", "Cardiomegaly", "Dyspnea.", "", "The heart is enlarged. Lungs clear.", "Cardiomegaly."),
    ("3", "Pleural Effusion/left", "Chest pain.", "", "Small left effusion.", "Left pleural effusion."),
    ("4", "Opacity/lung/base/right", "Fever.", "XXXX.", "Right basilar opacity.", "Right basilar opacity."),
    ("5", "Pneumothorax/right", "Trauma.", "", "Small right apical pneumothorax.", "Right pneumothorax."),
    ("6", "Atelectasis/base", "Cough.", "", "Bibasilar atelectasis.", "Atelectasis."),
    ("7", "Pulmonary Edema", "Dyspnea.", "", "Interstitial edema.", "Pulmonary edema."),
    ("8", "normal", "Pre-op.", "", "No focal consolidation.", "Normal chest."),
    ("9", "Pneumonia/lobe/lower", "Fever.", "", "Left lower lobe consolidation.", "Pneumonia."),
    ("10", "normal", "Screening.", "", "Clear lungs.", "No acute cardiopulmonary abnormality."),
]
OPENI_NO_IMPRESSION = no_impression_id([r[0] for r in _OPENI])
REPORTS = [(*r[:5], "" if r[0] == OPENI_NO_IMPRESSION else r[5]) for r in _OPENI]
REPORTS.append(("11", "normal", "", "", "", ""))

SERIES = [
    ("AX T1 SE", "T1"), ("sag t1 mprage", "t1w"), ("AX T2 FSE", "T2"), ("COR T2", "t2"),
    ("AX T2 FLAIR", "FLAIR"), ("sag 3D flair", "t2/flair"), ("DWI TRACE b1000", "DWI"),
    ("ADC map", "adc"), ("AX SWI", "SWI"), ("3-plane loc", "Other"),
]

# id: (findings, impression, positive labels)
_LABELED = {
    "a1": ("Enlarged heart.", "Cardiomegaly.", {"Cardiomegaly"}),
    "a2": ("Lungs are clear.", "Normal chest.", set()),
    "a3": ("Right IJ line in the SVC.", "Line in good position.", {"Support Devices"}),
    "a4": ("Small left effusion.", "Left effusion.", {"Pleural Effusion"}),
    "a5": ("Left lower lobe opacity.", "Pneumonia.", {"Lung Opacity", "Pneumonia"}),
    "a6": ("Bibasilar atelectasis.", "Atelectasis.", {"Atelectasis"}),
    "a7": ("Interstitial edema.", "Mild edema.", {"Edema"}),
    "a8": ("Right pneumothorax.", "Pneumothorax.", {"Pneumothorax"}),
    "a9": ("Rib fracture.", "Old rib fracture.", {"Fracture"}),
    "a10": ("No acute findings.", "Normal.", set()),
}
LABELED_NO_IMPRESSION = no_impression_id(list(_LABELED))


def write_series_csv(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("SeriesDescription", "Sequence"), *SERIES])
    return path


def write_series_xlsx(path: Path) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "Sheet1"
    book.active.append(["not this sheet"])
    sheet = book.create_sheet("Sheet2")
    sheet.append(["Series Description", "Label"])
    for row in SERIES:
        sheet.append(list(row))
    book.save(path)
    return path


def write_labeled_csv(path: Path) -> Path:
    rows = []
    for rid, (findings, impression, positive) in _LABELED.items():
        text = f"INDICATION: Cough.\nFINDINGS: {findings}"
        text += "" if rid == LABELED_NO_IMPRESSION else f"\nIMPRESSION: {impression}"
        rows.append([rid, text, *("1" if label in positive else "0" for label in CHEXPERT_LABELS)])
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["id", "report", *CHEXPERT_LABELS], *rows])
    return path


def openi_csv_with_xlsx(tmp: Path) -> tuple[str, str, str]:
    reports = indiana_csv(tmp, reports=REPORTS)
    series = write_series_xlsx(tmp / "series.xlsx")
    return (f"openi-csv:{reports}?unmapped=warn", f"series-table:{series}#Sheet2", OPENI_NO_IMPRESSION)


def openi_xml_with_csv(tmp: Path) -> tuple[str, str, str]:
    reports = ecgen_folder(tmp, reports=REPORTS)
    series = write_series_csv(tmp / "series.csv")
    return (f"openi-xml:{reports}?terms=major",
            f"series-table:{series}?description=SeriesDescription&class=Sequence", OPENI_NO_IMPRESSION)


def labeled_with_synthetic(tmp: Path) -> tuple[str, str, str]:
    reports = write_labeled_csv(tmp / "labeled.csv")
    return (f"labeled-csv:{reports}?uncertain=positive&blank=negative",
            "synthetic?reports=4&series=10&seed=3", LABELED_NO_IMPRESSION)


def mlflow_env(tmp: Path) -> dict[str, str]:
    """The venv first on PATH (mlflow run finds `python` there), a private store, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    env["MLFLOW_EXPERIMENT_NAME"] = EXPERIMENT
    env["HF_HUB_OFFLINE"] = "1"
    return env


def predicted_ids(run_id: str, task: str, folder: Path) -> set[str]:
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"predictions/{task}.jsonl",
                                                dst_path=str(folder))
    return {json.loads(line)["id"] for line in Path(local).read_text().splitlines()}


@pytest.mark.xdist_group("mlflow_run")
@pytest.mark.parametrize("build", [openi_csv_with_xlsx, openi_xml_with_csv, labeled_with_synthetic],
                         ids=["openi-csv+series-xlsx", "openi-xml+series-csv", "labeled-csv+synthetic"])
def test_mlflow_run_finetune_on_a_real_source(build, tiny_model_dir, tmp_path):
    reports_source, series_source, no_impression = build(tmp_path)
    data = f"{reports_source},{series_source}"
    cmd = ["mlflow", "run", str(ROOT), "-e", "finetune", "--env-manager", "local",
           "-P", f"model={tiny_model_dir}", "-P", f"data={data}",
           "-P", "tasks=labeling,harmonization,impression", "-P", "epochs=1", "-P", "checkpoint_epochs=1",
           "-P", "train_limit=2", "-P", "eval_limit=0"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=mlflow_env(tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    parent = next(r for r in runs if r.data.tags.get("role") == "finetune")
    child = next(r for r in runs if r.data.tags.get("role") == "checkpoint")
    shutil.rmtree(ROOT / "outputs" / parent.info.run_id, ignore_errors=True)  # mlflow run works in ROOT
    assert parent.info.status == "FINISHED" and child.info.status == "FINISHED"
    params = parent.data.params
    # The entry point got the spec intact (the sources below come from it). mlflow run logs the
    # value as it wrote it into the shell command: quoted, since it holds ?, & and #.
    assert params["data"] == shlex.quote(data)
    assert (params["reports_source"], params["series_source"]) == (reports_source, series_source)

    # Every dataset is a logged input whose source is the spec element it came from.
    inputs = {d.dataset.name: d.dataset for d in client.get_run(parent.info.run_id).inputs.dataset_inputs}
    assert set(inputs) == {"reports-train", "reports-test", "series-train", "series-test"}
    for name, dataset in inputs.items():
        source = reports_source if name.startswith("reports") else series_source
        assert json.loads(dataset.source) == {"uri": source} and dataset.digest, name

    # The report without an impression is a labeling test example, not an impression one.
    local = mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id, artifact_path="data/split_manifest.json", dst_path=str(tmp_path / "dl"))
    manifest = json.loads(Path(local).read_text())
    assert manifest["notes"]["reports_without_impression"] == "1"
    assert manifest["datasets"]["reports"]["test"][0] == no_impression
    metrics = parent.data.metrics
    tests = [metrics[f"n_test/{task}"] for task in ("labeling", "impression", "harmonization")]
    assert tests == [2, 1, 2]
    assert f"labeling/{no_impression}" in predicted_ids(child.info.run_id, "labeling", tmp_path / "p")
    assert f"impression/{no_impression}" not in predicted_ids(child.info.run_id, "impression", tmp_path / "p")
    assert {"labeling/f1_macro", "harmonization/accuracy", "impression/rougeL"} <= set(child.data.metrics)
