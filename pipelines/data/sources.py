"""Data-source registry and the `data` spec that picks sources for a run.

Spec grammar: a comma-separated list of ``kind[:path][?key=value&key=value]``, at most one source
of reports (labeling + impression) and one of series descriptions (harmonization), e.g.

    synthetic                                   (the default: both datasets generated)
    synthetic?reports=200&series=100&seed=1
    openi-csv:/data/indiana_reports.csv,series-table:/data/series.xlsx#Sheet2

A dataset that no listed source provides comes from the synthetic generator, and the bundle's
notes record which source each dataset used. Adding a source is one module that calls
`register_source`, listed in BUILTIN_SOURCE_MODULES.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.data.records import DataBundle
from pipelines.registry import Registry

# Modules whose import registers the shipped sources.
BUILTIN_SOURCE_MODULES: tuple[str, ...] = (
    "pipelines.data.synthetic",
    "pipelines.data.openi_csv",
    "pipelines.data.openi_xml",
    "pipelines.data.labeled_csv",
    "pipelines.data.series_table",
    "pipelines.data.dicom_folder",
)

DATASETS = ("reports", "series")


@dataclass(frozen=True)
class SourceSpec:
    """One parsed element of a `data` spec."""

    kind: str
    path: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        text = self.kind + (f":{self.path}" if self.path else "")
        if self.options:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.options.items())
        return text


@dataclass(frozen=True)
class DataSource:
    """A registered loader. `load(spec)` returns a bundle holding the datasets in `provides`."""

    name: str
    load: Callable[[SourceSpec], DataBundle]
    description: str
    provides: tuple[str, ...]
    needs_path: bool = False
    options: dict[str, str] = field(default_factory=dict)  # option name -> what it means


SOURCES: Registry[DataSource] = Registry("data source")


def register_source(source: DataSource) -> DataSource:
    """Add a data source to the registry."""
    return SOURCES.add(source.name, source)


def _load_builtin_sources() -> None:
    for module in BUILTIN_SOURCE_MODULES:
        importlib.import_module(module)


def get_source(name: str) -> DataSource:
    """The registered source called `name` (unknown names list the valid ones)."""
    _load_builtin_sources()
    return SOURCES.get(name)


def source_names() -> list[str]:
    """Names of every registered data source."""
    _load_builtin_sources()
    return SOURCES.names()


def parse_source_spec(text: str) -> SourceSpec:
    """Parse one ``kind[:path][?key=value&...]`` element; malformed options raise ValueError."""
    head, _, query = text.strip().partition("?")
    kind, _, path = head.partition(":")
    if not kind.strip():
        raise ValueError(f"data spec element {text!r} has no source kind; expected kind[:path][?k=v&...]")
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in query.split("&"))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"data spec element {text!r}: option {part!r} is not key=value")
        options[key.strip()] = value.strip()
    return SourceSpec(kind.strip(), path.strip() or None, options)


def parse_data_spec(spec: str) -> list[SourceSpec]:
    """Parse a whole `data` value into its elements, checking kinds, paths and options."""
    elements = [parse_source_spec(p) for p in spec.split(",") if p.strip()]
    if not elements:
        raise ValueError("data spec is empty; expected e.g. 'synthetic' or 'openi-csv:/path/file.csv'")
    for element in elements:
        source = get_source(element.kind)
        if source.needs_path and not element.path:
            raise ValueError(f"data source {element.kind!r} needs a path: {element.kind}:/path/to/file")
        unknown = set(element.options) - set(source.options)
        if unknown:
            raise ValueError(
                f"data source {element.kind!r} has no option(s) {sorted(unknown)}; "
                f"valid options: {sorted(source.options) or 'none'}"
            )
    return elements


def _assign_datasets(elements: list[SourceSpec]) -> dict[str, SourceSpec]:
    """Which element supplies each dataset: explicit non-synthetic sources first, then synthetic."""
    chosen: dict[str, SourceSpec] = {}
    ordered = sorted(elements, key=lambda e: e.kind == "synthetic")  # non-synthetic win
    for element in ordered:
        for dataset in get_source(element.kind).provides:
            if dataset not in chosen:
                chosen[dataset] = element
            elif element.kind != "synthetic" and chosen[dataset].kind != "synthetic":
                raise ValueError(
                    f"data spec names two sources of {dataset}: {chosen[dataset]} and {element}; "
                    "give at most one report source and one series source"
                )
    for dataset in DATASETS:
        chosen.setdefault(dataset, SourceSpec("synthetic"))
    return chosen


def load_data(spec: str) -> DataBundle:
    """Load every dataset a `data` spec names, generating the rest synthetically."""
    chosen = _assign_datasets(parse_data_spec(spec))
    unique = {str(element): element for element in chosen.values()}
    loaded = {key: get_source(element.kind).load(element) for key, element in unique.items()}
    reports_from, series_from = chosen["reports"], chosen["series"]
    bundle = DataBundle(
        source=spec,
        reports=loaded[str(reports_from)].reports,
        series=loaded[str(series_from)].series,
        notes={"reports_source": str(reports_from), "series_source": str(series_from)},
    )
    for part in loaded.values():
        bundle.notes.update({k: v for k, v in part.notes.items() if k not in bundle.notes})
    return bundle


def int_option(spec: SourceSpec, key: str, default: int, minimum: int = 0) -> int:
    """Read an integer option, with an error naming the source and option when it is not one."""
    raw = spec.options.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"data source {spec.kind!r}: option {key}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"data source {spec.kind!r}: option {key}={value} must be >= {minimum}")
    return value
