"""Non-neural baselines, registered as baseline back ends: `rules` (keyword and negation rules for
the labeling task) and `majority` (each task's most frequent training answer).

They read the task input a ChatRequest carries (not the rendered prompt), answer in the exact
format each task parses, and are never cached: their answers cost nothing and depend on the
rules' code or the training split, neither of which is in the cache key.

Labeling rules, in order:
- Only the FINDINGS and IMPRESSION sections count (INDICATION is the clinical question, as the
  synthetic generator's labeling policy says); a text without section headers counts whole.
- Text is cut into sentences, then into clauses at ';' and at "but", "however", "although",
  "except". Commas do not end a clause, so "No effusion, pneumothorax, or consolidation"
  negates all three.
- A mention is a keyword pattern of LABEL_PATTERNS. A negation cue before it in its clause ("no",
  "not", "without", "negative for", "free of", "resolution of", ...) or a closing cue after it
  ("is not seen", "has resolved", "are clear", ...) makes it negative; a cue never reaches past
  its clause. Pseudo-negations ("no change", "cannot exclude", "not excluded") are not cues.
- Uncertain mentions ("possible", "cannot exclude", "X versus Y") count as positive: the task
  has no "uncertain" answer, and CheXpert's U-Ones convention (which the synthetic generator
  follows) reads them as Yes. A label is Yes when any of its mentions is positive.
- "No Finding" is Yes exactly when no pathology label is Yes (labels_from_findings).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.baselines.backends import BACKENDS, BackendSettings, BackendStats, ChatRequest, Completion
from pipelines.data.examples import build_examples
from pipelines.data.records import labels_from_findings
from pipelines.data.sources import load_data
from pipelines.data.split import split_bundle
from pipelines.tasks import harmonization, labeling
from pipelines.tasks.base import Example
from pipelines.vocabulary import CHEXPERT_LABELS, LABEL_KEYS, YES

# ---------------------------------------------------------------- the keyword rules

# One regular expression per CheXpert label, matched on lower-cased clause text. Vocabulary from
# the synthetic generator's phrase banks and the MeSH headings of pipelines/data/mesh_to_chexpert.csv.
LABEL_PATTERNS: dict[str, str] = {
    "Enlarged Cardiomediastinum": (
        r"mediastin\w*( \w+)? (is |are |appears? )?(widen|enlarg)|widen\w* of the (superior )?mediastin"
        r"|(widened|enlarged|prominent) (superior )?(cardio)?mediastin|cardiomediastinal silhouette "
        r"(is |appears )?(\w+ )?(enlarged|widened)|prominen\w+ of the (cardio)?mediastinal"
        r"|paratracheal stripe (is )?widen|mediastinal (mass|widening)"
    ),
    "Cardiomegaly": (
        r"cardiomegaly|(enlarged|enlargement of the) (heart|cardiac)|cardiac enlargement"
        r"|(heart|cardiac silhouette|cardiac shadow|heart size)( \w+){0,3} enlarg"
    ),
    "Lung Lesion": (
        r"nodul(e|es|ar)|(?<!mediastinal )\bmass(es)?\b|granulom|neoplas|tumou?r|malignan|metasta"
        r"|cavitary|cavitation"
    ),
    "Lung Opacity": (
        r"opacit|opacification|air ?space disease|infiltrat|(?<!nodular )(?<!linear )densit"
        r"|(?<!atelectasis or )(?<!atelectasis versus )\bscar|fibros"
        r"|interstitial (markings|prominence|disease|lung disease)(?![^.;]*edema)"
    ),
    "Edema": (
        r"(?<!soft tissue )edema|vascular congestion|pulmonary congestion|cephalization|kerley"
        r"|heart failure|\bchf\b|vascular engorgement"
    ),
    "Consolidation": r"consolidat",
    "Pneumonia": r"pneumonia|pneumonitis|infectio|bronchopneumon",
    "Atelectasis": r"atelecta|(lobar|lobe) collapse|collapse of the \w+ (\w+ )?lobe",
    "Pneumothorax": r"pneumothora|hydropneumothora",
    "Pleural Effusion": (
        r"(?<!pericardial )effusion|hydropneumothora|hydrothorax|meniscus"
        r"|blunt\w*( of)?( the| both)?( \w+)? costophrenic(?![^.;]*due to[^.;]*thickening)"
        r"|costophrenic (angles?|sulcus|sulci|recess(es)?) (is |are )?blunt(?![^.;]*due to[^.;]*thickening)"
    ),
    "Pleural Other": (
        r"pleural(-parenchymal)? (thickening|plaque|calcification|scar|fibrosis)|thickening of the pleura"
        r"|calcified pleura|pleural-parenchymal|fibrothorax|apical (pleural )?cap"
    ),
    "Fracture": r"fractur|\bfx\b",
    "Support Devices": (
        r"\b(picc|aicd|icd|cabg)\b|catheter|central (venous )?line|(ij|jugular|subclavian) line"
        r"|port-a-cath|\bport\b|pacemaker|\bpacer\b|defibrillator|\b(endotracheal|et|nasogastric|ng|og"
        r"|orogastric|enteric|chest|feeding|tracheostomy|gastrostomy) tubes?\b|sternotomy|\bclips?\b"
        r"|\bstaples\b|\bstents?\b|prosthe|valve replacement|hardware|\bleads\b|\bdrain\b|loop recorder"
    ),
}

# Cues that negate the mentions after them in their clause (and a mention they sit inside:
# "the heart is not enlarged").
NEGATION_BEFORE = (
    r"\bno\b|\bnot\b|\bwithout\b|negative for|free of|absence of|\babsent\b|resolution of|resolved"
    r"|removal of|\bremoved\b|clear of|\bnor\b|\bneither\b|rather than"
)
# Cues that negate the mentions before them in their clause ("pneumothorax has resolved",
# "pulmonary vascularity appears within normal limits").
NEGATION_AFTER = (
    r"\b(is|are|has|have|was|were)( been)? (resolved|absent|clear|cleared|removed)\b|\bresolved\b"
    r"|\bnot (well[- ])?(seen|identified|visualized|present|evident|appreciated|demonstrated)\b"
    r"|\bno longer\b|\b(appears?|is|are|remains?)( \w+)? (within (the )?(normal limits|limits of normal)"
    r"|normal|unremarkable)\b"
)
# Hedges: the mentions after them in their clause (or before, for the closing ones) are uncertain.
UNCERTAIN_BEFORE = (
    r"\b(may|might|could|can) (represent|reflect|be|indicate)\b|\bpossib|\bquestion|\bsuspicious for"
    r"|\bconcerning for|cannot (be )?exclud|difficult to (completely )?exclud|\bsuggestive of|\bdifferential"
    r"|\bversus\b|\bvs\b|\bor\b|\bconsideration\b|\bprobabl|\bequivocal|\bpresumed|\bsuspect"
)
UNCERTAIN_AFTER = r"\b(is|are) (not (entirely )?excluded|possible|questionable|a consideration)\b|not excluded"
UNCERTAIN_IS_POSITIVE = True
# Phrases that look like negation cues but negate nothing ("no change in the effusion").
PSEUDO_NEGATION = (
    r"\bno (significant |interval |appreciable |substantial )?change|without (significant |interval )?"
    r"change|not (significantly )?changed|cannot (be )?exclud|not (be )?exclud|not (be )?ruled out"
    r"|cannot (be )?ruled? out|not (entirely )?excluded|no longer than|not only"
)
CLAUSE_BREAK = r";|\b(but|however|although|though|except|aside from|apart from)\b"
SENTENCE_BREAK = r"(?<=[.!?])\s+|\n+"
SECTION = re.compile(r"^\s*(COMPARISON|INDICATION|FINDINGS|IMPRESSION)\s*:\s*", re.IGNORECASE)
LABELED_SECTIONS = ("findings", "impression")

_LABELS = {label: re.compile(pattern) for label, pattern in LABEL_PATTERNS.items()}
_BEFORE, _AFTER, _PSEUDO, _HEDGE_BEFORE, _HEDGE_AFTER = (re.compile(p) for p in (
    NEGATION_BEFORE, NEGATION_AFTER, PSEUDO_NEGATION, UNCERTAIN_BEFORE, UNCERTAIN_AFTER))


def labeled_text(report: str) -> str:
    """The FINDINGS and IMPRESSION sections of a report (the whole text when it has no headers)."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in report.splitlines():
        header = SECTION.match(line)
        if header:
            current = header.group(1).lower()
            line = line[header.end():]
        sections.setdefault(current, []).append(line)
    if set(sections) <= {""}:
        return report
    return "\n".join(line for name in LABELED_SECTIONS for line in sections.get(name, ()))


