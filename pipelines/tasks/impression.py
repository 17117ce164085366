"""Task `impression`: the report without its IMPRESSION section in, ``IMPRESSION: ...`` out.

Scored automatically with BLEU (sacrebleu) and ROUGE-1/2/L (rouge-score); the paper adds a
blinded radiologist reader study on top, which lives in analysis/, not here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from pipelines.data.records import ReportRecord
from pipelines.tasks.base import (
    Example,
    Metric,
    Parsed,
    Task,
    TaskScores,
    check_scoring_inputs,
    make_example,
    status_rate,
    usable_value,
)

NAME = "impression"
DIRECTIVE = "Generate the impression from the findings."
PREFIX = "IMPRESSION: "

# Open-i impressions are mostly one or two short sentences (under about 40 words, some 50-60
# tokens); 96 covers them and the prefix without letting a runaway model ramble for long.
MAX_NEW_TOKENS = 96

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

_LEADING_PREFIX = re.compile(r"\s*IMPRESSIONS?\s*:\s*", re.IGNORECASE)
# Where the impression ends: the next upper-case report section header (as ReportRecord.text
# writes them, or the model's own repeat of IMPRESSION:) or a prompt marker such as "### Input".
_SECTION_END = re.compile(
    r"(?<![A-Za-z])(?:COMPARISON|INDICATION|FINDINGS|IMPRESSIONS?|TECHNIQUE|HISTORY)\s*:|###"
)


def build_example(record: ReportRecord) -> Example:
    """The report minus its impression in; "IMPRESSION: " plus the impression out.

    Raises ValueError for a report without an impression (the paper drops such reports; so
    should the data source or split before examples are built).
    """
    impression = record.impression.strip()
    if not impression:
        raise ValueError(f"report {record.id!r} has no impression; the impression task needs one")
    return make_example(
        NAME, DIRECTIVE, record.id, record.text(with_impression=False), PREFIX + impression, impression
    )


def parse(text: str) -> Parsed:
    """The impression text: "ok" after a leading IMPRESSION:, "partial" without it, "failed" if empty."""
    prefix = _LEADING_PREFIX.match(text)
    body = text[prefix.end() :] if prefix else text
    end = _SECTION_END.search(body)
    body = (body[: end.start()] if end else body).strip()
    if not body:
        return Parsed(None, "failed")
    return Parsed(body, "ok" if prefix else "partial")


@functools.cache
def _rouge_scorer() -> Any:
    # Imported and built on first use: importing rouge_score pulls in nltk (seconds).
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


@functools.cache
def _bleu_metrics() -> tuple[Any, Any]:
    """(corpus BLEU, sentence BLEU) scorers; the sentence one skips n-gram orders longer than
    the sentence (effective order) and uses exponential smoothing, as sacrebleu.sentence_bleu."""
    from sacrebleu.metrics import BLEU

    return BLEU(), BLEU(effective_order=True)


def _example_scores(hypothesis: str, reference: str) -> dict[str, float]:
    rouge = _rouge_scorer().score(reference, hypothesis)
    sentence_bleu = _bleu_metrics()[1].sentence_score(hypothesis, [reference]).score
    return {"bleu": sentence_bleu, **{name: rouge[name].fmeasure for name in ROUGE_TYPES}}


def score(references: Sequence[str], parsed: Sequence[Parsed]) -> TaskScores:
    """Corpus BLEU and mean ROUGE F-measures; a failed parse scores 0 on every metric.

    bleu: sacrebleu corpus BLEU on its own 0-100 scale (default 13a tokenizer, case-sensitive);
    a failed parse enters it as an empty hypothesis, so it still adds its reference length to
    the brevity penalty. rouge1/rouge2/rougeL: rouge-score F-measure with the Porter stemmer,
    0-1 scale, averaged over examples. Per example: sentence BLEU (0-100) and the three ROUGE
    F-measures. parse_fail_rate: fraction of failed parses.
    """
    check_scoring_inputs(references, parsed)
    hypotheses = [_hypothesis(p) for p in parsed]
    per_example = [
        _example_scores(h, r) if h else dict.fromkeys(("bleu", *ROUGE_TYPES), 0.0)
        for h, r in zip(hypotheses, references, strict=True)
    ]
    corpus_bleu = _bleu_metrics()[0].corpus_score(hypotheses, [list(references)]).score
    metrics = {"bleu": corpus_bleu}
    metrics |= {name: sum(e[name] for e in per_example) / len(per_example) for name in ROUGE_TYPES}
    metrics["parse_fail_rate"] = status_rate(parsed, "failed")
    return TaskScores(metrics, per_example)


def _hypothesis(parsed: Parsed) -> str:
    value = usable_value(parsed)
    return value if isinstance(value, str) else ""


TASK = Task(
    name=NAME,
    directive=DIRECTIVE,
    dataset="reports",
    max_new_tokens=MAX_NEW_TOKENS,
    build_example=build_example,
    parse=parse,
    score=score,
    headline_metric="rougeL",
    metrics=(
        Metric("bleu", "BLEU", scale=(0.0, 100.0), format=".1f", headline=True),
        Metric("rouge1", "ROUGE-1", example_score="rouge1"),
        Metric("rouge2", "ROUGE-2", example_score="rouge2"),
        Metric("rougeL", "ROUGE-L", headline=True, example_score="rougeL"),
    ),
    include=lambda record: bool(record.impression.strip()),  # reports without one are dropped
)
