"""CoNLL/BIO files: one `token<TAB>tag` (or `token tag`) per line, a blank line between sentences, optional gzip.

Tags are read as conlleval reads them: an `I-X` after `O` or after another type starts an entity, so IOB1 files
(which write `I-` for the first token of most entities) and loose BIO decode to the right entities. Such sentences
are rewritten in IOB2 (`B-` first) as they are read, so entity counts, the partitioning label and the training
labels all see the same entities that scoring sees.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..scoring.spans import bio_to_spans, spans_to_bio
from .files import DataFormatError, text_lines

LOG = logging.getLogger(__name__)

_TAG = re.compile(r"^(O|[BI]-\S+)$")
_OTHER_SCHEMES = re.compile(r"^[SEUL]-\S+$")  # BIOES / IOBES (S-, E-) and BILOU (U-, L-)


def _tag_problem(tag: str) -> str:
    if _OTHER_SCHEMES.match(tag):
        return (f"tag {tag!r} is from the BIOES/BILOU scheme; convert the file to BIO (S- and U- become B-, "
                "E- and L- become I-)")
    return f"tag {tag!r} is not BIO (O, B-<type> or I-<type>)"


def _starts_with_i(tags: list[str]) -> bool:
    """Whether some I- tag begins an entity (after O, or after another type): IOB1 or loose BIO."""
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return True
        previous = tag
    return False


def read_conll(path: str | Path) -> list[tuple[list[str], list[str]]]:
    """Sentences as (tokens, IOB2 tags). The last column is the tag; `-DOCSTART-` lines are skipped."""
    path = Path(path)
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    rewritten = 0

    def end_sentence() -> None:
        nonlocal tokens, tags, rewritten
        if tokens:
            if _starts_with_i(tags):
                tags = spans_to_bio(bio_to_spans(tags), len(tags))
                rewritten += 1
            sentences.append((tokens, tags))
            tokens, tags = [], []

    for lineno, line in text_lines(path):
        if not line.strip():
            end_sentence()
            continue
        if line.startswith("-DOCSTART-"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2:
            raise DataFormatError(f"{path}:{lineno}: expected 'token<TAB>tag', got {line[:80]!r}")
        tag = parts[-1].strip()
        if not _TAG.match(tag):
            raise DataFormatError(f"{path}:{lineno}: {_tag_problem(tag)}")
        tokens.append(parts[0])
        tags.append(tag)
    end_sentence()
    if not sentences:
        raise DataFormatError(f"{path}: no sentences (an empty file, or only -DOCSTART- lines)")
    if rewritten:
        LOG.warning("%s: %d sentence(s) have an entity that begins with I- (IOB1 or loose BIO); read as conlleval "
                    "does (I- after O or after another type starts an entity)", path, rewritten)
    return sentences
