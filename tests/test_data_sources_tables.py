"""labeled-csv, series-table and DICOM folders; the shared table reader and error type.

Fixtures are written by the tests (CSV, JSON, XLSX through openpyxl, DICOM through pydicom).
"""

from __future__ import annotations

import csv
import json
import logging
import pickle
from pathlib import Path

import pytest

from pipelines.data.dicom_folder import collect_series_descriptions, load_dicom, scan_dicom_folder
from pipelines.data.errors import DataError
from pipelines.data.labeled_csv import load_labeled_csv, split_sections
from pipelines.data.records import labels_from_findings
from pipelines.data.series_table import load_series_table, normalize_class, series_id
from pipelines.data.sources import SourceSpec
from pipelines.data.tables import read_table, split_sheet
from pipelines.vocabulary import CHEXPERT_LABELS, SERIES_CLASSES


def labels(*positive: str) -> dict[str, str]:
    return labels_from_findings(set(positive))


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def error_text(load, spec: SourceSpec) -> str:
    with pytest.raises(DataError) as caught:
        load(spec)
    return str(caught.value)


# ---------------------------------------------------------------- labeled-csv

TEXTS = {
    "a1": "INDICATION: Cough.\nFINDINGS: The heart is enlarged. Lungs are clear.\nIMPRESSION: Cardiomegaly.",
    "a2": "COMPARISON: None. FINDINGS: Right IJ line in the SVC. IMPRESSION: Line in good position.",
    "a3": "Lungs are clear. No effusion.",  # no headers: all findings, no impression
}


def labeled_csv(
    tmp_path: Path, values: dict[str, dict[str, str]], extra: dict[str, str] | None = None
) -> Path:
    """A table with id, report and the 13 label columns; unlisted labels are 'No'."""
    header = ["id", "report", *CHEXPERT_LABELS, *(extra or {})]
    rows = [
        [rid, TEXTS[rid], *(v.get(k, "No") for k in CHEXPERT_LABELS), *(extra or {}).values()]
        for rid, v in values.items()
    ]
    return write_csv(tmp_path / "labeled.csv", header, rows)


def spec(path: Path, kind: str = "labeled-csv", **options: str) -> SourceSpec:
    return SourceSpec(kind, str(path), options)


def test_labeled_csv_reads_sections_and_mixed_label_spellings(tmp_path: Path) -> None:
    path = labeled_csv(
        tmp_path,
        {
            "a1": {"Cardiomegaly": "Yes", "Edema": "0", "Atelectasis": "false"},
            "a2": {"Support Devices": "1", "Pneumonia": "", "Lung Opacity": "TRUE"},
            "a3": {"Pleural Effusion": "-1"},
        },
    )
    bundle = load_labeled_csv(spec(path))
    a1, a2, a3 = bundle.reports
    assert (a1.indication, a1.findings, a1.impression) == (
        "Cough.",
        "The heart is enlarged. Lungs are clear.",
        "Cardiomegaly.",
    )
    assert (a2.comparison, a2.findings) == ("None.", "Right IJ line in the SVC.")
    assert a1.labels == labels("Cardiomegaly")
    assert a2.labels == labels("Support Devices", "Lung Opacity")  # blank -> No
    assert a3.labels == labels("Pleural Effusion")  # -1 -> Yes (uncertain=positive)
    assert (a3.findings, a3.impression) == ("Lungs are clear. No effusion.", "")
    assert bundle.notes == {
        "reports_rows": "3",
        "reports_loaded": "3",
        "reports_labels_from_table": "3",
        "reports_labels_from_mesh": "0",
        "reports_dropped_no_text": "0",
        "reports_without_impression": "1",
        "reports_without_findings": "0",
        "reports_without_headers": "1",
        "reports_no_finding_disagreements": "0",
    }


def test_labeled_csv_uncertain_and_blank_policies(tmp_path: Path) -> None:
    path = labeled_csv(tmp_path, {"a1": {"Edema": "-1", "Pneumonia": ""}})
    assert load_labeled_csv(spec(path, uncertain="negative")).reports[0].labels == labels()
    assert error_text(load_labeled_csv, spec(path, uncertain="error")) == (
        f"{path}, data row 1 (line 2), column 'Edema': uncertain label value '-1' "
        "(option uncertain=positive|negative decides it)"
    )
    assert error_text(load_labeled_csv, spec(path, blank="error")) == (
        f"{path}, data row 1 (line 2), column 'Pneumonia': "
        "empty label value (option blank=negative reads it as No)"
    )


