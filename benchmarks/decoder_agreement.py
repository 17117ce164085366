"""Labeling decoders against free greedy decoding, on one fine-tuned adapter (issue #14's measurement).

Usage:
    python -m benchmarks.decoder_agreement --adapter outputs/RUN_ID/epoch-1/adapter --examples 48
    python -m benchmarks.decoder_agreement --adapter DIR --data openi-csv:indiana_reports.csv

Answers the first `--examples` labeling test reports (split seed 0) three ways: free greedy
decoding, constrained decoding, and the constrained decoder before its fix
(benchmarks.reference.previous_slot_decoding). Prints, as JSON, how often each constrained
answer equals the free one where the free one is well-formed, how often each says "Yes" to a
finding, and each one's macro F1.
"""
from __future__ import annotations

import json
import sys

from benchmarks.reference import previous_slot_decoding
from pipelines.cli import ArgumentParser, setup_logging
from pipelines.data.examples import build_test_examples
from pipelines.data.sources import load_data
from pipelines.data.split import split_bundle
from pipelines.infer.evaluation import input_text
from pipelines.infer.generation import complete
from pipelines.infer.loading import load_for_inference
from pipelines.tasks import get_task
from pipelines.train.encoding import MAX_SEQ_LENGTH, prompt_budget


def compare(model, tokenizer, examples) -> dict:
    """Agreement, "Yes" counts and macro F1 of the three decoders on `examples`."""
    task = get_task("labeling")
    prompts = [e.prompt for e in examples]
    inputs = [input_text(p) for p in prompts]
    answers = {
        "free": complete(model, tokenizer, task, prompts, inputs, decoding="free", max_new_tokens=task.max_new_tokens),
        "constrained": complete(model, tokenizer, task, prompts, inputs, decoding="constrained", max_new_tokens=0),
        "previous": previous_slot_decoding(model, tokenizer, task.constrained, prompts, inputs, batch_size=16,
                                           max_prompt_tokens=prompt_budget("labeling", MAX_SEQ_LENGTH)),
    }
    parsed = {name: [task.parse(o) for o in outs] for name, outs in answers.items()}
    well_formed = [i for i, p in enumerate(parsed["free"]) if p.status == "ok"]
    references = [e.reference for e in examples]
    return {
        "examples": len(examples), "free_well_formed": len(well_formed),
        **{f"{name}_agrees_with_free": sum(parsed[name][i].value == parsed["free"][i].value for i in well_formed)
           for name in ("constrained", "previous")},
        **{f"{name}_finding_yes": sum(v == "Yes" for p in ps for k, v in (p.value or {}).items() if k != "No Finding")
           for name, ps in parsed.items()},
        **{f"{name}_f1_macro": task.score(references, ps).metrics["f1_macro"] for name, ps in parsed.items()},
    }


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--adapter", required=True, help="a fine-tune adapter folder (outputs/RUN_ID/epoch-N/adapter)")
    parser.add_argument("--model", default="smollm2-135m", help="the adapter's base model (preset or folder)")
    parser.add_argument("--data", default="synthetic", help="data spec, as for finetune (default: synthetic)")
    parser.add_argument("--examples", type=int, default=48, help="labeling test reports to answer")
    args = parser.parse_args(argv)
    model, tokenizer = load_for_inference(args.model, args.adapter, "fp32", "cpu")
    bundle = load_data(args.data)
    splits = split_bundle(bundle, 0)
    examples = build_test_examples(bundle, {k: s.test for k, s in splits.items()}, ("labeling",),
                                   args.examples)["labeling"]
    print(json.dumps(compare(model, tokenizer, examples), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
