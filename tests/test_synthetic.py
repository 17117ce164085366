"""The seeded synthetic generators and the `synthetic` data source.

Label checks read the generated text with a small negation-aware keyword reader written here,
independently of the generator's phrase banks, so a template whose words disagree with its
labels fails a test.
"""
from __future__ import annotations

import re
import statistics
from collections import Counter

import pytest

from pipelines.data import synthetic_mri
from pipelines.data.records import ReportRecord, SeriesRecord
from pipelines.data.sources import load_data
from pipelines.data.synthetic import DEFAULT_REPORTS, DEFAULT_SERIES
from pipelines.data.synthetic_cxr import generate_reports
from pipelines.data.synthetic_mri import generate_series, series_capacity
from pipelines.vocabulary import CHEXPERT_LABELS, LABEL_KEYS, NO, PATHOLOGY_LABELS, SERIES_CLASSES, YES

NEGATION = re.compile(r"\b(no|without|not|negative for|free of|resolution of)\b", re.IGNORECASE)

# Label -> words that mention it. BOTH_WAYS: the label is Yes exactly when an un-negated mention
# exists. YES_IMPLIES_MENTION: a Yes label needs an un-negated mention (the words are too common
# in normal statements to run the other direction).
BOTH_WAYS: dict[str, str] = {
    "Pneumothorax": r"pneumothora",
    "Pleural Effusion": r"effusion",
    "Atelectasis": r"atelecta",
    "Consolidation": r"consolidat",
    "Pneumonia": r"pneumonia",
    "Edema": r"edema|congestion",
    "Fracture": r"fracture",
    "Lung Lesion": r"nodul|\bmass\b|granulom",
    "Lung Opacity": r"opacit|airspace disease|airspace opacit|infiltrat",
    "Pleural Other": r"thickening|plaque",
    "Support Devices": (r"\btubes?\b|catheter|\bpicc\b|central line|pacemaker|aicd|sternotomy"
                        r"|\bclips\b|\bport\b"),
}
YES_IMPLIES_MENTION: dict[str, str] = {
    "Cardiomegaly": r"cardiomegaly|enlarg",
    "Enlarged Cardiomediastinum": r"mediastin|paratracheal",
}
# Any un-negated match means some pathology is present (devices excluded).
PATHOLOGY_WORDS = "|".join(
    [p for label, p in BOTH_WAYS.items() if label != "Support Devices"]
    + [r"cardiomegaly|enlarg|widen|prominen|density|blunting"]
)
NORMAL_IMPRESSION = re.compile(r"^(1\. )?(no acute|no active|negative|normal chest)", re.IGNORECASE)
ACUTE_LABELS = ("Lung Opacity", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
                "Pleural Effusion", "Enlarged Cardiomediastinum")
HEDGES = re.compile(r"possible|questionable|cannot exclude|cannot be excluded|may represent|versus|probable",
                    re.IGNORECASE)


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.;])\s+", text) if s]


def mentions(text: str, pattern: str) -> tuple[int, int]:
    """(affirmed, negated) mention counts; a mention is negated when a cue precedes it in its sentence."""
    affirmed = negated = 0
    for sentence in sentences(text):
        for match in re.finditer(pattern, sentence, re.IGNORECASE):
            if NEGATION.search(sentence[: match.start()]):
                negated += 1
            else:
                affirmed += 1
    return affirmed, negated


def body(report: ReportRecord) -> str:
    """The text the labels describe: FINDINGS and IMPRESSION (INDICATION is the question asked)."""
    return f"{report.findings} {report.impression}"


@pytest.fixture(scope="module")
def reports() -> list[ReportRecord]:
    return generate_reports(DEFAULT_REPORTS, seed=0)


@pytest.fixture(scope="module")
def series() -> list[SeriesRecord]:
    return generate_series(DEFAULT_SERIES, seed=0)


@pytest.fixture(scope="module", params=[1, 2, 3])
def other_seed_reports(request: pytest.FixtureRequest) -> list[ReportRecord]:
    return generate_reports(400, seed=request.param)


# --- reports: determinism, size, ids --------------------------------------------------------

def test_reports_are_deterministic_per_seed() -> None:
    assert generate_reports(40, seed=7) == generate_reports(40, seed=7)
    assert generate_reports(40, seed=7) != generate_reports(40, seed=8)