def test_labeled_csv_bad_value_missing_label_column_and_no_finding(tmp_path: Path) -> None:
    path = labeled_csv(tmp_path, {"a1": {}, "a2": {"Fracture": "maybe"}})
    assert error_text(load_labeled_csv, spec(path)) == (  # a1's quoted report spans lines 2-4
        f"{path}, data row 2 (line 5), column 'Fracture': bad label value 'maybe'; "
        "expected Yes/No, 1/0, true/false or -1/blank"
    )
    short = write_csv(tmp_path / "short.csv", ["id", "report", "Cardiomegaly"], [["a1", "x", "1"]])
    assert error_text(load_labeled_csv, spec(short)).startswith(
        f"{short}, line 1, column 'Enlarged Cardiomediastinum': "
        "missing label column(s) ['Enlarged Cardiomediastinum', "
    )
    disagreeing = labeled_csv(tmp_path, {"a1": {"Cardiomegaly": "1"}}, extra={"No Finding": "1"})
    bundle = load_labeled_csv(spec(disagreeing))
    assert bundle.reports[0].labels["No Finding"] == "No"
    assert bundle.notes["reports_no_finding_disagreements"] == "1"


def test_labeled_csv_column_options_and_aliases(tmp_path: Path) -> None:
    header = ["accession", "text", *(k.lower().replace(" ", "_") for k in CHEXPERT_LABELS)]
    header[header.index("pleural_other")] = "Other Pleural"
    row = [
        "x9",
        "FINDINGS: Pleural thickening.",
        *("1" if k == "Pleural Other" else "0" for k in CHEXPERT_LABELS),
    ]
    path = write_csv(tmp_path / "t.csv", header, [row])
    assert error_text(load_labeled_csv, spec(path)) == (
        f"{path}, line 1, column 'id': missing column; the header has {header} "
        "(set the column with the option id=<name>)"
    )
    (record,) = load_labeled_csv(spec(path, id="accession", text="text")).reports
    assert (record.id, record.findings, record.labels) == (
        "x9",
        "Pleural thickening.",
        labels("Pleural Other"),
    )


def test_labeled_csv_duplicate_ids_empty_text_and_non_utf8(tmp_path: Path) -> None:
    header = ["id", "report", *CHEXPERT_LABELS]
    no = ["No"] * len(CHEXPERT_LABELS)
    path = write_csv(
        tmp_path / "t.csv", header, [["a1", "FINDINGS: x", *no], ["a2", "y", *no], ["a1", "z", *no]]
    )
    assert error_text(load_labeled_csv, spec(path)) == (
        f"{path}, data row 3 (line 4), column 'id': duplicate id 'a1' (first at data row 1)"
    )
    path = write_csv(tmp_path / "t.csv", header, [["a1", "FINDINGS: x", *no], ["a5", " ", *no]])
    assert (
        error_text(load_labeled_csv, spec(path))
        == f"{path}, data row 2 (line 3), column 'report': empty value"
    )
    path.write_bytes(path.read_bytes().replace(b"FINDINGS: x", b"Toux \xe0 l'effort."))
    assert error_text(load_labeled_csv, spec(path)) == (
        f"{path}, data row 1 (line 2), column 'report': not UTF-8 text (byte 0xe0); "
        "re-save the file with UTF-8 encoding"
    )


def test_labeled_csv_empty_file_and_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "e.csv"
    empty.write_text("\n\n")
    assert error_text(load_labeled_csv, spec(empty)) == f"{empty}: file is empty"
    absent = tmp_path / "absent.csv"
    assert error_text(load_labeled_csv, spec(absent)) == f"{absent}: file not found"


def text_only_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "reports.csv", ["id", "report"], [[rid, text] for rid, text in TEXTS.items()])


