"""Open-i report sources (openi-csv, openi-xml), the MeSH mapping, and loading through a data spec.

Every fixture is written by the test into tmp_path; error tests compare the whole message, since
naming the file, the row and the field is the contract.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import tarfile
from pathlib import Path

import pytest

from pipelines.data import sources
from pipelines.data.errors import DataError
from pipelines.data.mesh import DEFAULT_MAPPING, load_mapping, split_terms
from pipelines.data.openi_csv import load_openi_csv
from pipelines.data.openi_xml import load_openi_xml
from pipelines.data.records import labels_from_findings
from pipelines.data.sources import SourceSpec, load_data, parse_source_spec
from pipelines.vocabulary import CHEXPERT_LABELS, LABEL_KEYS, NO, YES

HEADER = ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"]
# uid, MeSH, indication, comparison, findings, impression (Problems and image are filled in).
REPORTS = [
    (
        "1",
        "normal",
        "Positive TB test",
        "None.",
        "The cardiac silhouette and mediastinum size are within normal limits. No focal opacity.",
        "Normal chest x-XXXX.",
    ),
    (
        "2",
        "Cardiomegaly/borderline;Pulmonary Artery/enlarged",
        "XXXX-year-old male, chest pain.",
        "",
        "Borderline cardiomegaly. Enlarged pulmonary arteries.",
        "Borderline cardiomegaly.",
    ),
    (
        "3",
        "Opacity/lung/base/left;Pleural Effusion/left/small",
        "Cough.",
        "Chest XXXX.",
        "Left basilar opacity with a small left effusion.",
        "",
    ),
    ("5", "Calcified Granuloma/lung/upper lobe/right", "", "", "", ""),
    (
        "10",
        "Catheters, Indwelling;Lung/hypoinflation",
        "Line placement.",
        "",
        "Right IJ catheter tip in the SVC. Low lung volumes.",
        "No acute cardiopulmonary disease.",
    ),
]


def labels(*positive: str) -> dict[str, str]:
    return labels_from_findings(set(positive))


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def indiana_csv(tmp_path: Path, reports=REPORTS, name: str = "indiana_reports.csv") -> Path:
    rows = [
        [u, m, m.split("/")[0], "Xray Chest PA and Lateral", ind, comp, f, imp]
        for u, m, ind, comp, f, imp in reports
    ]
    return write_csv(tmp_path / name, HEADER, rows)


def ecgen_xml(
    uid: str, comparison: str, indication: str, findings: str, impression: str, major, automatic=()
) -> str:
    def text(value: str) -> str:
        return value.replace("&", "&amp;").replace("<", "&lt;")

    sections = "\n".join(
        f'          <AbstractText Label="{label}">{text(value)}</AbstractText>'
        for label, value in (
            ("COMPARISON", comparison),
            ("INDICATION", indication),
            ("FINDINGS", findings),
            ("IMPRESSION", impression),
        )
    )
    terms = "".join(f"<major>{text(t)}</major>" for t in major) + "".join(
        f"<automatic>{text(t)}</automatic>" for t in automatic
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <meta type="rr"/>
  <uId id="CXR{uid}"/>
  <pmcId id="{uid}"/>
  <docSource>CXR</docSource>
  <IUXRId id="{uid}"/>
  <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
    <Article PubModel="Electronic">
      <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
      <Abstract>
{sections}
      </Abstract>
    </Article>
  </MedlineCitation>
  <MeSH>{terms}</MeSH>
</eCitation>
"""


def ecgen_folder(tmp_path: Path, reports=REPORTS) -> Path:
    folder = tmp_path / "ecgen-radiology"
    folder.mkdir()
    for uid, mesh, indication, comparison, findings, impression in reports:
        xml = ecgen_xml(uid, comparison, indication, findings, impression, split_terms(mesh))
        (folder / f"{uid}.xml").write_text(xml, encoding="utf-8")
    return folder


def csv_spec(path: Path, **options: str) -> SourceSpec:
    return SourceSpec("openi-csv", str(path), options)