def test_reports_prefix_is_stable_when_n_grows() -> None:
    # Asking for more reports appends; earlier ids keep their text (splits stay comparable).
    assert generate_reports(30, seed=4) == generate_reports(60, seed=4)[:30]


def test_reports_size_and_ids(reports: list[ReportRecord]) -> None:
    assert len(reports) == DEFAULT_REPORTS
    assert [r.id for r in reports[:3]] == ["cxr-00001", "cxr-00002", "cxr-00003"]
    assert len({r.id for r in reports}) == len(reports)
    assert generate_reports(0) == []
    with pytest.raises(ValueError, match=">= 0"):
        generate_reports(-1)


def test_every_report_has_all_sections_it_needs(reports: list[ReportRecord]) -> None:
    for r in reports:
        assert r.findings.strip() and r.impression.strip(), r.id
        assert set(r.labels) == set(LABEL_KEYS) and len(r.labels) == 14
        assert set(r.labels.values()) <= {YES, NO}


# --- reports: labels agree with the text ----------------------------------------------------

def test_no_finding_is_yes_exactly_without_pathology_labels(reports: list[ReportRecord]) -> None:
    for r in reports:
        any_pathology = any(r.labels[k] == YES for k in PATHOLOGY_LABELS)
        assert (r.labels["No Finding"] == YES) is not any_pathology, r.id


def check_text_agrees_with_labels(report: ReportRecord) -> list[str]:
    problems = []
    text = body(report)
    for label, pattern in BOTH_WAYS.items():
        affirmed, _ = mentions(text, pattern)
        if (report.labels[label] == YES) != (affirmed > 0):
            problems.append(f"{report.id} {label}={report.labels[label]} but {affirmed} affirmed mentions")
    for label, pattern in YES_IMPLIES_MENTION.items():
        if report.labels[label] == YES and not mentions(text, pattern)[0]:
            problems.append(f"{report.id} {label}=Yes with no affirmed mention")
    affirmed_pathology = mentions(text, PATHOLOGY_WORDS)[0] > 0
    if (report.labels["No Finding"] == YES) == affirmed_pathology:
        problems.append(f"{report.id} No Finding={report.labels['No Finding']} vs text")
    return problems


def test_labels_agree_with_findings_and_impression_text(reports: list[ReportRecord]) -> None:
    problems = [p for r in reports for p in check_text_agrees_with_labels(r)]
    assert not problems, problems[:10]


def test_labels_agree_with_text_for_other_seeds(other_seed_reports: list[ReportRecord]) -> None:
    problems = [p for r in other_seed_reports for p in check_text_agrees_with_labels(r)]
    assert not problems, problems[:10]


def test_negated_mentions_are_common_and_never_yes(reports: list[ReportRecord]) -> None:
    # Reports whose only mentions of a finding are negated must say No, and there must be many.
    for label in ("Pneumothorax", "Pleural Effusion", "Consolidation", "Edema", "Fracture", "Lung Lesion"):
        counts = [(r, mentions(body(r), BOTH_WAYS[label])) for r in reports]
        only_negated = [r for r, (affirmed, negated) in counts if negated and not affirmed]
        assert len(only_negated) > 100, label
        assert all(r.labels[label] == NO for r in only_negated), label


def test_reports_never_affirm_and_negate_the_same_finding(reports: list[ReportRecord]) -> None:
    # "Small left pleural effusion. No pleural effusion." would teach the model nonsense.
    for r in reports:
        for label, pattern in BOTH_WAYS.items():
            affirmed, negated = mentions(body(r), pattern)
            assert not (affirmed and negated), (r.id, label, body(r))


def test_uncertain_mentions_are_labelled_yes(reports: list[ReportRecord]) -> None:
    hedged = [
        r for r in reports
        if any(HEDGES.search(s) and not NEGATION.search(s) for s in sentences(body(r)))
    ]
    assert len(hedged) > 100
    for r in hedged:
        assert r.labels["No Finding"] == NO, r.id  # every hedge is about a pathology: policy is Yes


def test_granulomas_and_old_fractures_follow_the_policy(reports: list[ReportRecord]) -> None:
    granuloma = [r for r in reports if mentions(body(r), r"granulom")[0]]
    healed = [r for r in reports if mentions(body(r), r"(healed|old|remote)[^.]*fracture")[0]]
    assert granuloma and healed
    assert all(r.labels["Lung Lesion"] == YES for r in granuloma)
    assert all(r.labels["Fracture"] == YES for r in healed)


