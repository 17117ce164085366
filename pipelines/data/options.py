"""Reading the `?key=value` options of a data spec element (see pipelines.data.sources)."""

from __future__ import annotations

from pathlib import Path

from pipelines.data.sources import SourceSpec


def choice_option(spec: SourceSpec, key: str, choices: tuple[str, ...]) -> str:
    """An option restricted to `choices`; the first choice is the default."""
    value = spec.options.get(key, "") or choices[0]
    if value not in choices:
        raise ValueError(f"data source {spec.kind!r}: option {key}={value!r} must be one of {list(choices)}")
    return value


def text_option(spec: SourceSpec, key: str, default: str) -> str:
    """A free-text option (a column name, say); empty means the default."""
    return spec.options.get(key, "").strip() or default


def path_option(spec: SourceSpec, key: str) -> Path | None:
    """An optional path option (user home expanded); existence is checked by the reader."""
    raw = spec.options.get(key, "").strip()
    return Path(raw).expanduser() if raw else None


def spec_path(spec: SourceSpec) -> Path:
    """The element's path; sources registered with needs_path=True always have one."""
    if not spec.path:
        raise ValueError(f"data source {spec.kind!r} needs a path: {spec.kind}:/path/to/data")
    return Path(spec.path).expanduser()
