"""Lenient extraction of a flat JSON object from free-running model output.

Small fine-tuned models write almost-JSON: prose before the object, a continuation after it,
single quotes (Python dict style), trailing commas, typographic quotes, or an object cut off
when generation hit max_new_tokens. `extract_json_object` first tries the strict decoder at
each `{` and falls back to a forgiving scanner of ``key: value`` pairs, so one bad character
does not throw away thirteen good labels.
"""

from __future__ import annotations

import json

# Typographic quotes map one-to-one onto ASCII ones, so string positions do not move.
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‟": '"', "‘": "'", "’": "'", "‚": "'"})

# How many `{` positions to try before giving up: bounds the work on adversarial text such as
# "{{{{..." (each try is linear in the text length) while real outputs succeed on the first.
_MAX_STARTS = 16

_QUOTES = "\"'"
# A quote closes a string only when the next non-blank character is structural (or the text
# ends); an apostrophe inside 'it's' or an unescaped quote in a description is kept as text.
_AFTER_CLOSING_QUOTE = ":,}]\n"
_KEY_STOPS = ":,}\n"
_VALUE_STOPS = ",}\n"
_BLANKS = " \t\r"


def extract_json_object(text: str) -> dict[str, str] | None:
    """The first JSON-like object in `text` with at least one pair, as a flat str -> str dict.

    Tolerates text around the object, single or typographic quotes, trailing commas, bare
    words (``{No Finding: Yes}``) and a missing closing brace. Non-string values become text
    (``true``, ``1``; nested objects and lists as their JSON or raw text). On a repeated key
    the first occurrence wins. Returns None when no object with a pair is found; never raises.
    """
    if not isinstance(text, str):
        return None
    normalized = text.translate(_SMART_QUOTES)
    start = normalized.find("{")
    for _ in range(_MAX_STARTS):
        if start < 0:
            return None
        pairs = _strict_object(normalized, start) or _scan_pairs(normalized, start + 1)
        if pairs:
            return pairs
        start = normalized.find("{", start + 1)
    return None


def _strict_object(text: str, start: int) -> dict[str, str] | None:
    """Decode a well-formed object at `start` exactly (trailing text ignored), else None."""
    decoder = json.JSONDecoder(object_pairs_hook=_first_wins)
    try:
        value, _ = decoder.raw_decode(text, start)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    return {key: _as_text(item) for key, item in value.items()}


def _first_wins(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        result.setdefault(key, value)
    return result


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)  # true, 1, null, nested objects
    except (ValueError, RecursionError):
        return str(value)


def _scan_pairs(text: str, i: int) -> dict[str, str]:
    """Forgiving scan of ``key: value`` pairs from just after a `{` to its `}` or the text's end."""
    pairs: dict[str, str] = {}
    n = len(text)
    while i < n:
        i = _skip(text, i, _BLANKS + ",\n")
        if i >= n or text[i] == "}":
            break
        key, i = _read_atom(text, i, _KEY_STOPS)
        i = _skip(text, i, _BLANKS)
        if i >= n or text[i] != ":":
            i = _find_any(text, i, _VALUE_STOPS)  # not a pair: resume at the next separator
            continue
        value, i = _read_atom(text, _skip(text, i + 1, _BLANKS), _VALUE_STOPS)
        if key:
            pairs.setdefault(key, value)
    return pairs


def _read_atom(text: str, i: int, stops: str) -> tuple[str, int]:
    """Read a quoted string, a bracketed value or a bare word at `i`; return it and the next index."""
    if i >= len(text):
        return "", i
    if text[i] in _QUOTES:
        return _read_quoted(text, i)
    if text[i] in "{[":
        end = _balanced_end(text, i)
        return text[i:end], end
    end = _find_any(text, i, stops)
    return text[i:end].strip(), end


def _read_quoted(text: str, i: int) -> tuple[str, int]:
    """Read a string opened by the quote at `i`; unterminated strings run to the end of text."""
    quote, j, n = text[i], i + 1, len(text)
    while j < n:
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == quote and _closes(text, j + 1):
            return _unescape(text[i + 1 : j], quote), j + 1
        j += 1
    return _unescape(text[i + 1 :], quote).strip(), n


def _closes(text: str, i: int) -> bool:
    i = _skip(text, i, _BLANKS)
    return i >= len(text) or text[i] in _AFTER_CLOSING_QUOTE


def _unescape(raw: str, quote: str) -> str:
    if quote == "'":
        return raw.replace("\\'", "'")
    try:
        return json.loads(f'"{raw}"', strict=False)
    except ValueError:  # unescaped inner quote or a dangling backslash: keep the raw text
        return raw


def _balanced_end(text: str, i: int) -> int:
    """Index just past the bracket that closes the one at `i` (or the text's end)."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] in "{[":
            depth += 1
        elif text[j] in "}]":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def _find_any(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] not in chars:
        i += 1
    return i