def xml_spec(path: Path, **options: str) -> SourceSpec:
    return SourceSpec("openi-xml", str(path), options)


# ---------------------------------------------------------------- MeSH mapping


# Hand-labeled: each MeSH field read by a person against the CheXpert definitions.
HAND_LABELED = [
    ("normal", set()),
    ("Cardiomegaly/mild", {"Cardiomegaly"}),
    ("Cardiomegaly/borderline;Pulmonary Artery/enlarged", {"Cardiomegaly"}),
    ("Cardiac Shadow/enlarged/severe", {"Cardiomegaly"}),
    ("Mediastinum/enlarged;Aorta/tortuous", {"Enlarged Cardiomediastinum"}),
    ("Opacity/lung/base/left", {"Lung Opacity"}),
    ("Opacity/lung/base/left;Pleural Effusion/left/small", {"Lung Opacity", "Pleural Effusion"}),
    ("Airspace Disease/lung/middle lobe/right;Pneumonia/middle lobe/right", {"Lung Opacity", "Pneumonia"}),
    ("Pulmonary Atelectasis/base/bilateral/mild", {"Atelectasis"}),
    ("Pulmonary Congestion/mild;Cardiomegaly/moderate", {"Edema", "Cardiomegaly"}),
    ("Pulmonary Edema/interstitial", {"Edema"}),
    ("Consolidation/lung/lower lobe/right", {"Consolidation"}),
    ("Pneumothorax/apex/right/small", {"Pneumothorax"}),
    ("Thickening/pleura/apex/bilateral", {"Pleural Other"}),
    ("Costophrenic Angle/left/blunted", {"Pleural Effusion"}),
    ("Fractures, Bone/ribs/left/healed", {"Fracture"}),
    ("Nodule/lung/upper lobe/left", {"Lung Lesion"}),
    ("Calcified Granuloma/lung/upper lobe/right", {"Lung Lesion"}),
    ("Cicatrix/lung/apex/right", {"Lung Opacity"}),
    ("Cicatrix/abdomen", set()),
    ("Fibrosis/pleura/apex", {"Pleural Other"}),
    ("Catheters, Indwelling;Lung/hypoinflation", {"Support Devices"}),
    ("Thoracic Vertebrae/degenerative/mild;Spine/degenerative", set()),
    ("Emphysema;Hernia, Hiatal", set()),
    ("Hydropneumothorax/right", {"Pneumothorax", "Pleural Effusion"}),
    ("  opacity / LUNG / base ; PNEUMOTHORAX ", {"Lung Opacity", "Pneumothorax"}),
]


@pytest.mark.parametrize(("mesh", "positive"), HAND_LABELED, ids=[m for m, _ in HAND_LABELED])
def test_shipped_mapping_agrees_with_hand_labels(mesh: str, positive: set[str]) -> None:
    found, unmapped = load_mapping().labels_for(split_terms(mesh))
    assert unmapped == []
    assert found == positive


def test_no_finding_is_derived_from_the_mapped_pathologies() -> None:
    mapping = load_mapping()
    devices_only = labels_from_findings(mapping.labels_for(["Catheters, Indwelling"])[0])
    assert devices_only["No Finding"] == YES and devices_only["Support Devices"] == YES
    sick = labels_from_findings(mapping.labels_for(["Cardiomegaly/mild"])[0])
    assert sick["No Finding"] == NO


def test_every_chexpert_label_is_reachable_from_the_shipped_mapping() -> None:
    mapping = load_mapping()
    reachable = {label for rules in mapping.rules.values() for rule in rules for label in rule.labels}
    assert reachable == set(CHEXPERT_LABELS)


def test_unlisted_heading_is_unmapped() -> None:
    found, unmapped = load_mapping().labels_for(["Cardiomegaly", "Xyzzy/lung"])
    assert found == {"Cardiomegaly"}
    assert unmapped == ["Xyzzy/lung"]


