"""The `openi-xml` data source: the original Open-i distribution, one NLM ecgen-radiology XML per report.

The path is a folder of ``<n>.xml`` files (searched recursively, so the folder that holds
``ecgen-radiology/`` works too), a .tgz/.tar.gz/.zip archive of such a folder (read without
unpacking), or one .xml file; a damaged or truncated archive, or a file or member over
MAX_REPORT_BYTES (16 MiB), is an error naming it. Each file looks like

    <eCitation>
      <uId id="CXR1"/> <pmcId id="1"/> <IUXRId id="1"/>
      <MedlineCitation><Article><Abstract>
        <AbstractText Label="COMPARISON">None.</AbstractText>
        <AbstractText Label="INDICATION">...</AbstractText>
        <AbstractText Label="FINDINGS">...</AbstractText>
        <AbstractText Label="IMPRESSION">...</AbstractText>
      </Abstract></Article></MedlineCitation>
      <MeSH><major>normal</major> <automatic>...</automatic></MeSH>
    </eCitation>

Record id: the ``IUXRId`` id, else ``pmcId``, else ``uId``, else the file name without ``.xml``;
for the Indiana collection that is the number the CSV's `uid` column holds, so both sources give
the same ids. Labels come from the manually indexed ``<major>`` terms (option ``terms=all`` adds
``<minor>`` and the machine-extracted ``<automatic>`` terms). Reports are ordered by file name with
numbers compared as numbers (2.xml before 10.xml). Dropped reports, the labels overlay and the
notes are as for openi-csv (pipelines/data/openi.py).

    openi-xml:/data/NLMCXR_reports/ecgen-radiology
    openi-xml:/data/NLMCXR_reports.tgz?terms=all
"""

from __future__ import annotations

import codecs
import re
import struct
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path

from pipelines.data.errors import DataError
from pipelines.data.openi import OPENI_OPTIONS, RawReport, build_openi_bundle
from pipelines.data.options import choice_option, spec_path
from pipelines.data.records import DataBundle
from pipelines.data.sources import DataSource, SourceSpec, register_source

SECTIONS = ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")
ID_ELEMENTS = ("IUXRId", "pmcId", "uId")
_ENCODING = re.compile(rb"""<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)""")
_LABEL_ATTR = re.compile(rb"""Label\s*=\s*["']([A-Za-z]+)""")
# An ecgen-radiology report is 2-10 KB; a larger file or archive member is refused unread, so a
# decompression bomb cannot fill the memory.
MAX_REPORT_BYTES = 16 * 1024 * 1024


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def iter_xml_documents(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """(name for messages, file stem, bytes) of each XML document under `path`, in natural order."""
    if not path.exists():
        raise DataError(
            path, "not found; expected a folder of ecgen-radiology XML files or an archive of one"
        )
    if path.is_dir():
        files = [p for p in path.rglob("*.xml") if p.is_file() and not p.name.startswith(".")]
        for file in sorted(files, key=lambda p: _natural_key(str(p))):
            yield str(file), file.stem, _read_file(file)
    elif path.suffix.lower() == ".xml":
        yield str(path), path.stem, _read_file(path)
    elif _is_archive(path, tarfile.is_tarfile):
        yield from _tar_documents(path)
    elif _is_archive(path, zipfile.is_zipfile):
        yield from _zip_documents(path)
    else:
        raise DataError(
            path, "expected a folder of ecgen-radiology XML files, a .tgz/.zip of one, or an .xml file"
        )


def _read_file(file: Path) -> bytes:
    if file.stat().st_size > MAX_REPORT_BYTES:
        raise DataError(file, f"is {file.stat().st_size:,} bytes; a report file is a few KB (limit "
                              f"{MAX_REPORT_BYTES:,})")
    try:
        return file.read_bytes()
    except OSError as exc:
        raise DataError(file, f"cannot be read ({exc.strerror or exc})") from None


def _is_archive(path: Path, test) -> bool:
    try:
        return test(path)
    except Exception:  # a damaged file is simply not that kind of archive
        return False


def _damaged(path: Path, member: str | None, exc: BaseException) -> DataError:
    where = f"{path}:{member}" if member else path
    return DataError(where, f"damaged or truncated archive ({type(exc).__name__}: {exc}); "
                            "download or pack it again")


def _too_big(path: Path, member: str, size: int) -> DataError:
    return DataError(f"{path}:{member}", f"unpacks to {size:,} bytes; a report file is a few KB (limit "
                                         f"{MAX_REPORT_BYTES:,}); is this a decompression bomb?")


def _check_tar_complete(archive: tarfile.TarFile) -> None:
    """Raise unless the archive ends in its end-of-archive zero blocks right after the last member.

    tarfile stops listing members at the first damaged header after the first one, as if the
    archive ended there; reading the rest of the stream (all zeros when it really ended) catches
    that, and reading a .tgz/.tar.bz2/.tar.xz to its end makes the decompressor check its CRC, which
    catches changed report text that tar's header checksums do not cover.
    """
    stream = archive.fileobj
    stream.seek(archive.offset)
    while chunk := stream.read(1 << 16):
        if chunk.strip(b"\0"):
            raise tarfile.ReadError(f"unreadable data after the last member listed ({archive.offset:,} bytes in)")


def _tar_documents(path: Path) -> Iterator[tuple[str, str, bytes]]:
    member_name = None
    try:
        with tarfile.open(path) as archive:
            members = [m for m in archive.getmembers() if m.isfile() and _is_report_name(m.name)]
            _check_tar_complete(archive)
            for member in sorted(members, key=lambda m: _natural_key(m.name)):
                member_name = member.name
                if member.size > MAX_REPORT_BYTES:
                    raise _too_big(path, member.name, member.size)
                data = archive.extractfile(member).read()
                yield f"{path}:{member.name}", Path(member.name).stem, data
    except DataError:
        raise
    except Exception as exc:  # a damaged archive fails in tarfile, gzip, bz2, lzma or zlib in many ways
        raise _damaged(path, member_name, exc) from None


def _check_zip_listing(path: Path, archive: zipfile.ZipFile) -> None:
    """Raise unless zipfile listed as many members as the end record counts: a damaged length field
    in the central directory makes zipfile stop listing early, without an error."""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - (1 << 16) - 22))  # the end record and its comment
        tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 12:
        return
    (count,) = struct.unpack("<H", tail[at + 10 : at + 12])
    if count != 0xFFFF and count != len(archive.infolist()):  # 0xFFFF: the count is in a ZIP64 record
        raise zipfile.BadZipFile(f"the central directory lists {len(archive.infolist())} of {count} members")