def test_labeled_csv_labels_from_a_json_object(tmp_path: Path) -> None:
    answers = {rid: {k: "No" for k in CHEXPERT_LABELS} for rid in TEXTS}
    answers["a1"]["Cardiomegaly"] = "Yes"
    answers["a2"] |= {"No Finding": "Yes", "Support Devices": True}
    labels_json = tmp_path / "labels.json"
    labels_json.write_text(json.dumps(answers))
    bundle = load_labeled_csv(spec(text_only_csv(tmp_path), labels=str(labels_json)))
    assert [r.labels for r in bundle.reports] == [labels("Cardiomegaly"), labels("Support Devices"), labels()]


def test_labeled_csv_labels_from_jsonl_list_and_folder(tmp_path: Path) -> None:
    reports = text_only_csv(tmp_path)
    rows = [{"id": rid, "labels": {k: int(k == "Edema") for k in CHEXPERT_LABELS}} for rid in TEXTS]
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(rows))
    folder = tmp_path / "by_id"
    folder.mkdir()
    for row in rows:
        (folder / f"{row['id']}.json").write_text(json.dumps(row["labels"]))
    for source in (jsonl, listed, folder):
        bundle = load_labeled_csv(spec(reports, labels=str(source)))
        assert [r.labels for r in bundle.reports] == [labels("Edema")] * 3, source


def test_labeled_csv_json_label_errors(tmp_path: Path) -> None:
    reports = text_only_csv(tmp_path)
    labels_json = tmp_path / "labels.json"
    complete = {k: "No" for k in CHEXPERT_LABELS}

    labels_json.write_text(json.dumps({"a1": complete, "a2": complete}))
    assert error_text(load_labeled_csv, spec(reports, labels=str(labels_json))) == (
        f"{reports}, data row 3 (line 6), column 'id': no labels for this report in {labels_json}"
    )
    labels_json.write_text(json.dumps({rid: complete for rid in [*TEXTS, "zz"]}))
    assert error_text(load_labeled_csv, spec(reports, labels=str(labels_json))) == (
        f"{labels_json}: 1 labeled id(s) are not in {reports}, e.g. ['zz']"
    )
    labels_json.write_text(json.dumps({"a1": complete | {"Edema": "often"}}))
    assert error_text(load_labeled_csv, spec(reports, labels=str(labels_json))) == (
        f"{labels_json}, report 'a1', key 'Edema': bad label value 'often'; "
        "expected Yes/No, 1/0, true/false or -1/blank"
    )
    labels_json.write_text(json.dumps({"a1": {k: v for k, v in complete.items() if k != "Fracture"}}))
    assert error_text(load_labeled_csv, spec(reports, labels=str(labels_json))) == (
        f"{labels_json}, report 'a1', key 'Fracture': missing label(s) ['Fracture']"
    )
    labels_json.write_text('{"a1": {},\n "a1": {}}')
    assert error_text(load_labeled_csv, spec(reports, labels=str(labels_json))) == (
        f"{labels_json}: duplicate key 'a1' in a JSON object"
    )
    labels_json.write_text('{"a1": {\n "Edema": "No",\n}}')
    assert error_text(load_labeled_csv, spec(reports, labels=str(labels_json))) == (
        f"{labels_json}, line 3: not valid JSON (Expecting property name enclosed in double quotes, column 1)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FINDINGS: Clear lungs. IMPRESSION: Normal.", {"findings": "Clear lungs.", "impression": "Normal."}),
        (
            "EXAM: CXR\nClinical history: fever\nFindings: Mild edema.\nTECHNIQUE: PA\nImpression:\nEdema.",
            {
                "indication": "fever",
                "findings": "EXAM: CXR\nMild edema.\nTECHNIQUE: PA",
                "impression": "Edema.",
            },
        ),
        (
            "Reason for exam: pain. Findings: Clear. Conclusion: Normal.",
            {"indication": "pain.", "findings": "Clear.", "impression": "Normal."},
        ),
        ("No acute disease; see impression: none.", {"findings": "No acute disease; see impression: none."}),
        ("COMPARISON: 2010.\nFINDINGS: a\nFINDINGS: b", {"comparison": "2010.", "findings": "a\nb"}),
    ],
)
def test_split_sections(text: str, expected: dict[str, str]) -> None:
    sections, _ = split_sections(text)
    assert sections == {"comparison": "", "indication": "", "findings": "", "impression": ""} | expected