def clauses(text: str) -> list[str]:
    """Lower-cased clauses: sentences cut at ';' and at contrastive conjunctions."""
    out = []
    for sentence in re.split(SENTENCE_BREAK, text.lower()):
        out += [c.strip() for c in re.split(CLAUSE_BREAK, sentence) if c and c.strip()]
    return out


def _cue_spans(pattern: re.Pattern, clause: str, pseudo: list[tuple[int, int]]) -> list[int]:
    """Start offsets of the cues in a clause, leaving out those inside a pseudo-negation."""
    return [m.start() for m in pattern.finditer(clause)
            if not any(a <= m.start() < b for a, b in pseudo)]


def _in_scope(mention: re.Match, before: list[int], after: list[int]) -> bool:
    """Whether a cue before the mention's end, or a closing cue after it with no comma between
    ("heart is enlarged, vascularity is normal" keeps the heart), reaches the mention."""
    text = mention.string
    return any(cue < mention.end() for cue in before) or \
        any(cue >= mention.end() and "," not in text[mention.end():cue] for cue in after)


def positive_labels(report: str, uncertain_is_positive: bool = UNCERTAIN_IS_POSITIVE) -> set[str]:
    """CheXpert labels with at least one positive mention (not negated; if uncertain, per the policy)."""
    found: set[str] = set()
    for clause in clauses(labeled_text(report)):
        pseudo = [m.span() for m in _PSEUDO.finditer(clause)]
        negation = _cue_spans(_BEFORE, clause, pseudo), _cue_spans(_AFTER, clause, pseudo)
        hedge = [m.start() for m in _HEDGE_BEFORE.finditer(clause)], \
            [m.start() for m in _HEDGE_AFTER.finditer(clause)]
        for label, pattern in _LABELS.items():
            for mention in pattern.finditer(clause):
                if _in_scope(mention, *negation):
                    continue
                if uncertain_is_positive or not _in_scope(mention, *hedge):
                    found.add(label)
                    break
    return found


