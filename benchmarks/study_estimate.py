"""Wall time of a study's fine-tunes on one GPU, from measured per-token throughput.

Usage:
    python -m benchmarks.study_estimate studies/paper.yaml benchmarks/results/h200-throughput.json

For each fine-tune of the study: training tokens (the plan's examples x epochs x tokens) at the
preset's measured LoRA training tokens/s, plus, at each checkpoint epoch, the test prompts and
the structured answers at the prefill rate (constrained decoding feeds them in a few forward
passes; free decoding is costed at the decode rate) and the impressions' generation budget at
the batched decode rate. Baselines (remote APIs) are not counted. A preset without a
measurement is reported as such.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import FinetuneConfig
from pipelines.studies.plan import _budget, _split_data, _tokens, estimate_cost
from pipelines.studies.spec import StudyRun, load_study
from pipelines.tasks import get_task


@dataclass
class RunEstimate:
    name: str
    model: str
    train_hours: float
    eval_hours: float

    @property
    def hours(self) -> float:
        return self.train_hours + self.eval_hours


def estimate_run(cfg: FinetuneConfig, name: str, rates: dict[str, float]) -> RunEstimate:
    """One fine-tune's training and checkpoint-evaluation hours at the preset's `rates`."""
    from pipelines.examples import build_examples

    cost = estimate_cost(StudyRun(name=name, kind="finetune", settings={}, config=cfg, key=""))
    bundle, splits = _split_data(cfg.data, cfg.split_seed)
    test = build_examples(bundle, splits, cfg.tasks, train_limit=1, eval_limit=cfg.eval_limit).test
    prefill = decode = 0
    for task_name, examples in test.items():
        task = get_task(task_name)
        for e in examples:
            prefill += _tokens(e.prompt)
            if cfg.decoding == "constrained" and task.constrained is not None:
                prefill += _tokens(e.target)
            else:
                decode += _budget(task_name, cfg.max_new_tokens)
    per_checkpoint = prefill / rates["prefill_tokens_per_s"] + decode / rates["decode_tokens_per_s"]
    return RunEstimate(name, cfg.model, cost.train_tokens / rates["train_tokens_per_s"] / 3600,
                       per_checkpoint * len(cfg.checkpoint_epochs) / 3600)


def estimate_study(study_path: str, throughput: dict) -> tuple[list[RunEstimate], list[str]]:
    """Estimates for every fine-tune of the study, and the names of runs without a measurement."""
    study = load_study(study_path)
    estimates, missing = [], []
    for run in study.runs:
        if not isinstance(run.config, FinetuneConfig):
            continue
        rates = throughput["presets"].get(run.config.model)
        if rates is None:
            missing.append(run.name)
            continue
        estimates.append(estimate_run(run.config, run.name, rates))
    return estimates, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="a study file, e.g. studies/paper.yaml")
    parser.add_argument("throughput", help="JSON written by python -m benchmarks.throughput --output-json")
    args = parser.parse_args(argv)
    throughput = json.loads(Path(args.throughput).read_text())
    estimates, missing = estimate_study(args.study, throughput)
    print(f"on {throughput['device']} (measured), per fine-tune:")
    print("| run | model | training h | evaluation h | total h |\n|---|---|---:|---:|---:|")
    for e in estimates:
        print(f"| {e.name} | {e.model} | {e.train_hours:.2f} | {e.eval_hours:.2f} | {e.hours:.2f} |")
    print(f"| **all** | | {sum(e.train_hours for e in estimates):.1f} | {sum(e.eval_hours for e in estimates):.1f} "
          f"| **{sum(e.hours for e in estimates):.1f}** |")
    if missing:
        print(f"not estimated (no throughput measured for their model): {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