def write_mapping(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mapping.csv"
    path.write_text("# my mapping\n\nmesh,chexpert,note\n" + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "Cardiomegaly,Cardiomegally,\n",
            "line 4, column 'chexpert': unknown CheXpert label 'Cardiomegally'",
        ),
        ("normal,No Finding,\n", "line 4, column 'chexpert': 'No Finding' is derived"),
        (
            "Mass,Lung Lesion,\n# c\nMASS,Lung Lesion,\n",
            "line 6, column 'mesh': 'MASS' is listed twice (first on line 4)",
        ),
        (",Edema,\n", "line 4, column 'mesh': empty MeSH heading"),
        ("Fractures, Bone,Fracture,\n", "line 4: 4 fields, expected at most 3; quote a heading"),
    ],
)
def test_malformed_mapping_rows_name_their_line(tmp_path: Path, body: str, message: str) -> None:
    path = write_mapping(tmp_path, body)
    with pytest.raises(DataError) as caught:
        load_mapping(path)
    assert str(caught.value).startswith(f"{path.resolve()}, {message}")


def test_mapping_header_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("heading,label\nnormal,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv, line 1: the header must be mesh,chexpert,note"):
        load_mapping(bad)
    with pytest.raises(DataError, match="MeSH mapping file not found"):
        load_mapping(tmp_path / "absent.csv")


def test_edited_mapping_is_reread(tmp_path: Path) -> None:
    path = write_mapping(tmp_path, "Cardiomegaly,Cardiomegaly,\n")
    assert load_mapping(path).labels_for_term("Cardiomegaly/borderline") == {"Cardiomegaly"}
    path.write_text(
        "mesh,chexpert,note\nCardiomegaly,Cardiomegaly,\nCardiomegaly/borderline,,not counted here\n",
        encoding="utf-8",
    )
    assert load_mapping(path).labels_for_term("Cardiomegaly/borderline") == set()


def test_shipped_mapping_is_the_default() -> None:
    assert DEFAULT_MAPPING.name == "mesh_to_chexpert.csv" and DEFAULT_MAPPING.is_file()


# ---------------------------------------------------------------- openi-csv


def test_openi_csv_builds_sections_labels_and_notes(tmp_path: Path) -> None:
    bundle = load_openi_csv(csv_spec(indiana_csv(tmp_path)))
    by_id = {r.id: r for r in bundle.reports}
    assert list(by_id) == ["1", "2", "3", "10"]  # 5 has neither findings nor impression
    first = by_id["1"]
    assert (first.comparison, first.indication) == ("None.", "Positive TB test")
    assert first.impression == "Normal chest x-XXXX."  # anonymization tokens are kept
    assert first.text() == (
        "COMPARISON: None.\nINDICATION: Positive TB test\n"
        "FINDINGS: The cardiac silhouette and mediastinum size are within normal limits. No focal opacity.\n"
        "IMPRESSION: Normal chest x-XXXX."
    )
    assert first.labels == labels()
    assert by_id["2"].labels == labels("Cardiomegaly")
    assert by_id["3"].labels == labels("Lung Opacity", "Pleural Effusion")
    assert by_id["3"].impression == ""
    assert by_id["10"].labels == labels("Support Devices")
    assert by_id["10"].labels["No Finding"] == YES
    assert bundle.notes == {
        "reports_rows": "5",
        "reports_loaded": "4",
        "reports_dropped_no_text": "1",
        "reports_without_impression": "1",
        "reports_without_findings": "0",
        "reports_labels_from_mesh": "4",
        "reports_labels_from_table": "0",
        "reports_mesh_mapping": str(DEFAULT_MAPPING.resolve()),
    }


def test_openi_csv_optional_columns_and_header_case(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        ["UID", "mesh", "Findings", "IMPRESSION"],
        [["7", "Pneumothorax/right", "Right pneumothorax.", "Pneumothorax."]],
    )
    (record,) = load_openi_csv(csv_spec(path)).reports
    assert (record.id, record.comparison, record.indication) == ("7", "", "")
    assert record.labels == labels("Pneumothorax")


