"""Bad data files and dataset names get a message naming the file, line or key, and what to write instead; IOB1
files are read as conlleval reads them, with the right entity counts."""

from __future__ import annotations

import gzip
import json

import pytest

from fedmedlora.data.conll import read_conll
from fedmedlora.data.entries import entry_problem, entry_problems
from fedmedlora.data.files import DataFormatError
from fedmedlora.data.rows import load_rows
from fedmedlora.data.sites import Site, site_statistics
from fedmedlora.scoring import bio_to_spans

PUBTATOR = "1|t|Aspirin and ulcers\n1|a|Ulcers.\n1\t0\t7\tAspirin\tChemical\tD1\n1\t12\t18\tulcers\tDisease\tD2\n" \
           "1\tCID\tD1\tD2\n"


def message(task: str, path) -> str:
    with pytest.raises(DataFormatError) as info:
        load_rows(task, [str(path)])
    return str(info.value)


# --- encodings and binary files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("task,name,good", [
    ("instruct", "qa.jsonl", json.dumps({"question": "q?", "answer": "a."}) + "\n"),
    ("re", "cdr.pubtator", PUBTATOR),
    ("ner", "site.tsv", "Aspirin\tB-Chemical\n.\tO\n\n"),
])
def test_text_that_is_not_utf8_names_file_line_and_column(tmp_path, task, name, good):
    path = tmp_path / name
    path.write_bytes(good.encode() + "caf\u00e9\tO\n".encode("latin-1"))
    lines = good.count("\n") + 1
    text = message(task, path)
    assert f"{path}:{lines}: not UTF-8 text (byte 0xe9 at column 4)" in text, text


def test_a_binary_file_is_called_binary(tmp_path):
    path = tmp_path / "scan.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert f"{path}: a binary file, not text" in message("instruct", path)


def test_utf16_text_is_told_apart_from_binary(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"prompt": "P", "completion": "C"}) + "\n", encoding="utf-16")
    assert f"{path}: UTF-16 text; save the file as UTF-8" in message("instruct", path)


def test_gzip_without_gz_suffix_and_a_broken_gz_file_are_named(tmp_path):
    plain = tmp_path / "site.tsv"
    plain.write_bytes(gzip.compress(b"Aspirin\tB-Chemical\n"))
    assert "name it site.tsv.gz" in message("ner", plain)
    broken = tmp_path / "site2.tsv.gz"
    broken.write_bytes(b"not gzip at all\n")
    assert f"{broken}: not a readable gzip file" in message("ner", broken)


def test_a_gzipped_file_in_another_encoding_is_not_called_binary(tmp_path):
    path = tmp_path / "site.tsv.gz"
    path.write_bytes(gzip.compress("caf\u00e9\tO\n".encode("latin-1")))
    assert f"{path}:1: not UTF-8 text (byte 0xe9 at column 4)" in message("ner", path)


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "P", "completion": "C"}).encode() + b"\n")
    assert load_rows("instruct", [str(path)])[0]["prompt"] == "P"


# --- tag schemes -------------------------------------------------------------------------------------------------

def test_iob1_is_decoded_as_conlleval_does_and_counted(tmp_path):
    # IOB1: I- opens an entity; B- only separates two adjacent entities of one type.
    path = tmp_path / "iob1.tsv"
    path.write_text("Aspirin\tI-Chemical\ncauses\tO\ngastric\tI-Disease\nulcers\tI-Disease\nand\tO\n"
                    "rash\tI-Disease\nfever\tB-Disease\n.\tO\n\nNo\tO\nentity\tO\n")
    original = ["I-Chemical", "O", "I-Disease", "I-Disease", "O", "I-Disease", "B-Disease", "O"]
    (tokens, tags), _ = read_conll(path)
    assert tags == ["B-Chemical", "O", "B-Disease", "I-Disease", "O", "B-Disease", "B-Disease", "O"]
    assert bio_to_spans(tags) == bio_to_spans(original)  # the entities scoring sees are unchanged
    rows = load_rows("ner", [str(path)])
    assert rows[0]["label"] == "Disease"  # what Dirichlet partitioning over labels splits on
    stats = site_statistics([Site(0, "site0", rows, [], [])], "ner")
    assert stats[0]["train-entities"] == {"Chemical": 1, "Disease": 3}  # sites.json showed 0 before


def test_bioes_is_refused_with_how_to_convert(tmp_path):
    path = tmp_path / "bioes.tsv"
    path.write_text("Aspirin\tS-Chemical\n.\tO\n")
    assert f"{path}:1: tag 'S-Chemical' is from the BIOES/BILOU scheme; convert the file to BIO" in message("ner", path)


def test_an_empty_file_is_named(tmp_path):
    for task, name in (("ner", "empty.tsv"), ("re", "empty.pubtator"), ("instruct", "empty.jsonl")):
        path = tmp_path / name
        path.write_text("\n\n")
        assert str(path) in message(task, path)


# --- dataset names -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task,typo,bundled,suggestion", [
    ("ner", "ncbi_disese", "ncbi_disease, bc5cdr", "ncbi_disease"),
    ("re", "chemprot_v2", "bc5cdr_cid, chemprot", "chemprot"),
    ("instruct", "medqad", "medquad, medquad_flowertune, pubmedqa_pool", "medquad"),
])
def test_a_misspelt_bundled_name_lists_the_bundled_names_for_every_task(task, typo, bundled, suggestion):
    problem = entry_problem(task, typo)
    kind = {"ner": "NER", "re": "RE", "instruct": "instruct"}[task]
    assert f"'{typo}' is neither a bundled {kind} dataset ({bundled})" in problem
    assert f"did you mean '{suggestion}'?" in problem


@pytest.mark.parametrize("task,name,kind", [
    ("instruct", "ncbi_disease", "NER"),
    ("ner", "chemprot", "relation-extraction"),
    ("re", "medquad", "instruction-tuning"),
])
def test_a_bundled_dataset_of_another_task_says_so(task, name, kind):
    problem = entry_problem(task, name)
    assert f"'{name}' is a bundled {kind} dataset, but data.task = '{task}'" in problem
    assert "does not exist" not in problem


def test_a_folder_and_a_file_of_another_format_are_explained(tmp_path):
    assert "is a folder; name a file" in entry_problem("ner", str(tmp_path))
    conll = tmp_path / "site.tsv"
    conll.write_text("Aspirin\tB-Chemical\n")
    [problem] = entry_problems("instruct", str(conll))
    assert f"{conll}:1: not valid JSON" in problem and "is data.task = 'ner' meant?" in problem


def test_good_entries_have_no_problem(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"prompt": "P", "completion": "C"}) + "\n")
    assert entry_problems("instruct", str(path)) == [] and entry_problem("ner", "bc5cdr") is None
    assert entry_problem("instruct", "org/flashcards") is None  # a hub id: loaded (and named on failure) by the reader