def test_impression_is_normal_only_without_acute_findings(reports: list[ReportRecord]) -> None:
    for r in reports:
        if any(r.labels[k] == YES for k in ACUTE_LABELS):
            assert not NORMAL_IMPRESSION.match(r.impression), (r.id, r.impression)
            assert mentions(r.impression, PATHOLOGY_WORDS)[0], (r.id, r.impression)
        if r.labels["No Finding"] == YES:
            assert NORMAL_IMPRESSION.match(r.impression), (r.id, r.impression)


def test_indication_never_sets_a_label(reports: list[ReportRecord]) -> None:
    # A clinical question about pneumonia on a normal study is still No Finding.
    asked = [r for r in reports if "pneumonia" in r.indication.lower() and r.labels["Pneumonia"] == NO]
    assert asked


# --- reports: prevalence and variety ---------------------------------------------------------

def test_every_label_occurs_with_plausible_prevalence(reports: list[ReportRecord]) -> None:
    counts = Counter(k for r in reports for k, v in r.labels.items() if v == YES)
    n = len(reports)
    assert 0.25 <= counts["No Finding"] / n <= 0.55
    for label in CHEXPERT_LABELS:
        assert 0.01 <= counts[label] / n <= 0.25, (label, counts[label])
    # Open-i's common findings outnumber its rare ones.
    assert min(counts["Cardiomegaly"], counts["Lung Opacity"]) > 2 * max(counts["Pneumothorax"],
                                                                         counts["Consolidation"])
    multi = sum(1 for r in reports if sum(r.labels[k] == YES for k in PATHOLOGY_LABELS) >= 2)
    assert multi > 0.1 * n


def test_reports_are_short_and_varied(reports: list[ReportRecord]) -> None:
    words = [len(r.findings.split()) for r in reports]
    assert 22 <= statistics.median(words) <= 60
    assert sum(w <= 90 for w in words) / len(words) > 0.97
    assert len(set(words)) > 30
    assert len({r.findings for r in reports}) > 0.95 * len(reports)
    # Many paraphrases per finding, not a handful of templates.
    effusion_sentences = {s for r in reports for s in sentences(r.findings) if mentions(s, "effusion")[0]}
    assert len(effusion_sentences) > 40
    impressions = Counter(r.impression for r in reports if r.labels["No Finding"] == YES)
    assert len(impressions) > 10


def test_reports_look_like_open_i(reports: list[ReportRecord]) -> None:
    assert sum("XXXX" in r.comparison for r in reports) > 0.2 * len(reports)
    assert sum("XXXX" in r.indication for r in reports) > 0.2 * len(reports)
    assert any(r.comparison.startswith("None") for r in reports)
    assert any(re.match(r"1\. .+ 2\. ", r.impression) for r in reports)  # numbered impressions
    assert any("No acute cardiopulmonary abnormality" in r.impression for r in reports)
    text = " ".join(r.findings for r in reports).lower()
    phrases = ("without", "cannot exclude", "may represent", "sternotomy", "pacemaker", "granuloma", "healed")
    for word in phrases:
        assert word in text, word


# --- series ----------------------------------------------------------------------------------

def test_series_are_deterministic_per_seed() -> None:
    assert generate_series(60, seed=5) == generate_series(60, seed=5)
    assert generate_series(60, seed=5) != generate_series(60, seed=6)


def test_series_size_uniqueness_and_ids(series: list[SeriesRecord]) -> None:
    assert len(series) == DEFAULT_SERIES
    assert len({s.description for s in series}) == len(series)
    assert [s.id for s in series[:2]] == ["mri-00001", "mri-00002"]
    assert len({s.id for s in series}) == len(series)
    assert generate_series(0) == []


def test_series_class_balance(series: list[SeriesRecord]) -> None:
    counts = Counter(s.label for s in series)
    assert set(counts) == set(SERIES_CLASSES)
    for label in SERIES_CLASSES:
        assert 0.05 <= counts[label] / len(series) <= 0.35, (label, counts[label])
    assert counts["Other"] == max(counts.values())
    assert counts["SWI"] < counts["T1"]
    assert len(set(counts.values())) > 2  # not a uniform split