# ---------------------------------------------------------------- series-table


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("FLAIR", "T2/FLAIR"),
        ("T2 FLAIR", "T2/FLAIR"),
        ("t2/flair", "T2/FLAIR"),
        ("T2-FLAIR", "T2/FLAIR"),
        ("T2_FLAIR", "T2/FLAIR"),
        ("t1", "T1"),
        ("T1W", "T1"),
        ("t2", "T2"),
        ("DWI", "DWI"),
        ("Diffusion", "DWI"),
        ("adc", "ADC"),
        ("swi", "SWI"),
        ("other", "Other"),
        ("OTHER", "Other"),
        ("T3", None),
        ("T1 FLAIR", None),
        ("", None),
    ],
)
def test_class_spellings(spelling: str, expected: str | None) -> None:
    assert normalize_class(spelling) == expected


def test_every_class_names_itself() -> None:
    assert [normalize_class(c) for c in SERIES_CLASSES] == list(SERIES_CLASSES)


def series_csv(tmp_path: Path, rows: list[list[str]], header=("description", "class")) -> Path:
    return write_csv(tmp_path / "series.csv", list(header), rows)


def test_series_table_normalizes_and_deduplicates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = series_csv(
        tmp_path,
        [
            ["AX T2 FLAIR", "flair"],
            ["AX  T2 FLAIR ", "T2/FLAIR"],  # duplicate after whitespace normalization, same class
            ["ep2d_diff_trace", "dwi"],
            ["ep2d_diff_trace", "ADC"],  # conflict: first class kept
            ["ax t2 flair", "t2 flair"],  # case differs: a different description
        ],
    )
    with caplog.at_level(logging.WARNING):
        bundle = load_series_table(spec(path, "series-table"))
    assert [(s.description, s.label) for s in bundle.series] == [
        ("AX T2 FLAIR", "T2/FLAIR"),
        ("ep2d_diff_trace", "DWI"),
        ("ax t2 flair", "T2/FLAIR"),
    ]
    assert bundle.series[0].id == series_id("AX T2 FLAIR")
    assert bundle.notes == {
        "series_rows": "5",
        "series_loaded": "3",
        "series_duplicates_removed": "2",
        "series_label_conflicts": "1",
        "series_label_conflict_examples": "'ep2d_diff_trace': DWI (data row 3) vs ADC (data row 4)",
    }
    assert "different classes" in caplog.text


def test_series_ids_do_not_depend_on_row_order(tmp_path: Path) -> None:
    rows = [["SAG T1", "T1"], ["SWI", "swi"]]
    first = {
        s.description: s.id
        for s in load_series_table(spec(series_csv(tmp_path, rows), "series-table")).series
    }
    second = {
        s.description: s.id
        for s in load_series_table(spec(series_csv(tmp_path, rows[::-1]), "series-table")).series
    }
    assert first == second and first["SAG T1"].startswith("series-")


def test_series_table_unknown_class_and_empty_cells(tmp_path: Path) -> None:
    path = series_csv(tmp_path, [["SAG T1", "T1"], ["MYSTERY", "T3"]])
    assert error_text(load_series_table, spec(path, "series-table")) == (
        f"{path}, data row 2 (line 3), column 'class': unknown class 'T3'; expected one of "
        f"{list(SERIES_CLASSES)} or a spelling listed in CLASS_SYNONYMS"
    )
    path = series_csv(tmp_path, [["SAG T1", "T1"], ["", "T2"]])
    assert error_text(load_series_table, spec(path, "series-table")) == (
        f"{path}, data row 2 (line 3), column 'description': empty value"
    )


def test_series_table_column_detection_and_options(tmp_path: Path) -> None:
    path = series_csv(tmp_path, [["1", "AX DWI", "DWI"]], header=("n", "Series_Description", "Sequence Type"))
    assert [(s.description, s.label) for s in load_series_table(spec(path, "series-table")).series] == [
        ("AX DWI", "DWI")
    ]
    odd = series_csv(tmp_path, [["AX DWI", "DWI"]], header=("protocol", "truth"))
    assert error_text(load_series_table, spec(odd, "series-table")) == (
        f"{odd}, line 1, column 'description': no description column found among ['protocol', 'truth']; "
        "name it with the option description=<column>"
    )
    loaded = load_series_table(spec(odd, "series-table", description="protocol", **{"class": "truth"}))
    assert loaded.series[0].label == "DWI"
    assert error_text(load_series_table, spec(odd, "series-table", description="Protocol Name")) == (
        f"{odd}, line 1, column 'Protocol Name': missing column; the header has ['protocol', 'truth'] "
        "(set the column with the option description=<name>)"
    )


