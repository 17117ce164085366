"""Docs stay true: every registered task, preset and data source is in README's tables, every entry
point in README's table and in docs/entry_points.md (the reference lives in docs/, once)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipelines.data.sources import source_names
from pipelines.models import MODEL_PRESETS
from pipelines.tasks import task_names

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = "\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
README_MAX_LINES = 300


@pytest.mark.parametrize("name", task_names() + MODEL_PRESETS.names() + source_names())
def test_registry_entries_are_in_readme(name):
    assert f"| `{name}` |" in README, f"README lacks a table row for {name!r}"


@pytest.mark.parametrize("entry_point", yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"])
def test_every_entry_point_is_in_readme_and_has_a_docs_section(entry_point):
    assert f"| `{entry_point}` |" in README
    assert f"### `{entry_point}`" in DOCS


def test_readme_is_a_newcomers_page_that_links_only_inside_the_repository():
    assert len(README.splitlines()) <= README_MAX_LINES
    for text in (README, DOCS):
        assert "../shared" not in text
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)\)", README):
        assert (ROOT / link).is_file(), link


def test_readme_commands_and_ci_agree():
    assert "make demo" in README and "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "mlflow run . -e finetune --env-manager local" in README
    for placeholder in ("PRESET_ROWS", "SOURCE_ROWS", "ENTRY_POINTS_MORE", "DEMO_MINUTES"):
        assert placeholder not in README
