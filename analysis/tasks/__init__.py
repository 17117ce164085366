"""Per-task analyses (one module per task, each registering itself in TASK_ANALYSES); a task
without one is analysed from its declared metrics (analysis.tasks.generic)."""

from analysis.tasks import harmonization, impression, labeling
from analysis.tasks.base import TASK_ANALYSES, CompareOptions, TaskAnalysis
from analysis.tasks.generic import generic_analysis
from pipelines.tasks import get_task


def analysis_for(task: str) -> TaskAnalysis:
    """The task's own analysis if it registered one, else the generic one built from its metrics."""
    return TASK_ANALYSES.get(task) if task in TASK_ANALYSES else generic_analysis(get_task(task))


__all__ = ["TASK_ANALYSES", "CompareOptions", "TaskAnalysis", "analysis_for", "generic_analysis", "harmonization",
           "impression", "labeling"]
