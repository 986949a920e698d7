"""The QA test sets: bundled counts and gold distributions as published, and the checks on user JSONL files."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from fedmedlora.data.files import DataFormatError
from fedmedlora.data.qa_benchmarks import load_mc_jsonl, load_qa_dataset, load_qa_datasets
from fedmedlora_data import data_path


@pytest.mark.parametrize("name, total, gold", [
    # Counts from each dataset's SOURCE.md (and FlowerTune's splits): PubMedQA yes/no/maybe = A/B/C.
    ("pubmedqa", 500, {"A": 276, "B": 169, "C": 55}),
    ("medmcqa", 4183, {"A": 1348, "B": 1085, "C": 925, "D": 825}),
    ("medqa", 1273, {"A": 353, "B": 309, "C": 346, "D": 265}),
    ("careqa", 5621, {"A": 1390, "B": 1460, "C": 1486, "D": 1285}),
])
def test_bundled_sets_have_the_published_sizes_and_answers(name, total, gold):
    dataset = load_qa_dataset(name)
    assert len(dataset.items) == total
    assert Counter(item.gold for item in dataset.items) == gold
    assert len({item.id for item in dataset.items}) == total
    assert all(item.gold in item.options for item in dataset.items)


def test_pubmedqa_items_carry_the_abstract_and_yes_no_maybe_options():
    items = load_qa_dataset("pubmedqa").items
    raw = json.load(gzip.open(data_path("qa", "pubmedqa", "ori_pqal.json.gz"), "rt"))
    first = items[0]
    assert first.options == {"A": "yes", "B": "no", "C": "maybe"}
    assert first.question == raw[first.id]["QUESTION"]
    assert first.context == "\n".join(raw[first.id]["CONTEXTS"])
    assert first.options[first.gold] == raw[first.id]["final_decision"]


def test_medmcqa_cop_is_zero_based():
    raw = json.load(gzip.open(data_path("qa", "medmcqa", "medmcqa_val.json.gz"), "rt"))
    item = load_qa_dataset("medmcqa").items[5]
    data = raw[5]["data"]
    assert item.options[item.gold] == data["op" + "abcd"[int(data["cop"])]]


def test_careqa_items_are_the_hub_split_in_order_with_their_categories():
    raw = json.load(gzip.open(data_path("qa", "careqa", "careqa_test.json.gz"), "rt"))
    items = load_qa_dataset("careqa").items
    assert [item.id for item in items] == list(raw)
    first = raw[items[0].id]
    assert (items[0].question, items[0].options, items[0].gold) == (first["question"], first["options"],
                                                                     first["correct_answer"])
    assert Counter(item.category for item in items) == {"Pharmacology": 969, "Biology": 966, "Psychology": 962,
                                                         "Chemistry": 944, "Nursing": 923, "Medicine": 857}


def test_medmcqa_items_carry_their_subject():
    items = load_qa_dataset("medmcqa").items
    subjects = Counter(item.category for item in items)
    assert len(subjects) == 21 and subjects["Dental"] == 1318 and subjects["Surgery"] == 369


def _within_one_per_stratum(full, sample, key):
    """Every stratum's count in the sample is its exact share of the sample size, rounded down or up."""
    whole, part = Counter(key(i) for i in full), Counter(key(i) for i in sample)
    for stratum, count in whole.items():
        share = count * len(sample) / len(full)
        assert abs(part.get(stratum, 0) - share) < 1, (stratum, part.get(stratum, 0), share)


@pytest.mark.parametrize("name, size", [("pubmedqa", 50), ("medmcqa", 120), ("careqa", 60), ("medqa", 33)])
def test_limit_is_a_seeded_sample_with_the_full_sets_answer_shares(name, size):
    full = load_qa_dataset(name).items
    (dataset,) = load_qa_datasets([name], limit=size, seed=2024)
    sample = dataset.items
    assert len(sample) == size == len({i.id for i in sample})
    _within_one_per_stratum(full, sample, key=lambda item: item.gold)
    order = {item.id: k for k, item in enumerate(full)}
    assert [order[i.id] for i in sample] == sorted(order[i.id] for i in sample)  # dataset order
    for gold in {i.gold for i in full}:  # within an answer, categories keep their shares too
        _within_one_per_stratum([i for i in full if i.gold == gold], [i for i in sample if i.gold == gold],
                                key=lambda item: item.category)
    again = load_qa_datasets([name], limit=size, seed=2024)[0].items
    other = load_qa_datasets([name], limit=size, seed=7)[0].items
    assert [i.id for i in again] == [i.id for i in sample]
    assert [i.id for i in other] != [i.id for i in sample]
    record = dataset.sample_record()
    assert (record["seed"], record["size"], record["of"]) == (2024, size, len(full))
    assert record["ids"] == [i.id for i in sample]


