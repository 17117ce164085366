"""Prompt templates for baselines: editable text files, `prompts/<mode>/<task>.txt`.

A template is the whole user message. `{{input}}` is replaced by the task input (the same text a
fine-tuned model reads) and `{{directive}}` by the task's fine-tuning directive, so the zero-shot
prompt stays consistent with the instruction the small models were trained on. Other braces
(e.g. a JSON example) are left as written.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipelines.baselines.config import PROMPTING_MODES
from pipelines.tasks import get_task

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
INPUT, DIRECTIVE = "{{input}}", "{{directive}}"


@dataclass(frozen=True)
class PromptTemplate:
    """One task's template in one prompting mode."""

    mode: str
    task: str
    path: Path
    text: str

    @property
    def sha(self) -> str:
        """Short content hash, logged so a run records exactly which wording it used."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12]

    def render(self, task_input: str) -> str:
        directive = get_task(self.task).directive
        return self.text.replace(DIRECTIVE, directive).replace(INPUT, task_input).strip()


def template_path(mode: str, task: str, folder: Path | str = "") -> Path:
    return Path(folder or PROMPTS_DIR) / mode / f"{task}.txt"


def load_template(mode: str, task: str, folder: Path | str = "") -> PromptTemplate:
    """Read and check one template; errors say which file to create or fix."""
    if mode not in PROMPTING_MODES:
        raise ValueError(f"unknown prompting mode {mode!r}; valid modes: {', '.join(PROMPTING_MODES)}")
    get_task(task)  # an unknown task lists the valid ones
    path = template_path(mode, task, folder)
    if not path.is_file():
        raise ValueError(f"no {mode} prompt for task {task!r}: create {path} (see prompts/README.md)")
    text = path.read_text(encoding="utf-8")
    if INPUT not in text:
        raise ValueError(f"prompt template {path} lacks the {INPUT} placeholder for the task input")
    return PromptTemplate(mode, task, path, text)


def load_templates(mode: str, tasks: tuple[str, ...], folder: Path | str = "") -> dict[str, PromptTemplate]:
    return {task: load_template(mode, task, folder) for task in tasks}
