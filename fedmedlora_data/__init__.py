"""Public medical datasets bundled with fedmedlora (see README.md here for sources and licenses).

This is a separate top-level package on purpose: Flower ships the app to its runtime as a FAB that holds code and
config only (`fab-exclude` in pyproject.toml leaves this package out), so the ClientApp imports `fedmedlora` from the
FAB but this package, with its data files, from the environment where fedmedlora was pip-installed.
"""

from pathlib import Path

DATA_ROOT = Path(__file__).resolve().parent


def data_path(*parts: str) -> Path:
    """Path of a bundled file, e.g. ``data_path("ner", "ncbi_disease", "train.tsv.gz")``; raises if it is missing."""
    path = DATA_ROOT.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"bundled data file {path} is missing: reinstall fedmedlora (`pip install -e .` from the project root)"
        )
    return path


def conll_sentences(corpus: str, splits: tuple[str, ...] = ("train",)) -> list[str]:
    """The sentences of a bundled CoNLL corpus (e.g. ``"bc5cdr"``), each as its raw lines, in file order."""
    import gzip

    sentences, current = [], []
    for split in splits:
        with gzip.open(data_path("ner", corpus, f"{split}.tsv.gz"), "rt", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    current.append(line)
                elif current:
                    sentences.append("".join(current))
                    current = []
        if current:
            sentences.append("".join(current))
            current = []
    return sentences


def write_site_file(path: Path, corpus: str, skip: int, count: int, splits: tuple[str, ...] = ("train",)) -> Path:
    """A trial site's own CoNLL file: sentences ``skip .. skip+count`` of a bundled corpus (for `data-path`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(conll_sentences(corpus, splits)[skip:skip + count]) + "\n", encoding="utf-8")
    return path