def _zip_documents(path: Path) -> Iterator[tuple[str, str, bytes]]:
    member_name = None
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir() and _is_report_name(i.filename)]
            for info in infos:
                if info.file_size > MAX_REPORT_BYTES:
                    raise _too_big(path, info.filename, info.file_size)
            _check_zip_listing(path, archive)
            # every member's CRC-32, and its name against the central directory's (a damaged name
            # there would otherwise drop the member from the listing unnoticed)
            member_name = archive.testzip()
            if member_name is not None:
                raise zipfile.BadZipFile(f"bad CRC-32 for {member_name}")
            for info in sorted(infos, key=lambda i: _natural_key(i.filename)):
                member_name = info.filename
                with archive.open(info) as member:  # reads at most the declared size
                    data = member.read(MAX_REPORT_BYTES + 1)
                yield f"{path}:{info.filename}", Path(info.filename).stem, data
    except DataError:
        raise
    except Exception as exc:  # a damaged archive fails in zipfile or zlib in many ways
        raise _damaged(path, member_name, exc) from None


def _is_report_name(name: str) -> bool:
    base = Path(name).name
    return base.lower().endswith(".xml") and not base.startswith(".")


def _check_utf8(name: str, data: bytes) -> None:
    declared = _ENCODING.match(data[:200])
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        return  # the parser decodes other declared encodings itself
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return  # and UTF-16 with a byte-order mark
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        labels = _LABEL_ATTR.findall(data[: exc.start])
        raise DataError(
            name,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x}); re-save the file as UTF-8",
            line=data[: exc.start].count(b"\n") + 1,
            field=f"AbstractText Label={labels[-1].decode()}" if labels else None,
            field_kind="element",
        ) from None


def parse_report(name: str, stem: str, data: bytes, terms: str = "major") -> RawReport:
    """One ecgen-radiology document as a raw report; `terms` is "major" or "all"."""
    if not data.strip():
        raise DataError(name, "file is empty")
    _check_utf8(name, data)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, _ = exc.position
        raise DataError(name, f"not well-formed XML ({exc})", line=line) from None

    texts = {}
    found_any = False
    for element in root.iter("AbstractText"):
        found_any = True
        label = (element.get("Label") or "").strip().upper()
        if label in SECTIONS:
            text = "".join(element.itertext()).strip()
            texts[label.lower()] = (
                f"{texts[label.lower()]} {text}".strip() if label.lower() in texts else text
            )
    if not found_any:
        raise DataError(
            name,
            "not an ecgen-radiology report: no AbstractText elements",
            field="AbstractText",
            field_kind="element",
        )
    report_id, id_element = stem, "file name"
    for tag in ID_ELEMENTS:
        element = root.find(f".//{tag}")
        if element is not None and element.get("id", "").strip():
            report_id, id_element = element.get("id", "").strip(), tag
            break

    def fail(problem: str, field: str) -> DataError:
        element = {"id": id_element, "mesh": "MeSH"}.get(field, f"AbstractText Label={field.upper()}")
        return DataError(name, problem, field=element, field_kind="element")

    kinds = ("major",) if terms == "major" else ("major", "minor", "automatic")
    mesh = root.find(".//MeSH")
    mesh_terms = (
        []
        if mesh is None
        else [el.text.strip() for kind in kinds for el in mesh.iter(kind) if el.text and el.text.strip()]
    )
    return RawReport(
        id=report_id,
        mesh=mesh_terms,
        where=f"file {name}",
        fail=fail,
        **{s.lower(): texts.get(s.lower(), "") for s in SECTIONS},
    )


def load_openi_xml(spec: SourceSpec) -> DataBundle:
    """Read an ecgen-radiology folder or archive into report records."""
    path = spec_path(spec)
    terms = choice_option(spec, "terms", ("major", "all"))
    raws = [parse_report(name, stem, data, terms) for name, stem, data in iter_xml_documents(path)]
    if not raws:
        raise DataError(path, "no .xml files found")
    return build_openi_bundle(spec, path, raws)


register_source(
    DataSource(
        name="openi-xml",
        load=load_openi_xml,
        description="Open-i / Indiana University chest X-ray reports from the NLM ecgen-radiology XML files "
        "(folder or .tgz); labels from the MeSH terms (or a radiologist labels file)",
        provides=("reports",),
        needs_path=True,
        options={
            **OPENI_OPTIONS,
            "terms": "MeSH terms used for labels: major (default; as in the CSV) or all "
            "(adds <minor> and <automatic>)",
        },
    )
)