def test_series_table_split_option_keeps_one_split(tmp_path: Path) -> None:
    rows = [["AX DWI", "DWI", "dev"], ["COR T2", "T2", "Final"], ["MYSTERY", "T3", "final"], ["SWI", "swi", "DEV"]]
    path = series_csv(tmp_path, rows, header=("description", "class", "split"))
    dev = load_series_table(spec(path, "series-table", split="dev"))
    assert [(s.description, s.label) for s in dev.series] == [("AX DWI", "DWI"), ("SWI", "SWI")]
    assert (dev.notes["series_rows"], dev.notes["series_loaded"]) == ("4", "2")
    assert (dev.notes["series_split"], dev.notes["series_rows_other_splits"]) == ("dev", "2")
    # rows of the chosen split are checked as usual; without the option every row is read
    assert "unknown class 'T3'" in error_text(load_series_table, spec(path, "series-table", split="final"))
    assert "unknown class 'T3'" in error_text(load_series_table, spec(path, "series-table"))
    assert error_text(load_series_table, spec(path, "series-table", split="test")) == (
        f"{path}, line 1, column 'split': no row has split='test'; the column holds ['DEV', 'Final', 'dev', 'final']"
    )
    no_column = series_csv(tmp_path, [["AX DWI", "DWI"]])
    assert error_text(load_series_table, spec(no_column, "series-table", split="dev")) == (
        f"{no_column}, line 1, column 'split': missing column; the header has ['description', 'class']"
    )


def write_workbook(path: Path) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    first = book.active
    first.title = "Sheet1"
    first.append(["description", "class"])
    first.append(["COR T2", "T2"])
    second = book.create_sheet("Sheet2")
    second.append(["Series Description", "Label", None])
    second.append(["AX FLAIR", "FLAIR", None])
    second.append([None, None, None])  # blank rows are skipped
    second.append(["AX SWI", "mystery", None])
    book.save(path)
    return path


def test_series_table_xlsx_sheets(tmp_path: Path) -> None:
    path = write_workbook(tmp_path / "series.xlsx")
    assert [s.description for s in load_series_table(spec(path, "series-table")).series] == ["COR T2"]
    message = error_text(load_series_table, spec(Path(f"{path}#Sheet2"), "series-table"))
    assert message.startswith(
        f"{path}, sheet 'Sheet2', data row 2 (sheet row 4), column 'Label': unknown class 'mystery'"
    )
    assert error_text(load_series_table, spec(Path(f"{path}#2"), "series-table")) == message
    assert error_text(load_series_table, spec(Path(f"{path}#Sheet9"), "series-table")) == (
        f"{path}: no sheet 'Sheet9'; the workbook has sheets ['Sheet1', 'Sheet2']"
    )


def test_series_table_rejects_broken_workbooks_and_xls(tmp_path: Path) -> None:
    fake = tmp_path / "fake.xlsx"
    fake.write_text("description,class\n")
    assert error_text(load_series_table, spec(fake, "series-table")).startswith(
        f"{fake}: not a readable XLSX workbook"
    )
    old = tmp_path / "old.xls"
    old.write_bytes(b"\xd0\xcf\x11\xe0")
    assert error_text(load_series_table, spec(old, "series-table")) == (
        f"{old}: old binary Excel (.xls) is not supported; save the sheet as .xlsx or .csv"
    )
    csv_path = series_csv(tmp_path, [["AX T1", "T1"]])
    assert error_text(load_series_table, spec(Path(f"{csv_path}#Sheet2"), "series-table")) == (
        f"{csv_path}: a sheet ('Sheet2') can only be selected in an XLSX workbook"
    )


# ---------------------------------------------------------------- DICOM folders


def write_dicom(path: Path, description: str | None, series_uid: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = MRImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "MR"
    dataset.SeriesInstanceUID = series_uid
    if description is not None:
        dataset.SeriesDescription = description
    dataset.Rows, dataset.Columns = 2, 2
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.SamplesPerPixel, dataset.PixelRepresentation = 1, 0
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.PixelData = b"\x00" * 8
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)


