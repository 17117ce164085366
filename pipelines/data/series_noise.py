"""Site-noise copies of training series descriptions (`--series-noise k`; an option, 0 = off).

A real archive's descriptions carry tokens that name no contrast: series numbers ("2-", "s004_"),
study and site tags ("(adni)", "PPMI_", "_ASO"), coil and navigator words ("64ch", "vNav"),
protocol adjectives ("Accelerated", "straight", "brain lab"). A model trained only on the
generator's banks learns that an unfamiliar token means "Other" (on the development half of
tests/data/real_series_descriptions.csv, 8 of the cpu preset's 11 errors were T1, T2 and
FLAIR names with such a token called Other). Each copy keeps its record's class and adds one or
two tokens of SITE_PREFIXES and SITE_SUFFIXES, or recases one word, so the class has to be read
from the contrast tokens wherever they sit. Only training series are copied; evaluation is never
touched. The banks hold no token that names a class (tests/test_series_noise.py checks them
against every class's cue words).
"""
from __future__ import annotations

import random
import re
from dataclasses import replace

from pipelines.data.records import SeriesRecord

SITE_PREFIXES: tuple[str, ...] = (
    "2-", "3-", "5-", "7-", "12-", "s002_", "s004_", "Se5_", "WIP ", "WIP_", "PPMI_", "ADNI_", "ABCD_",
    "HCP_", "UKB_", "Accelerated ", "research ", "NEW ", "Brain ", "BRAIN_", "Head_", "Routine ",
    "pre ", "Clinical ", "Study ", "NEURO_", "SCIC ", "WAND ", "OASIS_", "NACC_", "AIBL_",
)
SITE_SUFFIXES: tuple[str, ...] = (
    "(adni)", "(ppmi)", "(abcd)", "(2)", "(3)", "_ASO", " ASO", " straight", " brain lab", " brainlab",
    "_ZOOMit", " ZOOMit", "_vNav", " vNav", "_64ch", " 32ch", " 20ch", "_NAV", " head", " BRAIN",
    " routine", " fast", " HiRes", " ND", "_NORM", " FIL", " v2", "_new", " research", " SMS2",
    " iPAT2", " CS", " SENSE", "_ARC", "_0.9mm", " 1x1x1", " 256x256", " nav",
    # acquisition parameters (stop 27, the second collection's dev half): matrix, averages, TR, flip angle
    " 512 x 512", "_512x512", " NEX2", " 2NEX", "_NSA6", " NSA2", " TR2000", "_tr88", "_fa9", " 2avg",
)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def noisy_copies(records: list[SeriesRecord], copies: int, seed: int) -> list[SeriesRecord]:
    """`copies` site-noise variants of every record, in record order, each with its record's class.

    A variant's id is `<id>~noise<j>`; the same (records, copies, seed) gives the same list. A
    variant that comes out equal to an existing description is drawn again (up to 20 tries, then
    kept as is: it only repeats a training example).
    """
    if copies < 0:
        raise ValueError(f"series noise copies must be >= 0, got {copies}")
    seen = {r.description for r in records}
    out: list[SeriesRecord] = []
    for record in records:
        rng = random.Random(f"{seed}:{record.id}")
        for j in range(1, copies + 1):
            for _ in range(20):
                text = site_noise(rng, record.description)
                if text not in seen:
                    break
            seen.add(text)
            out.append(replace(record, id=f"{record.id}~noise{j}", description=text))
    return out


def site_noise(rng: random.Random, description: str) -> str:
    """`description` with one or two site tokens added, or one word recased, chosen with `rng`."""
    text = description
    for operation in rng.sample(_OPERATIONS, rng.choice((1, 1, 2))):
        text = operation(rng, text)
    return text


def _prefix(rng: random.Random, text: str) -> str:
    return rng.choice(SITE_PREFIXES) + text


def _suffix(rng: random.Random, text: str) -> str:
    token = rng.choice(SITE_SUFFIXES)
    return text + token.replace("_", " ") if " " in text and "_" not in text else text + token


def _recase(rng: random.Random, text: str) -> str:
    """One word title-cased, lower-cased or upper-cased ("3DT1_MPRAGE" -> "3DT1_Mprage")."""
    words = list(_WORD.finditer(text))
    if not words:
        return text
    word = rng.choice(words)
    change = rng.choice((str.title, str.lower, str.upper))
    return text[: word.start()] + change(word.group()) + text[word.end():]


_OPERATIONS = (_prefix, _suffix, _recase)