def test_pubmedqa_prefix_would_be_all_yes_but_the_sample_is_not():
    full = load_qa_dataset("pubmedqa")
    assert {i.gold for i in full.limited(50).items} == {"A"}  # the file is ordered yes, no, maybe
    assert Counter(i.gold for i in full.sample(50, seed=2024).items) == {"A": 28, "B": 17, "C": 5}


def test_no_limit_or_a_limit_above_the_size_scores_everything():
    assert load_qa_datasets(["medqa"], limit=None)[0].sample_record() is None
    whole = load_qa_datasets(["pubmedqa"], limit=10_000, seed=1)[0]
    assert len(whole.items) == 500 and whole.sample_record() is None


def _write(tmp_path, lines, name="mine.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_generic_jsonl_accepts_letter_maps_lists_letters_and_indices(tmp_path):
    path = _write(tmp_path, [
        {"question": "Q1?", "options": {"A": "x", "B": "y"}, "answer": "B"},
        "",
        {"question": "Q2?", "options": ["p", "q", "r"], "answer": 2, "id": "custom"},
        {"question": "Q3?", "options": ["p", "q"], "answer": "a"},
    ])
    dataset = load_mc_jsonl(path)
    assert dataset.name == "mine" and dataset.protocol == "generic"
    assert [(i.id, i.gold) for i in dataset.items] == [("1", "B"), ("custom", "C"), ("4", "A")]
    assert dataset.items[1].options == {"A": "p", "B": "q", "C": "r"}


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", "not valid JSON"),
    ([1, 2], "expected a JSON object"),
    ({"options": ["a", "b"], "answer": 0}, "missing key 'question'"),
    ({"question": "", "options": ["a", "b"], "answer": 0}, "'question' must be a non-empty string"),
    ({"question": "Q", "options": "a,b", "answer": 0}, "key 'options' must be an object"),
    ({"question": "Q", "options": {"A": "a", "C": "c"}, "answer": "A"}, "must have the keys ['A', 'B']"),
    ({"question": "Q", "options": ["only"], "answer": 0}, "2 to 26 options"),
    ({"question": "Q", "options": ["a", ""], "answer": 0}, "option B must be a non-empty string"),
    ({"question": "Q", "options": ["a", "b"], "answer": 2}, "out of range"),
    ({"question": "Q", "options": ["a", "b"], "answer": "C"}, "not one of the option letters"),
    ({"question": "Q", "options": ["a", "b"], "answer": True}, "option letter or a 0-based index"),
    ({"question": "Q", "options": ["a", "b"], "answer": 0, "id": 1.5}, "key 'id'"),
])
def test_generic_jsonl_errors_name_file_and_line(tmp_path, bad_line, message):
    good = {"question": "Fine?", "options": ["a", "b"], "answer": 0}
    path = _write(tmp_path, [good, good, bad_line])
    with pytest.raises(DataFormatError) as caught:
        load_mc_jsonl(path)
    assert f"{path}, line 3" in str(caught.value)
    assert message in str(caught.value)


def test_generic_jsonl_rejects_repeated_ids_and_empty_files(tmp_path):
    row = {"question": "Q?", "options": ["a", "b"], "answer": 0, "id": "x"}
    with pytest.raises(DataFormatError, match=r"line 2: id 'x' repeats the id on line 1"):
        load_mc_jsonl(_write(tmp_path, [row, row]))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataFormatError, match="holds no questions"):
        load_mc_jsonl(empty)


def test_unknown_dataset_and_name_clash_are_reported(tmp_path):
    with pytest.raises(DataFormatError, match="neither a bundled test set"):
        load_qa_datasets(["pubmedqa", "nosuchset"])
    clash = _write(tmp_path, [{"question": "Q?", "options": ["a", "b"], "answer": 0}], name="medqa.jsonl")
    with pytest.raises(DataFormatError, match="both give the dataset name 'medqa'"):
        load_qa_datasets(["medqa", str(clash)])
