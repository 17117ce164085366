"""MRI series descriptions from a folder of DICOM files, for harmonizing a PACS export.

`collect_series_descriptions(folder)` reads only the headers (pydicom, ``stop_before_pixels``)
of every file under `folder` (recursively) and returns each distinct SeriesDescription (0008,103E)
with the number of series that carry it, most frequent first. A series is counted once however
many image files it has (files are grouped by SeriesInstanceUID; a file without one counts as
its own series). Files that are not DICOM (no "DICM" marker after the 128-byte preamble, which
``force=False`` requires) are skipped and counted, as are DICOM files that fail to parse and
files without a SeriesDescription; `scan_dicom_folder` returns those counts too.

These descriptions carry no class, so the registered `dicom` source cannot feed training: using
it in a `data` spec raises an error that points to the harmonize entry point, which labels a
folder's descriptions with a trained adapter.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.data.errors import DataError
from pipelines.data.options import spec_path
from pipelines.data.records import DataBundle
from pipelines.data.sources import DataSource, SourceSpec, register_source

log = logging.getLogger(__name__)

_TAGS = ["SeriesDescription", "SeriesInstanceUID"]


@dataclass
class DicomScan:
    """What a folder scan found: (description, series count) pairs and the files it skipped."""

    folder: Path
    descriptions: list[tuple[str, int]] = field(default_factory=list)
    dicom_files: int = 0
    non_dicom_files: int = 0
    unreadable_files: list[str] = field(default_factory=list)
    without_description: int = 0


def scan_dicom_folder(folder: str | Path) -> DicomScan:
    """Read the DICOM headers under `folder` (or one file) and tally SeriesDescription values."""
    import pydicom  # deferred: only DICOM users pay for the import
    from pydicom.errors import InvalidDicomError

    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataError(folder, "DICOM folder not found")
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    scan = DicomScan(folder)
    series: dict[str, set[str]] = defaultdict(set)
    for file in files:
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True, force=False, specific_tags=_TAGS)
        except InvalidDicomError:
            scan.non_dicom_files += 1
            continue
        except Exception as exc:  # files from the wild fail in many ways: skip and report
            scan.unreadable_files.append(f"{file} ({type(exc).__name__}: {exc})")
            continue
        scan.dicom_files += 1
        description = str(header.get("SeriesDescription", "") or "").strip()
        if not description:
            scan.without_description += 1
            continue
        series[description].add(str(header.get("SeriesInstanceUID", "") or "") or f"file:{file}")
    scan.descriptions = sorted(((d, len(uids)) for d, uids in series.items()), key=lambda p: (-p[1], p[0]))
    if scan.unreadable_files:
        log.warning(
            "%s: %d DICOM file(s) could not be read, e.g. %s",
            folder,
            len(scan.unreadable_files),
            scan.unreadable_files[0],
        )
    if not scan.dicom_files:
        raise DataError(
            folder,
            f"no DICOM files found ({scan.non_dicom_files} non-DICOM and "
            f"{len(scan.unreadable_files)} unreadable file(s) skipped)",
        )
    if not scan.descriptions:
        raise DataError(
            folder,
            f"none of the {scan.dicom_files} DICOM files has a SeriesDescription (0008,103E)",
            field="SeriesDescription (0008,103E)",
            field_kind="tag",
        )
    log.info(
        "%s: %d distinct series descriptions in %d DICOM files (%d non-DICOM skipped, %d without a "
        "description)",
        folder,
        len(scan.descriptions),
        scan.dicom_files,
        scan.non_dicom_files,
        scan.without_description,
    )
    return scan


def collect_series_descriptions(folder: str | Path) -> list[tuple[str, int]]:
    """Distinct SeriesDescription values under `folder` with their series counts, most frequent first."""
    return scan_dicom_folder(folder).descriptions


def load_dicom(spec: SourceSpec) -> DataBundle:
    """Refuse: DICOM descriptions have no class to train or evaluate against."""
    raise DataError(
        spec_path(spec),
        "dicom sources are unlabeled; use them with the harmonize entry point (a trained adapter "
        "classifies the folder's series descriptions). For training, give labeled descriptions "
        "with series-table:<file.csv|file.xlsx>",
    )


register_source(
    DataSource(
        name="dicom",
        load=load_dicom,
        description="folder of DICOM files: unique SeriesDescription values for the harmonize entry point "
        "(unlabeled; not usable for training)",
        provides=("series",),
        needs_path=True,
    )
)
