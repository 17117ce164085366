"""Constrained harmonization: shared-prefix candidate scoring against the previous scoring, in one run.

Usage:
    python -m benchmarks.harmonization_scoring                      # embedded model, CPU, 96 descriptions
    python -m benchmarks.harmonization_scoring --descriptions 32 --output-json out.json
    python -m benchmarks.harmonization_scoring --adapter outputs/RUN_ID/epoch-2/adapter   # a fine-tuned model

Both methods answer the same descriptions (the first of the synthetic series) with the same
model in the same process, alternating, best of `--repeats`; the answers must agree. Prints
descriptions/s of each and the ratio.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.reference import previous_candidate_scoring
from pipelines.cli import ArgumentParser, setup_logging
from pipelines.data.sources import load_data
from pipelines.infer.constrained import decode_constrained
from pipelines.infer.loading import load_for_inference
from pipelines.models import resolve_model
from pipelines.tasks import get_task
from pipelines.tasks.base import format_prompt
from pipelines.train.encoding import MAX_SEQ_LENGTH, prompt_budget


def measure(model, tokenizer, descriptions: list[str], *, batch_size: int, repeats: int) -> dict:
    """Seconds of each method (best of `repeats`), the ratio, and whether the answers agree."""
    task = get_task("harmonization")
    prompts = [format_prompt(task.directive, d) for d in descriptions]
    budget = prompt_budget("harmonization", MAX_SEQ_LENGTH)
    methods = {
        "previous": lambda: previous_candidate_scoring(model, tokenizer, task.constrained, prompts, descriptions,
                                                       batch_size=batch_size, max_prompt_tokens=budget),
        "shared-prefix": lambda: decode_constrained(model, tokenizer, task.constrained, prompts, descriptions,
                                                    batch_size=batch_size, max_prompt_tokens=budget, desc="ours"),
    }
    best = dict.fromkeys(methods, float("inf"))
    answers = {}
    for _ in range(repeats):
        for name, run in methods.items():
            start = time.perf_counter()
            answers[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    n = len(descriptions)
    return {
        "descriptions": n, "batch_size": batch_size, "repeats": repeats, "threads": torch.get_num_threads(),
        "seconds": best, "descriptions_per_s": {k: n / v for k, v in best.items()},
        "ratio": best["previous"] / best["shared-prefix"],
        "same_answers": answers["previous"] == answers["shared-prefix"],
    }


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m", help="preset, local folder or cached hub id")
    parser.add_argument("--adapter", default="", help="a LoRA adapter folder to apply (default: the base model)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"), help="where to run")
    parser.add_argument("--descriptions", type=int, default=96, help="how many series descriptions to answer")
    parser.add_argument("--batch-size", type=int, default=16, help="descriptions per batch (evaluation's default)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats of each method; the best counts")
    parser.add_argument("--output-json", default="", help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    model, tokenizer = load_for_inference(resolve_model(args.model).path, args.adapter or None, "auto", args.device)
    bundle = load_data("synthetic")
    series = [r.description for r in bundle.series][: args.descriptions]
    result = measure(model, tokenizer, series, batch_size=args.batch_size, repeats=args.repeats)
    result["model"] = args.model
    result["adapter"] = args.adapter
    print(json.dumps(result, indent=2))
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["same_answers"] else 1


if __name__ == "__main__":
    sys.exit(main())