def test_unmapped_headings_are_counted_or_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = indiana_csv(tmp_path, [("1", "Xyzzy/lung;Cardiomegaly", "", "", "Big heart.", "Cardiomegaly.")])
    with caplog.at_level(logging.WARNING):
        bundle = load_openi_csv(csv_spec(path))
    assert bundle.notes["reports_mesh_unmapped"] == "Xyzzy (1)"
    assert "match no row" in caplog.text
    with pytest.raises(DataError) as caught:
        load_openi_csv(csv_spec(path, unmapped="error"))
    assert str(caught.value).startswith(
        f"{path}, data row 1 (line 2), column 'MeSH': MeSH term 'Xyzzy/lung' matches no row of "
    )


def test_openi_csv_custom_mapping_option(tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, "Calcified Granuloma,,healed: not a lesion here\nnormal,,\n")
    path = indiana_csv(
        tmp_path, [("1", "Calcified Granuloma/lung", "", "", "Granuloma.", "No acute disease.")]
    )
    (record,) = load_openi_csv(csv_spec(path, mapping=str(mapping))).reports
    assert record.labels == labels()


def openi_error(tmp_path: Path, path: Path) -> str:
    with pytest.raises(DataError) as caught:
        load_openi_csv(csv_spec(path))
    return str(caught.value)


def test_openi_csv_missing_file_and_column(tmp_path: Path) -> None:
    absent = tmp_path / "absent.csv"
    assert openi_error(tmp_path, absent) == f"{absent}: file not found"
    path = write_csv(tmp_path / "r.csv", ["uid", "findings", "impression"], [["1", "x", "y"]])
    assert openi_error(tmp_path, path) == (
        f"{path}, line 1, column 'MeSH': missing column; the header has ['uid', 'findings', 'impression']"
    )


def test_openi_csv_empty_and_header_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert openi_error(tmp_path, empty) == f"{empty}: file is empty"
    header_only = write_csv(tmp_path / "h.csv", HEADER, [])
    assert openi_error(tmp_path, header_only) == f"{header_only}, line 1: no data rows below the header"


def test_openi_csv_non_utf8_field(tmp_path: Path) -> None:
    path = indiana_csv(tmp_path)
    data = path.read_bytes().replace(b"Borderline cardiomegaly. Enlarged", b"Borderline cardiom\xe9galie.")
    path.write_bytes(data)
    assert openi_error(tmp_path, path) == (
        f"{path}, data row 2 (line 3), column 'findings': not UTF-8 text (byte 0xe9); "
        "re-save the file with UTF-8 encoding"
    )


def test_openi_csv_duplicate_and_empty_ids(tmp_path: Path) -> None:
    path = indiana_csv(tmp_path, [*REPORTS[:3], REPORTS[0]])
    assert openi_error(tmp_path, path) == (
        f"{path}, data row 4 (line 5), column 'uid': duplicate id '1' (first at data row 1)"
    )
    blank = indiana_csv(tmp_path, [REPORTS[0], ("", *REPORTS[1][1:])], name="blank.csv")
    assert openi_error(tmp_path, blank) == f"{blank}, data row 2 (line 3), column 'uid': empty value"


def test_openi_csv_empty_mesh(tmp_path: Path) -> None:
    path = indiana_csv(tmp_path, [REPORTS[0], ("2", "", "", "", "Clear lungs.", "Normal.")])
    assert openi_error(tmp_path, path) == (
        f"{path}, data row 2 (line 3), column 'MeSH': empty value: no MeSH terms to derive labels from"
    )


def test_openi_csv_row_numbers_follow_multiline_fields(tmp_path: Path) -> None:
    reports = [("1", "normal", "", "", "Line one.\nLine two.", "Normal."), ("1", "normal", "", "", "x", "y")]
    path = indiana_csv(tmp_path, reports)
    assert openi_error(tmp_path, path).startswith(f"{path}, data row 2 (line 4), column 'uid': duplicate id")