def test_series_descriptions_look_vendor_written(series: list[SeriesRecord]) -> None:
    texts = [s.description for s in series]
    lowered = " ".join(texts).lower()
    for token in ("mprage", "ep2d_diff", "fse", "tse", "flair", "tirm", "swan", "bravo", "tfe", "tof", "loc"):
        assert token in lowered, token
    oriented = sum(bool(re.search(r"(?i)(^|[ _])(ax|sag|cor|tra)([ _]|$)", t)) for t in texts)
    tokened = sum(bool(re.search(r"(?i)(p2|iso|\dmm|256|_rr|_nd|mpr|reformat)", t)) for t in texts)
    assert oriented > 0.15 * len(texts) and tokened > 0.15 * len(texts)
    assert any("_" in t for t in texts) and any(" " in t for t in texts)
    # The same protocol written with different casing is common technologist noise.
    by_lower = Counter(t.lower() for t in texts)
    assert sum(c > 1 for c in by_lower.values()) > 10


def test_series_classes_follow_the_policy(series: list[SeriesRecord]) -> None:
    for s in series:
        text = s.description.lower()
        if re.search(r"adc|apparent diffusion|average dc", text) and "exponential" not in text:  # rule 7
            assert s.label == "ADC", s
        if re.search(r"colfa|tof|perf|rcbv|localizer|scout", text):
            assert s.label == "Other", s
        localizer = re.search(r"3-pl|localizer|scout|\bloc\b", text)  # rule 2 of docs/series_description_rules.md
        if re.search(r"swan|mag_images|pha_images|t2\*", text) and not localizer:
            assert s.label == "SWI", s
        if "flair" in text and "t1" not in text:
            assert s.label == "T2/FLAIR", s
        if re.search(r"t1.*flair", text):
            assert s.label == "T1", s


@pytest.mark.parametrize("pattern,label", [
    # docs/series_description_rules.md, for the families the second collection's dev half added
    (r"tensor|\bdsi|qspace|multishell|rev_?pol|reverse polarity|revpe|exponential|mapping", "Other"),
    (r"3-pl|\bloc\b|localizer", "Other"),
    (r"lava|mp2rage|ir-?spgr|dixon", "T1"),
    (r"hemo|susc|gre[ _]t2|t2\*gre", "SWI"),
    (r"frfse", "T2"),
])
def test_every_base_name_of_a_family_has_the_family_s_class(pattern: str, label: str) -> None:
    named = [(base, c) for c, bases in synthetic_mri.ALL_BASES.items() for base in bases
             if re.search(pattern, base, re.IGNORECASE)]
    assert len(named) >= 3  # the pattern matches the generator's names
    assert [(base, c) for base, c in named if c != label] == []


def test_series_default_size_does_not_enumerate_the_space(monkeypatch: pytest.MonkeyPatch) -> None:
    # Enumerating every variant takes about a second; the default path must only sample.
    def boom() -> None:
        raise AssertionError("default generation enumerated the description space")

    monkeypatch.setattr(synthetic_mri, "_pools", boom)
    assert len(generate_series(DEFAULT_SERIES, seed=11)) == DEFAULT_SERIES


def test_series_beyond_capacity_fail_with_the_maximum() -> None:
    capacity = series_capacity()  # also checks no description belongs to two classes
    assert capacity > 20 * DEFAULT_SERIES
    with pytest.raises(ValueError, match=f"maximum is {capacity}"):
        generate_series(capacity + 1)


# --- the registered data source -------------------------------------------------------------

def test_synthetic_source_loads_through_the_registry() -> None:
    bundle = load_data("synthetic?reports=50&series=40&seed=3")
    assert len(bundle.reports) == 50 and len(bundle.series) == 40
    assert bundle.reports == generate_reports(50, seed=3)
    assert bundle.series == generate_series(40, seed=3)
    assert bundle.notes["reports_source"].startswith("synthetic")
    assert bundle.notes["synthetic_seed"] == "3"
    assert bundle.fingerprint() == load_data("synthetic?reports=50&series=40&seed=3").fingerprint()
    assert bundle.fingerprint() != load_data("synthetic?reports=50&series=40&seed=4").fingerprint()


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("synthetic?reports=abc", "reports"),
        ("synthetic?series=1.5", "series"),
        ("synthetic?seed=x", "seed"),
        ("synthetic?reports=-2", "reports"),
        ("synthetic?rows=5", "rows"),
    ],
)
def test_bad_options_name_the_option(spec: str, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        load_data(spec)
