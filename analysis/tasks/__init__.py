"""Per-task analyses (one module per task, each registering itself in TASK_ANALYSES)."""

from analysis.tasks import harmonization, impression, labeling
from analysis.tasks.base import TASK_ANALYSES, CompareOptions, TaskAnalysis

__all__ = ["TASK_ANALYSES", "CompareOptions", "TaskAnalysis", "harmonization", "impression", "labeling"]