def test_openi_csv_unquoted_comma_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(",".join(HEADER) + "\n1,normal,normal,img,ind,comp,Lungs clear, heart normal.,Normal.\n")
    assert openi_error(tmp_path, path) == (
        f"{path}, data row 1 (line 2): has 9 fields but the header has 8 (an unquoted comma in a text field?)"
    )


def test_openi_csv_with_no_usable_report(tmp_path: Path) -> None:
    path = indiana_csv(tmp_path, [("1", "normal", "x", "", "", "")])
    assert openi_error(tmp_path, path) == (
        f"{path}: no usable reports among 1: 1 have neither findings nor impression, "
        "0 are not in the labels file"
    )


def test_openi_bad_option_values(tmp_path: Path) -> None:
    path = indiana_csv(tmp_path)
    with pytest.raises(ValueError, match=r"option unmapped='ignore' must be one of \['warn', 'error'\]"):
        load_openi_csv(csv_spec(path, unmapped="ignore"))
    with pytest.raises(ValueError, match=r"option uncertain='maybe' must be one of"):
        load_openi_csv(csv_spec(path, uncertain="maybe"))


# ---------------------------------------------------------------- radiologist labels over Open-i text


def label_table(tmp_path: Path, rows: dict[str, dict[str, str]], name: str = "labels.csv") -> Path:
    header = ["id", *CHEXPERT_LABELS]
    return write_csv(
        tmp_path / name, header, [[rid, *(v.get(k, "0") for k in CHEXPERT_LABELS)] for rid, v in rows.items()]
    )


def test_label_table_takes_precedence_over_mesh(tmp_path: Path) -> None:
    table = label_table(tmp_path, {"1": {"Atelectasis": "1"}, "10": {"Support Devices": "1", "Edema": "-1"}})
    bundle = load_openi_csv(csv_spec(indiana_csv(tmp_path), labels=str(table)))
    by_id = {r.id: r for r in bundle.reports}
    assert by_id["1"].labels == labels("Atelectasis")  # MeSH said normal
    assert by_id["10"].labels == labels("Support Devices", "Edema")  # uncertain=positive by default
    assert by_id["2"].labels == labels("Cardiomegaly")  # not in the table: MeSH
    assert bundle.notes["reports_labels_from_table"] == "2"
    assert bundle.notes["reports_labels_from_mesh"] == "2"
    assert bundle.notes["reports_dropped_unlabeled"] == "0"

    negative = load_openi_csv(csv_spec(indiana_csv(tmp_path), labels=str(table), uncertain="negative"))
    assert {r.id: r for r in negative.reports}["10"].labels == labels("Support Devices")


def test_label_table_can_restrict_to_labeled_reports(tmp_path: Path) -> None:
    table = label_table(tmp_path, {"1": {}, "3": {"Pleural Effusion": "1"}, "5": {}})
    bundle = load_openi_csv(csv_spec(indiana_csv(tmp_path), labels=str(table), unlabeled="drop"))
    assert [r.id for r in bundle.reports] == ["1", "3"]  # 5 has no text
    assert bundle.notes["reports_dropped_unlabeled"] == "2"
    assert bundle.notes["reports_without_impression"] == "1"


def test_label_table_with_unknown_ids_or_bad_values(tmp_path: Path) -> None:
    path = indiana_csv(tmp_path)
    table = label_table(tmp_path, {"1": {}, "99": {}})
    with pytest.raises(DataError) as caught:
        load_openi_csv(csv_spec(path, labels=str(table)))
    assert str(caught.value) == (
        f"{table}, column 'id': 1 labeled report id(s) are not in {path}, e.g. ['99']; "
        "remove them or check the id column"
    )
    bad = label_table(tmp_path, {"1": {"Edema": "maybe"}}, name="bad.csv")
    with pytest.raises(DataError) as caught:
        load_openi_csv(csv_spec(path, labels=str(bad)))
    assert str(caught.value) == (
        f"{bad}, data row 1 (line 2), column 'Edema': bad label value 'maybe'; "
        "expected Yes/No, 1/0, true/false or -1/blank"
    )


# ---------------------------------------------------------------- openi-xml