@pytest.fixture
def dicom_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "pacs"
    for index in range(3):  # one series of three images
        write_dicom(folder / "study1" / f"flair{index}.dcm", "AX T2 FLAIR", "1.2.3.1")
    write_dicom(folder / "study2" / "IM0001", "AX T2 FLAIR", "1.2.3.2")  # no extension, second series
    write_dicom(folder / "study2" / "IM0002", "DWI TRACE", "1.2.3.3")
    write_dicom(folder / "study2" / "IM0003", None, "1.2.3.4")
    (folder / "README.txt").write_text("exported from PACS")
    (folder / "study2" / "DICOMDIR.bak").write_bytes(b"\x00" * 200)
    return folder


def test_collect_series_descriptions_counts_series_not_files(dicom_folder: Path) -> None:
    assert collect_series_descriptions(dicom_folder) == [("AX T2 FLAIR", 2), ("DWI TRACE", 1)]
    scan = scan_dicom_folder(dicom_folder)
    assert (scan.dicom_files, scan.non_dicom_files, scan.without_description, scan.unreadable_files) == (
        6,
        2,
        1,
        [],
    )


def test_dicom_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="DICOM folder not found"):
        collect_series_descriptions(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError) as caught:
        collect_series_descriptions(tmp_path)
    assert (
        str(caught.value)
        == f"{tmp_path}: no DICOM files found (1 non-DICOM and 0 unreadable file(s) skipped)"
    )
    write_dicom(tmp_path / "a.dcm", None, "1.2.3")
    with pytest.raises(DataError) as caught:
        collect_series_descriptions(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}, tag 'SeriesDescription (0008,103E)': "
        "none of the 1 DICOM files has a SeriesDescription (0008,103E)"
    )


def test_dicom_source_is_not_for_training(dicom_folder: Path) -> None:
    assert error_text(load_dicom, spec(dicom_folder, "dicom")).startswith(
        f"{dicom_folder}: dicom sources are unlabeled; use them with the harmonize entry point"
    )


# ---------------------------------------------------------------- the shared reader and error


def test_table_reader_handles_bom_blank_lines_tsv_and_unnamed_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbf,id,text\n\n0,a,x\n1,b,\n")
    table = read_table(path)
    assert table.header == ["", "id", "text"]
    assert [(r.number, r.position, r.values) for r in table.rows] == [
        (1, 3, {"id": "a", "text": "x"}),
        (2, 4, {"id": "b", "text": ""}),
    ]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("id\ttext\na\tx, y\n")
    assert read_table(tsv).rows[0].values == {"id": "a", "text": "x, y"}
    repeated = tmp_path / "r.csv"
    repeated.write_text("id,ID\n1,2\n")
    with pytest.raises(DataError, match=r"r\.csv, line 1: the header repeats column\(s\) \['ID', 'id'\]"):
        read_table(repeated)


def test_split_sheet_keeps_existing_paths_whole(tmp_path: Path) -> None:
    odd = tmp_path / "a#b.csv"
    odd.write_text("x\n1\n")
    assert split_sheet(str(odd)) == (odd, None)
    assert split_sheet(f"{tmp_path}/s.xlsx#Sheet 2") == (tmp_path / "s.xlsx", "Sheet 2")


def test_data_error_is_a_value_error_and_pickles() -> None:
    error = DataError("/d/x.csv", "bad label value 'maybe'", row=3, line=4, field="Edema")
    assert isinstance(error, ValueError)
    assert str(error) == "/d/x.csv, data row 3 (line 4), column 'Edema': bad label value 'maybe'"
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.row, copy.field) == (str(error), 3, "Edema")


def test_table_reader_round_trips_what_csv_writes(tmp_path_factory: pytest.TempPathFactory) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    cell = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
    row = st.tuples(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), cell, cell)
    folder = tmp_path_factory.mktemp("roundtrip")

    @settings(max_examples=25, deadline=None)
    @given(st.lists(row, min_size=1, max_size=6))
    def check(rows: list[tuple[str, str, str]]) -> None:
        path = write_csv(folder / "t.csv", ["id", "a", "b"], [list(r) for r in rows])
        table = read_table(path)
        assert [tuple(r.values.values()) for r in table.rows] == rows
        assert [r.number for r in table.rows] == list(range(1, len(rows) + 1))

    check()
