"""Turning a generation into an answer, by FlowerTune's rule (its `format_answer`), so accuracies match its own.

On the lower-cased generation: keep only the line after a "\\n##" marker if there is one, replace every character
that is not an ASCII letter or digit by a space and squeeze the spaces; then
  - multiple choice ("mcq"): keep the first character ("b. lupus" -> "b", "the answer" -> "t");
  - yes/no/maybe ("boolean"): collapse "yesyes"/"nono"/"yesno"/"noyes" to the first word.
If the result is one of a, b, c, d, e, yes, no it is the answer; otherwise the answer is the whole lower-cased
generation, unchanged. That last rule is why PubMedQA's "maybe" only counts when the model writes exactly "maybe"
(any case): "maybe." or " maybe" do not match. We keep it: changing it would change the leaderboard numbers.
"""

from __future__ import annotations

import re
from typing import Iterable

FLOWERTUNE_ACCEPTED = frozenset({"a", "b", "c", "d", "e", "yes", "no"})
_NOT_ALPHANUMERIC = re.compile(r"[^a-zA-Z0-9]")
_REPEATED_BOOLEANS = (("yesyes", "yes"), ("nono", "no"), ("yesno", "yes"), ("noyes", "no"))


def extract_answer(generation: str, answer_type: str, extra_letters: Iterable[str] = ()) -> str:
    """The lower-cased answer FlowerTune compares with the lower-cased gold answer text.

    `extra_letters` widens the accepted letters for user datasets with more than five options (F, G, ...); the
    bundled benchmarks never need it, so their scoring is FlowerTune's exactly.
    """
    if answer_type not in ("mcq", "boolean"):
        raise ValueError(f"answer_type must be 'mcq' or 'boolean', got {answer_type!r}")
    whole = generation.lower()
    candidate = whole
    if "\n##" in candidate:
        candidate = candidate.split("\n##")[1].split("\n")[0].strip()
    candidate = " ".join(_NOT_ALPHANUMERIC.sub(" ", candidate).split())
    if answer_type == "mcq":
        candidate = candidate[:1]
    else:
        for repeated, single in _REPEATED_BOOLEANS:
            if repeated in candidate:  # only the first pattern that occurs, as FlowerTune does
                candidate = candidate.replace(repeated, single)
                break
    accepted = FLOWERTUNE_ACCEPTED.union(letter.lower() for letter in extra_letters)
    return candidate if candidate in accepted else whole


def answer_letter(extracted: str, answer_texts: dict[str, str]) -> str | None:
    """The option whose expected answer text (letter or word, see QAProtocol.answer_text) equals `extracted`, or
    None when the generation names no option: those count as wrong and as "unparseable" in the summary."""
    for letter, text in answer_texts.items():
        if extracted == text.lower():
            return letter
    return None