def test_openi_xml_gives_the_same_records_as_the_csv(tmp_path: Path) -> None:
    from_csv = load_openi_csv(csv_spec(indiana_csv(tmp_path)))
    from_xml = load_openi_xml(xml_spec(ecgen_folder(tmp_path)))
    assert from_xml.reports == from_csv.reports  # same ids, sections, labels, and order (10 after 5)
    assert from_xml.fingerprint() == from_csv.fingerprint()
    assert from_xml.notes == from_csv.notes


def test_openi_xml_reads_a_tgz_archive_and_the_parent_folder(tmp_path: Path) -> None:
    folder = ecgen_folder(tmp_path)
    archive = tmp_path / "NLMCXR_reports.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="ecgen-radiology")
    expected = load_openi_xml(xml_spec(folder)).reports
    assert load_openi_xml(xml_spec(archive)).reports == expected
    assert load_openi_xml(xml_spec(tmp_path)).reports == expected


def test_openi_xml_terms_option_adds_automatic_terms(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    xml = ecgen_xml("4", "", "", "Heart is large.", "Cardiomegaly.", ["Cardiomegaly"], ["Pulmonary Edema"])
    (folder / "4.xml").write_text(xml, encoding="utf-8")
    assert load_openi_xml(xml_spec(folder)).reports[0].labels == labels("Cardiomegaly")
    assert load_openi_xml(xml_spec(folder, terms="all")).reports[0].labels == labels("Cardiomegaly", "Edema")


def test_openi_xml_id_falls_back_to_the_file_name(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    xml = ecgen_xml("4", "", "", "Clear.", "Normal.", ["normal"])
    xml = xml.replace('<uId id="CXR4"/>', "").replace('<pmcId id="4"/>', "").replace('<IUXRId id="4"/>', "")
    (folder / "report-a.xml").write_text(xml, encoding="utf-8")
    assert load_openi_xml(xml_spec(folder)).reports[0].id == "report-a"


def xml_error(path: Path) -> str:
    with pytest.raises(DataError) as caught:
        load_openi_xml(xml_spec(path))
    return str(caught.value)


def test_openi_xml_malformed_and_non_utf8_files(tmp_path: Path) -> None:
    folder = ecgen_folder(tmp_path)
    broken = folder / "2.xml"
    broken.write_text(broken.read_text().replace("</MeSH>", "</Mesh>"), encoding="utf-8")
    message = xml_error(folder)
    assert message == f"{broken}, line 19: not well-formed XML (mismatched tag: line 19, column 88)"

    broken.write_bytes(ecgen_xml("2", "", "", "Cardiom\xe9galie.", "x", ["normal"]).encode("latin-1"))
    assert xml_error(folder) == (
        f"{broken}, line 14, element 'AbstractText Label=FINDINGS': not UTF-8 text (byte 0xe9); "
        "re-save the file as UTF-8"
    )
    broken.write_bytes(b"")
    assert xml_error(folder) == f"{broken}: file is empty"


def test_openi_xml_duplicate_ids_missing_sections_and_empty_folders(tmp_path: Path) -> None:
    folder = ecgen_folder(tmp_path)
    copy = folder / "copy"
    copy.mkdir()
    (copy / "1b.xml").write_text((folder / "1.xml").read_text(), encoding="utf-8")
    assert xml_error(folder) == (
        f"{copy / '1b.xml'}, element 'IUXRId': duplicate id '1' (first at file {folder / '1.xml'})"
    )

    other = tmp_path / "other"
    other.mkdir()
    (other / "a.xml").write_text("<eCitation><MeSH/></eCitation>", encoding="utf-8")
    assert xml_error(other) == (
        f"{other / 'a.xml'}, element 'AbstractText': not an ecgen-radiology report: no AbstractText elements"
    )

    empty = tmp_path / "empty"
    empty.mkdir()
    assert xml_error(empty) == f"{empty}: no .xml files found"
    absent = tmp_path / "absent"
    assert xml_error(absent).startswith(f"{absent}: not found")


def test_openi_xml_empty_mesh_names_the_element(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "4.xml").write_text(ecgen_xml("4", "", "", "Clear.", "Normal.", []), encoding="utf-8")
    assert xml_error(folder) == (
        f"{folder / '4.xml'}, element 'MeSH': empty value: no MeSH terms to derive labels from"
    )


# ---------------------------------------------------------------- through the data spec


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the shipped source modules that exist: the synthetic source is written separately."""
    present = tuple(m for m in sources.BUILTIN_SOURCE_MODULES if importlib.util.find_spec(m) is not None)
    monkeypatch.setattr(sources, "BUILTIN_SOURCE_MODULES", present)


REAL_KINDS = ("openi-csv", "openi-xml", "labeled-csv", "series-table", "dicom")


def test_real_data_kinds_are_registered_and_documented(registered: None) -> None:
    for kind in REAL_KINDS:
        source = sources.get_source(kind)
        assert source.needs_path and source.description
        assert source.provides == (("series",) if kind in ("series-table", "dicom") else ("reports",))
        assert all(meaning for meaning in source.options.values())


def write_series_xlsx(path: Path) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "Sheet1"
    book.active.append(["notes"])
    sheet = book.create_sheet("Sheet2")
    sheet.append(["Series Description", "Label"])
    for row in (["AX T2 FLAIR", "flair"], ["DWI TRACE", "DWI"], ["ADC map", "adc"]):
        sheet.append(row)
    book.save(path)
    return path


def test_load_data_with_a_report_and_a_series_source(registered: None, tmp_path: Path) -> None:
    reports = indiana_csv(tmp_path)
    series = write_series_xlsx(tmp_path / "s.xlsx")
    bundle = load_data(f"openi-csv:{reports},series-table:{series}#Sheet2")
    assert [r.id for r in bundle.reports] == ["1", "2", "3", "10"]
    assert [(s.description, s.label) for s in bundle.series] == [
        ("AX T2 FLAIR", "T2/FLAIR"),
        ("DWI TRACE", "DWI"),
        ("ADC map", "ADC"),
    ]
    assert bundle.notes["reports_source"] == f"openi-csv:{reports}"
    assert bundle.notes["series_source"] == f"series-table:{series}#Sheet2"
    assert bundle.notes["reports_without_impression"] == "1"
    assert bundle.notes["series_loaded"] == "3"


def test_load_data_passes_options_and_rejects_unknown_ones(registered: None, tmp_path: Path) -> None:
    reports = ecgen_folder(tmp_path)
    series = write_series_xlsx(tmp_path / "s.xlsx")
    bundle = load_data(f"openi-xml:{reports}?terms=all&unmapped=warn,series-table:{series}#2")
    assert len(bundle.reports) == 4 and len(bundle.series) == 3
    with pytest.raises(ValueError, match=r"data source 'openi-csv' has no option\(s\) \['sheet'\]"):
        load_data(f"openi-csv:{reports}?sheet=2,series-table:{series}")


def test_dicom_source_refuses_training(registered: None, tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match="dicom sources are unlabeled; use them with the harmonize entry point"
    ):
        load_data(f"openi-csv:{indiana_csv(tmp_path)},dicom:{tmp_path}")


def test_spec_keeps_paths_with_colons_and_sheets() -> None:
    spec = parse_source_spec("series-table:/data/a:b/series.xlsx#Sheet 2?class=Sequence")
    assert (spec.kind, spec.path, spec.options) == (
        "series-table",
        "/data/a:b/series.xlsx#Sheet 2",
        {"class": "Sequence"},
    )


def test_label_keys_cover_the_fourteen_outputs() -> None:
    assert set(labels()) == set(LABEL_KEYS)


def test_use_your_own_data_doc_covers_every_kind_and_option(registered: None) -> None:
    doc = (Path(__file__).parents[1] / "docs" / "data_sources.md").read_text(encoding="utf-8")
    for kind in REAL_KINDS:
        assert f"`{kind}`" in doc, kind
        for option in sources.get_source(kind).options:
            assert f"`{option}=" in doc, (kind, option)
