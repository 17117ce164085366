"""Property tests: parsers and scorers accept anything a model might emit, and targets round-trip."""

from __future__ import annotations

import json
import math
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.data.records import ReportRecord, SeriesRecord
from pipelines.tasks import get_task, task_names
from pipelines.tasks.base import Parsed
from pipelines.tasks.json_output import extract_json_object
from pipelines.vocabulary import LABEL_KEYS, NO, SERIES_CLASSES, YES

# 300 generated cases per property (and per task where parametrized); no deadline because the
# two shared CPU cores make per-example timing noisy, and the first ROUGE call imports nltk.
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)

# Characters that drive the JSON scanner through its branches, mixed with label-ish words.
_JSONISH = st.text(alphabet="{}[]\"':,\\ \n\t“”‘’#yesnoYESNOtrufal01T2FLAIRimpresion", max_size=80)
_LABEL_TARGETISH = st.lists(
    st.sampled_from(
        [*LABEL_KEYS, *SERIES_CLASSES, "Yes", "No", "IMPRESSION:", "### ", "{", "}", '"', "'", ",", ":"]
    ),
    max_size=40,
).map(" ".join)
LABEL_DICTS = st.lists(st.sampled_from([YES, NO]), min_size=len(LABEL_KEYS), max_size=len(LABEL_KEYS)).map(
    lambda values: dict(zip(LABEL_KEYS, values, strict=True))
)


@st.composite
def _mangled_targets(draw: st.DrawFn) -> str:
    """A near-miss of a real target: cut at both ends, junk spliced in, quotes swapped."""
    target = json.dumps(draw(LABEL_DICTS)) if draw(st.booleans()) else json.dumps({"AX T2": "T2/FLAIR"})
    # Mostly keep the opening brace (a model rarely drops it) and often the whole tail.
    start = draw(st.sampled_from([0, 0, 0, draw(st.integers(0, len(target)))]))
    end = draw(st.sampled_from([len(target), draw(st.integers(start, len(target)))]))
    at = draw(st.integers(start, end))
    text = target[start:at] + draw(_JSONISH) + target[at:end]
    return text.replace('"', "'") if draw(st.booleans()) else text


ANY_TEXT = st.one_of(st.text(), _JSONISH, _LABEL_TARGETISH, _mangled_targets())

STATUSES = ("ok", "partial", "failed")
REFERENCES = {
    "labeling": LABEL_DICTS,
    "harmonization": st.sampled_from(SERIES_CLASSES),
    "impression": st.text(max_size=60),
}
# Parsed values of every shape, well-formed or not: a scorer must not trust them.
ANY_VALUE = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.sampled_from(SERIES_CLASSES),
    LABEL_DICTS,
    st.dictionaries(
        st.sampled_from(LABEL_KEYS) | st.text(max_size=8), st.sampled_from([YES, NO, "maybe"]) | st.integers()
    ),
    st.integers(),
    st.lists(st.integers(), max_size=3),
)
ANY_PARSED = st.builds(Parsed, ANY_VALUE, st.sampled_from(STATUSES))


@PROPERTY_SETTINGS
@given(text=ANY_TEXT)
def test_extract_json_object_is_total(text: str) -> None:
    result = extract_json_object(text)
    assert result is None or (
        result and all(isinstance(k, str) and isinstance(v, str) for k, v in result.items())
    )


@pytest.mark.parametrize("name", task_names())
@PROPERTY_SETTINGS
@given(text=ANY_TEXT)
def test_parse_never_raises_and_returns_valid_values(name: str, text: str) -> None:
    parsed = get_task(name).parse(text)
    assert parsed.status in STATUSES
    assert (parsed.value is None) == (parsed.status == "failed")
    if name == "labeling" and parsed.value is not None:
        assert set(parsed.value) <= set(LABEL_KEYS)
        assert set(parsed.value.values()) <= {YES, NO}
        assert (len(parsed.value) == len(LABEL_KEYS)) == (parsed.status == "ok")
    if name == "harmonization":
        assert parsed.value is None or parsed.value in SERIES_CLASSES
    if name == "impression" and parsed.value is not None:
        assert parsed.value == parsed.value.strip() and parsed.value


@pytest.mark.parametrize("name", task_names())
@PROPERTY_SETTINGS
@given(data=st.data())
def test_score_never_raises_and_stays_in_range(name: str, data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=6))
    references = data.draw(st.lists(REFERENCES[name], min_size=n, max_size=n))
    parsed = data.draw(st.lists(ANY_PARSED, min_size=n, max_size=n))
    scores = get_task(name).score(references, parsed)
    assert len(scores.per_example) == n
    no_positive = name == "labeling" and all(YES not in r.values() for r in references)
    for metric, value in scores.metrics.items():
        if metric == "f1_macro_supported" and no_positive:  # a mean over no label: NaN (docs/statistics.md)
            assert math.isnan(value)
            continue
        upper = n if metric.startswith("support/") else 100.0 if metric == "bleu" else 1.0
        assert math.isfinite(value) and -1e-9 <= value <= upper + 1e-9, (metric, value)


@PROPERTY_SETTINGS
@given(labels=LABEL_DICTS)
def test_labeling_target_round_trips(labels: dict[str, str]) -> None:
    task = get_task("labeling")
    record = ReportRecord(id="r", findings="Findings.", impression="Impression.", labels=labels)
    assert task.parse(task.build_example(record).target) == Parsed(labels, "ok")


@PROPERTY_SETTINGS
@given(description=st.text(max_size=64), cls=st.sampled_from(SERIES_CLASSES))
def test_harmonization_target_round_trips_any_description(description: str, cls: str) -> None:
    # Any text, quotes, braces and non-ASCII included: json.dumps escapes what it must.
    task = get_task("harmonization")
    example = task.build_example(SeriesRecord(id="s", description=description, label=cls))
    assert task.parse(example.target) == Parsed(cls, "ok")


# Impressions without ':' or '#' cannot contain a section header or a prompt marker.
IMPRESSION_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " .,;-()/\n", max_size=120).filter(
    str.strip
)


@PROPERTY_SETTINGS
@given(impression=IMPRESSION_TEXT)
def test_impression_target_round_trips(impression: str) -> None:
    task = get_task("impression")
    record = ReportRecord(
        id="r", findings="Findings.", impression=impression, labels=dict.fromkeys(LABEL_KEYS, NO)
    )
    example = task.build_example(record)
    assert task.parse(example.target) == Parsed(example.reference, "ok")
    assert example.reference == impression.strip()
