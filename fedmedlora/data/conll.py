"""CoNLL/BIO files: one `token<TAB>tag` (or `token tag`) per line, a blank line between sentences, optional gzip."""

from __future__ import annotations

import re
from pathlib import Path

from .files import DataFormatError, open_text

_TAG = re.compile(r"^(O|[BI]-\S+)$")


def read_conll(path: str | Path) -> list[tuple[list[str], list[str]]]:
    """Sentences as (tokens, BIO tags). The last column is the tag; `-DOCSTART-` lines are skipped."""
    path = Path(path)
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    try:
        with open_text(path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    if tokens:
                        sentences.append((tokens, tags))
                        tokens, tags = [], []
                    continue
                if line.startswith("-DOCSTART-"):
                    continue
                parts = line.split("\t") if "\t" in line else line.split()
                if len(parts) < 2:
                    raise DataFormatError(f"{path}:{lineno}: expected 'token<TAB>tag', got {line[:80]!r}")
                tag = parts[-1].strip()
                if not _TAG.match(tag):
                    raise DataFormatError(f"{path}:{lineno}: tag {tag!r} is not BIO (O, B-<type> or I-<type>)")
                tokens.append(parts[0])
                tags.append(tag)
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{path}: cannot read: {err}") from None
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise DataFormatError(f"{path}: no sentences")
    return sentences