def rule_labels(report: str) -> dict[str, str]:
    """The 14 Yes/No labels the rules give a report."""
    return labels_from_findings(positive_labels(report))


def rule_answer(task_input: str) -> str:
    """The labeling task's answer for a report, rendered by the task itself."""
    labels = rule_labels(task_input)
    return labeling.render_target([labels[key] for key in LABEL_KEYS])


# ---------------------------------------------------------------- majority answers

Answer = Callable[[str], str]  # task input -> answer text


def _majority_labels(train: list[Example]) -> Answer:
    """Each label's more frequent training value (a tie is No); No Finding follows the rest."""
    yes = Counter(key for e in train for key, value in e.reference.items() if value == YES)
    positive = {key for key in CHEXPERT_LABELS if yes[key] > len(train) / 2}
    labels = labels_from_findings(positive)
    text = labeling.render_target([labels[key] for key in LABEL_KEYS])
    return lambda _input: text


def _majority_class(train: list[Example]) -> Answer:
    """The most frequent training class, paired with the description asked about."""
    cls = Counter(e.reference for e in train).most_common(1)[0][0]
    return lambda description: harmonization.render_target(description, cls)


def _majority_target(train: list[Example]) -> Answer:
    """The most frequent training target text (first seen wins a tie)."""
    text = Counter(e.target for e in train).most_common(1)[0][0]
    return lambda _input: text


# How each task's majority answer is built from its training examples (default: _majority_target).
MAJORITY_RULES: dict[str, Callable[[list[Example]], Answer]] = {
    "labeling": _majority_labels,
    "harmonization": _majority_class,
}


def majority_answers(train: dict[str, list[Example]]) -> dict[str, Answer]:
    """Per task, the function that gives its majority answer."""
    return {task: MAJORITY_RULES.get(task, _majority_target)(examples) for task, examples in train.items()}


def training_examples(config: BackendSettings) -> dict[str, list[Example]]:
    """The training examples of the configured tasks: same data and split seed as the test split."""
    bundle = load_data(config.data)
    return build_examples(bundle, split_bundle(bundle, config.split_seed), config.tasks).train


# ---------------------------------------------------------------- the back ends


@dataclass
class AnswerBackend:
    """A back end that answers each request from its task and task input, with no model."""

    name: str
    model: str
    answers: dict[str, Answer]
    decoding: str  # logged as the run's "decoding" param
    cacheable = False  # answers are free, and depend on code or data the cache key does not hold

    def __post_init__(self) -> None:
        self.identity = self.name
        self.stats = BackendStats()

    def complete(self, requests: list[ChatRequest],
                 on_done: Callable[[int, Completion], None] | None = None) -> list[Completion]:
        results = []
        for i, request in enumerate(requests):
            answer = self.answers.get(request.task)
            completion = (Completion(answer(request.task_input), "ok", attempts=1) if answer else
                          Completion(status="failed", error=f"the {self.name} backend does not answer "
                                                            f"task {request.task!r}"))
            self.stats.add(requests=1)
            results.append(completion)
            if on_done:
                on_done(i, completion)
        return results


def _declare(name: str, model: str, tasks: tuple[str, ...] = ()) -> Callable:
    """Register a factory with what config validation reads: its fixed model name and tasks."""
    def register(factory: Callable[[BackendSettings], AnswerBackend]) -> Callable:
        factory.model_name, factory.tasks = model, tasks
        return BACKENDS.register(name)(factory)
    return register


@_declare("rules", "keyword-rules", tasks=("labeling",))
def _rules(config: BackendSettings) -> AnswerBackend:
    return AnswerBackend("rules", "keyword-rules", {"labeling": rule_answer}, decoding="rules")


@_declare("majority", "majority-class")
def _majority(config: BackendSettings) -> AnswerBackend:
    return AnswerBackend("majority", "majority-class", majority_answers(training_examples(config)),
                         decoding="majority")
