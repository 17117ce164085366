"""README stays true: every registered task, preset, data source and entry point is documented."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.data.sources import source_names
from pipelines.models import MODEL_PRESETS
from pipelines.tasks import task_names

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", task_names() + MODEL_PRESETS.names() + source_names())
def test_registry_entries_are_in_readme(name):
    assert f"| `{name}` |" in README, f"README lacks a table row for {name!r}"


@pytest.mark.parametrize("entry_point", yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"])
def test_every_entry_point_has_a_readme_section(entry_point):
    assert f"### `{entry_point}`" in README


def test_readme_commands_and_ci_agree():
    assert "make demo" in README and "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "mlflow run . -e finetune --env-manager local" in README
    for placeholder in ("PRESET_ROWS", "SOURCE_ROWS", "ENTRY_POINTS_MORE", "DEMO_MINUTES"):
        assert placeholder not in README
