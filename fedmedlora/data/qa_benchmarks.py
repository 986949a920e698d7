"""Multiple-choice QA test sets: the four bundled FlowerTune benchmarks and user JSONL files.

Every dataset becomes a list of `QAItem(id, question, options, gold)` with `options` an ordered letter -> text map and
`gold` one of its letters, so prompting and scoring never look at the source format. The bundled files are the ones
FlowerTune's medical eval loads from the Hub, in the same order (see each folder's SOURCE.md):

    pubmedqa  PQA-L official test split (500), options A/B/C = yes/no/maybe, the abstract sections as context
    medmcqa   validation split (4183), `cop` is 0-based (0 -> A); `subject_name` as the item's category
    medqa     USMLE English 4-option test split (1273)
    careqa    CareQA English closed-ended test split (5621), gold letter as given; `category` (6 subjects)

`load_pubmedqa_pool` gives PubMedQA's 500 labelled questions outside its test split, for training.

`--limit N` scores a seeded sample of N items, stratified by gold answer and, where the data has one, by category
(`QADataset.sample`): the same seed gives the same questions, and the sample keeps the full set's answer shares.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import string
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fedmedlora_data import data_path

from .files import DataFormatError

PUBMEDQA_OPTIONS = {"A": "yes", "B": "no", "C": "maybe"}
SAMPLE_SEED = 2024  # --limit's default seed (FlowerTune's eval seeds torch with the same number)


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    options: dict[str, str]  # letter -> option text, in display order
    gold: str  # a key of `options`
    context: str | None = None  # passage shown before the question (PubMedQA's abstract)
    category: str | None = None  # subject or exam category where the data has one (a stratum of --limit's sample)


@dataclass(frozen=True)
class QADataset:
    name: str  # used in file names: acc_<name>_<run>.txt
    protocol: str  # which prompt recipe applies: "pubmedqa", "medqa", "medmcqa", "careqa" or "generic"
    items: list[QAItem] = field(repr=False)
    source: str = ""  # where the items came from, for the summary
    sample_seed: int | None = None  # set when the items are a sample (`sample`): its seed ...
    full_size: int | None = None  # ... and the size of the set it was drawn from

    def limited(self, limit: int | None) -> "QADataset":
        """The first `limit` items (all when limit is None or 0). --limit samples instead (`sample`): files are
        often ordered by answer (PubMedQA: yes, no, maybe), so a prefix is no subset to score."""
        if not limit or limit >= len(self.items):
            return self
        return QADataset(self.name, self.protocol, self.items[:limit], self.source)

    def sample(self, size: int | None, seed: int) -> "QADataset":
        """A seeded sample of `size` items (all when size is None or 0, or not smaller than the set), stratified
        by gold answer and, within each answer, by category; in dataset order. See `stratified_sample`."""
        if not size or size >= len(self.items):
            return self
        return QADataset(self.name, self.protocol, stratified_sample(self.items, size, seed), self.source,
                         sample_seed=seed, full_size=len(self.items))

    def sample_record(self) -> dict | None:
        """What summary.json records of a sample (None for a whole set): seed, sizes, and the chosen ids."""
        if self.sample_seed is None:
            return None
        return {"seed": self.sample_seed, "size": len(self.items), "of": self.full_size,
                "stratified_by": "gold answer, then category" if any(i.category for i in self.items)
                else "gold answer", "ids": [item.id for item in self.items]}


def _largest_remainder(sizes: dict, total: int, rng: random.Random) -> dict:
    """Split `total` over groups in proportion to `sizes`: each group gets the floor or the ceiling of its exact
    share (Hamilton's method; ties between equal remainders broken by `rng`)."""
    whole = sum(sizes.values())
    quotas = {key: divmod(total * size, whole) for key, size in sizes.items()}
    counts = {key: q for key, (q, _) in quotas.items()}
    left = total - sum(counts.values())
    keys = sorted(sizes, key=str)
    tiebreak = {key: rng.random() for key in keys}
    for key in sorted(keys, key=lambda k: (-quotas[k][1], tiebreak[k]))[:left]:
        counts[key] += 1
    return counts


def stratified_sample(items: list[QAItem], size: int, seed: int) -> list[QAItem]:
    """`size` items drawn with `seed`, in their original order.

    The number per gold answer is its exact share of `size` rounded down or up (so the sample's answer
    distribution is within one item of the full set's, per answer); within each answer, the items are shared the
    same way among categories (subject, exam category) where the data has them, then drawn at random. The same
    items, seed and size always give the same sample."""
    rng = random.Random(seed)
    strata: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index, item in enumerate(items):
        strata[item.gold][item.category or ""].append(index)
    per_answer = _largest_remainder({gold: sum(map(len, cats.values())) for gold, cats in strata.items()}, size, rng)
    chosen: list[int] = []
    for gold in sorted(strata):
        categories = strata[gold]
        per_category = _largest_remainder({c: len(ix) for c, ix in categories.items()}, per_answer[gold], rng)
        for category in sorted(categories):
            chosen += rng.sample(categories[category], per_category[category])
    return [items[i] for i in sorted(chosen)]


def _pubmedqa_item(pmid: str, record: dict[str, Any], decision: str, where: Path) -> QAItem:
    letter_of = {text: letter for letter, text in PUBMEDQA_OPTIONS.items()}
    if decision not in letter_of:
        raise DataFormatError(f"{where}: PMID {pmid} has label {decision!r}, not one of yes, no, maybe")
    return QAItem(id=pmid, question=record["QUESTION"], options=dict(PUBMEDQA_OPTIONS), gold=letter_of[decision],
                  context="\n".join(record["CONTEXTS"]))


def load_pubmedqa() -> QADataset:
    records = _read_json(data_path("qa", "pubmedqa", "ori_pqal.json.gz"))
    truth_path = data_path("qa", "pubmedqa", "test_ground_truth.json")
    truth = _read_json(truth_path)
    items = []
    for pmid, decision in truth.items():  # the official test split, in its file order
        if pmid not in records:
            raise DataFormatError(f"{truth_path}: PMID {pmid} has no record in ori_pqal.json.gz")
        items.append(_pubmedqa_item(pmid, records[pmid], decision, truth_path))
    return QADataset("pubmedqa", "pubmedqa", items, str(truth_path))


def load_pubmedqa_pool() -> QADataset:
    """PubMedQA's other 500 expert-labelled questions (upstream's train/dev pool): every PMID of ori_pqal.json.gz
    that is not in the test split, in file order, gold from its `final_decision`. Training data that cannot leak
    into the `pubmedqa` benchmark."""
    records_path = data_path("qa", "pubmedqa", "ori_pqal.json.gz")
    records = _read_json(records_path)
    test = _read_json(data_path("qa", "pubmedqa", "test_ground_truth.json"))
    items = [_pubmedqa_item(pmid, record, record["final_decision"], records_path)
             for pmid, record in records.items() if pmid not in test]
    return QADataset("pubmedqa_pool", "pubmedqa", items, str(records_path))


def load_medmcqa() -> QADataset:
    path = data_path("qa", "medmcqa", "medmcqa_val.json.gz")
    items = []
    for row in _read_json(path):
        data = row["data"]
        letters = "ABCD"
        items.append(QAItem(
            id=data["id"],
            question=data["question"],
            options={letter: data[f"op{letter.lower()}"] for letter in letters},
            gold=letters[int(data["cop"])],
            category=data.get("subject_name") or None,
        ))
    return QADataset("medmcqa", "medmcqa", items, str(path))


def load_medqa() -> QADataset:
    path = data_path("qa", "medqa", "test.jsonl.gz")
    items = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            items.append(QAItem(
                id=str(row["realidx"]),
                question=row["question"],
                options=dict(row["options"]),
                gold=row["answer_idx"],
            ))
    return QADataset("medqa", "medqa", items, str(path))


def load_careqa() -> QADataset:
    """CareQA_en as FlowerTune's leaderboard reads it: the Hub split's rows in order, gold = the answer letter
    (`chr(ord('A') + cop - 1)` of the Hub's 1-based `cop`), options A-D, the exam category kept for sampling."""
    path = data_path("qa", "careqa", "careqa_test.json.gz")
    items = []
    for unique_id, row in _read_json(path).items():
        options = row["options"]
        if list(options) != ["A", "B", "C", "D"] or row["correct_answer"] not in options:
            raise DataFormatError(f"{path}: question {unique_id} has options {list(options)} and answer "
                                 f"{row['correct_answer']!r}")
        items.append(QAItem(id=unique_id, question=row["question"], options=dict(options),
                            gold=row["correct_answer"], category=row.get("category") or None))
    return QADataset("careqa", "careqa", items, str(path))


BUNDLED: dict[str, Callable[[], QADataset]] = {
    "pubmedqa": load_pubmedqa,
    "medmcqa": load_medmcqa,
    "medqa": load_medqa,
    "careqa": load_careqa,
}
# FlowerTune's medical leaderboard averages these four accuracies.
LEADERBOARD = ("pubmedqa", "medmcqa", "medqa", "careqa")


def load_mc_jsonl(path: str | os.PathLike[str]) -> QADataset:
    """A user's multiple-choice file, one JSON object a line (gzip if the name ends in .gz):

        {"question": str, "options": {"A": str, "B": str, ...} or [str, ...], "answer": "B" or 0-based index,
         "id": optional str/int}

    Every line is checked; errors name the file and line. Blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"dataset file {path} does not exist")
    opener = gzip.open if path.name.endswith(".gz") else open
    items: list[QAItem] = []
    seen_ids: dict[str, int] = {}
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            item = _item_from_row(row, where, default_id=f"{lineno}")
            if item.id in seen_ids:
                raise DataFormatError(f"{where}: id {item.id!r} repeats the id on line {seen_ids[item.id]}")
            seen_ids[item.id] = lineno
            items.append(item)
    if not items:
        raise DataFormatError(f"dataset file {path} holds no questions")
    name = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return QADataset(name, "generic", items, str(path.resolve()))


def _item_from_row(row: Any, where: str, default_id: str) -> QAItem:
    if not isinstance(row, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in ("question", "options", "answer"):
        if key not in row:
            raise DataFormatError(f"{where}: missing key '{key}'")
    question = row["question"]
    if not isinstance(question, str) or not question.strip():
        raise DataFormatError(f"{where}: key 'question' must be a non-empty string")
    options = _options_from(row["options"], where)
    gold = _gold_from(row["answer"], options, where)
    raw_id = row.get("id", default_id)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise DataFormatError(f"{where}: key 'id' must be a string or an integer, got {raw_id!r}")
    return QAItem(id=str(raw_id), question=question, options=options, gold=gold)


def _options_from(raw: Any, where: str) -> dict[str, str]:
    if isinstance(raw, list):
        texts = raw
        letters = list(string.ascii_uppercase[: len(raw)])
    elif isinstance(raw, dict):
        letters = list(raw)
        texts = list(raw.values())
        expected = list(string.ascii_uppercase[: len(raw)])
        if letters != expected:
            # Prompts list options as A., B., ... by position, so the keys must be exactly that sequence.
            raise DataFormatError(f"{where}: key 'options' must have the keys {expected} in that order, got {letters}")
    else:
        raise DataFormatError(f"{where}: key 'options' must be an object (letter -> text) or a list of strings")
    if not 2 <= len(texts) <= 26:
        raise DataFormatError(f"{where}: key 'options' must hold 2 to 26 options, got {len(texts)}")
    for letter, text in zip(letters, texts):
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(f"{where}: option {letter} must be a non-empty string, got {text!r}")
    return dict(zip(letters, texts))


def _gold_from(raw: Any, options: dict[str, str], where: str) -> str:
    letters = list(options)
    if isinstance(raw, bool):
        raise DataFormatError(f"{where}: key 'answer' must be an option letter or a 0-based index, got {raw!r}")
    if isinstance(raw, int):
        if not 0 <= raw < len(letters):
            raise DataFormatError(f"{where}: key 'answer' = {raw} is out of range for {len(letters)} options "
                                 f"(0-based index)")
        return letters[raw]
    if isinstance(raw, str) and raw.strip().upper() in options:
        return raw.strip().upper()
    raise DataFormatError(f"{where}: key 'answer' = {raw!r} is not one of the option letters {letters} "
                         "or a 0-based index")


def load_qa_dataset(spec: str) -> QADataset:
    """A bundled test set by name (pubmedqa, medmcqa, medqa) or a multiple-choice JSONL file by path."""
    if spec in BUNDLED:
        return BUNDLED[spec]()
    expanded = os.path.expanduser(spec)
    if os.path.isfile(expanded):
        return load_mc_jsonl(expanded)
    raise DataFormatError(
        f"dataset {spec!r} is neither a bundled test set ({', '.join(BUNDLED)}) nor an existing JSONL file "
        f"(looked for {os.path.abspath(expanded)})"
    )


def load_qa_datasets(specs: list[str], limit: int | None = None, seed: int = SAMPLE_SEED) -> list[QADataset]:
    """All datasets of a list of names or files (eval's --datasets), read and checked up front so a bad one fails
    before any model loads; with `limit`, a stratified sample of that many items of each, drawn with `seed` (see
    `stratified_sample`)."""
    if not specs:
        raise DataFormatError("no QA dataset named: name at least one of "
                              f"{', '.join(BUNDLED)} or a JSONL file")
    datasets: list[QADataset] = []
    names: dict[str, str] = {}
    for spec in specs:
        dataset = load_qa_dataset(spec).sample(limit, seed)
        if dataset.name in names:
            raise DataFormatError(f"QA datasets {spec!r} and {names[dataset.name]!r} both give the dataset name "
                                  f"{dataset.name!r}, so their results would overwrite each other")
        names[dataset.name] = spec
        datasets.append(dataset)
    return datasets


def _read_json(path: Path) -> Any:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)
