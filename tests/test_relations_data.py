"""RE data: bundled corpora read to their published counts, users' files, malformed files, sites and statistics."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from fedmedlora.data.files import DataFormatError
from fedmedlora.data.rows import load_rows
from fedmedlora.data.relation_fields import NONE_LABEL, relation_labels
from fedmedlora.scoring.relations import normalize_concept
from fedmedlora.settings import parse_run_config
from fedmedlora.data.sites import load_sites, site_statistics

SPLITS = ("train", "val", "test")


def by_split(rows):
    return {split: [r for r in rows if r["split"] == split] for split in SPLITS}


def test_chemprot_counts_match_source_md():
    rows = by_split(load_rows("re", ["chemprot"]))
    assert [sum(len(r["relations"]) for r in rows[s]) for s in SPLITS] == [4169, 2427, 3469]
    assert [sum(len(r["pairs"]) for r in rows[s]) for s in SPLITS] == [4169, 2427, 3469]
    assert [len(rows[s]) for s in SPLITS] == [1653, 910, 1397]  # sentences (rows group a sentence's pairs)
    train_types = Counter(rel["type"] for r in rows["train"] for rel in r["relations"])
    assert train_types["INHIBITOR"] == 1642 and train_types["AGONIST-INHIBITOR"] == 4 and len(train_types) == 13
    assert "AGONIST-INHIBITOR" not in {rel["type"] for r in rows["val"] for rel in r["relations"]}


def test_bc5cdr_cid_counts_match_source_md():
    rows = by_split(load_rows("re", ["bc5cdr_cid"]))
    assert [len(rows[s]) for s in SPLITS] == [500, 500, 500]
    assert [sum(len(r["relations"]) for r in rows[s]) for s in SPLITS] == [1038, 1012, 1066]
    # every chemical x disease concept pair of a document; the CID ones are exactly the gold relations
    assert [sum(len(r["pairs"]) for r in rows[s]) for s in SPLITS] == [5432, 5261, 5405]
    assert [sum(p["label"] == "CID" for r in rows[s] for p in r["pairs"]) for s in SPLITS] == [1038, 1012, 1066]
    assert relation_labels(load_rows("re", ["bc5cdr_cid"])) == [NONE_LABEL, "CID"]


def test_rows_carry_what_sites_and_tasks_need():
    rows = load_rows("re", ["bc5cdr_cid", "chemprot"])
    assert len({r["uid"] for r in rows}) == len(rows)
    assert {r["source"] for r in rows} == {"bc5cdr_cid", "chemprot"}
    for r in rows:
        types = [rel["type"] for rel in r["relations"]]
        assert r["label"] == (Counter(types).most_common(1)[0][0] if types else NONE_LABEL)
        for p in r["pairs"]:
            head, tail = r["text"][p["head_start"]:p["head_end"]], r["text"][p["tail_start"]:p["tail_end"]]
            if r["format"] == "chemprot":  # markers removed, spans on the arguments
                assert (head, tail) == (p["head"], p["tail"]) and "<< " not in r["text"]
            else:  # the marked mentions name the pair's concepts
                aliases = {(a["alias"], a["name"]) for a in r["aliases"]}
                assert (normalize_concept(head), p["head"]) in aliases
                assert (normalize_concept(tail), p["tail"]) in aliases


def test_pubtator_concepts_get_one_name_each_and_a_sentence_pair_when_there_is_one():
    doc = [r for r in load_rows("re", ["bc5cdr_cid"]) if r["uid"].endswith("/227508")][0]
    assert doc["relations"] == [{"head": "alpha-methyldopa", "type": "CID", "tail": "hypotensive"}]
    names = {p["head"] for p in doc["pairs"]} | {p["tail"] for p in doc["pairs"]}
    assert names == {"Naloxone", "clonidine", "alpha-methyldopa", "hypertensive", "hypotensive"}
    pair = [p for p in doc["pairs"] if (p["head"], p["tail"]) == ("alpha-methyldopa", "hypotensive")][0]
    assert pair["label"] == "CID" and doc["text"][pair["tail_start"]:pair["head_end"]].count(". ") == 0
    # nalozone (-1: no id) is no concept; composite mentions name each of their concepts
    assert "nalozone" not in {a["alias"] for a in doc["aliases"]}


PUBTATOR = """\
111|t|Cocaine-induced seizures.
111|a|Seizures and arrhythmia followed cocaine use.
111\t0\t7\tCocaine\tChemical\tD003042
111\t16\t24\tseizures\tDisease\tD012640
111\t26\t34\tSeizures\tDisease\tD012640
111\t39\t49\tarrhythmia\tDisease\tD001145
111\t59\t66\tcocaine\tChemical\tD003042
111\tCID\tD003042\tD012640

222|t|Aspirin and ibuprofen and gastric ulcer.
222|a|
222\t0\t7\tAspirin\tChemical\tD001241
222\t12\t21\tibuprofen\tChemical\tD007052
222\t26\t39\tgastric ulcer\tDisease\tD013276
"""


def test_users_pubtator_file_is_read_with_its_stem_as_source(tmp_path):
    path = tmp_path / "hospital_a.pubtator.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(PUBTATOR)
    rows = load_rows("re", [str(path)])
    assert [r["source"] for r in rows] == ["hospital_a", "hospital_a"] and {r["split"] for r in rows} == {"all"}
    first, second = rows
    assert first["relations"] == [{"head": "Cocaine", "type": "CID", "tail": "seizures"}]
    assert sorted((p["head"], p["tail"], p["label"]) for p in first["pairs"]) == [
        ("Cocaine", "arrhythmia", "none"), ("Cocaine", "seizures", "CID")]
    assert second["label"] == NONE_LABEL and len(second["pairs"]) == 2 and second["relations"] == []
    assert "Chemical (head)" in first["hint"] and "Disease (tail)" in first["hint"]


def test_users_chemprot_style_jsonl_groups_pairs_by_sentence(tmp_path):
    path = tmp_path / "lab.jsonl"
    lines = [{"text": "<< aspirin >> inhibits [[ COX-1 ]] and COX-2.", "label": "INHIBITOR"},
             {"text": "<< aspirin >> inhibits COX-1 and [[ COX-2 ]].", "label": "INHIBITOR"},
             {"text": "[[ EGFR ]] is blocked by << gefitinib >>.", "label": "ANTAGONIST"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows = load_rows("re", [str(path)])
    assert [r["text"] for r in rows] == ["aspirin inhibits COX-1 and COX-2.", "EGFR is blocked by gefitinib."]
    assert [len(r["pairs"]) for r in rows] == [2, 1] and rows[0]["source"] == "lab"
    # the head is the << >> argument wherever it stands
    assert rows[1]["relations"] == [{"head": "gefitinib", "type": "ANTAGONIST", "tail": "EGFR"}]


@pytest.mark.parametrize("name,content,line,fragment", [
    ("bad.pubtator", "1|t|Aspirin hurts.\n1|a|x\n1\t0\t7\tAspirn\tChemical\tD1\n", 3, "differs from"),
    ("bad.pubtator", "1|t|Aspirin hurts.\n1|a|x\n1\t0\t99\tAspirin\tChemical\tD1\n", 3, "outside the document"),
    ("bad.pubtator", "1|t|Aspirin hurts.\n1|a|x\n1\t0\t7\tAspirin\tChemical\tD1\n1\tCID\tD1\tD9\n", 4,
     "no mention of"),
    ("bad.pubtator", "1|t|Aspirin hurts.\n1|a|x\n1\t0\t7\n", 3, "tab-separated fields"),
    ("bad.pubtator", "1|t|A.\n1|a|x\n2\t0\t1\tA\tChemical\tD1\n", 3, "inside document '1'"),
    ("bad.pubtator", "1\t0\t1\tA\tChemical\tD1\n", 1, "title line"),
    ("bad.txt", '{"text": "<< a >> b [[ c ]]", "label": "X"}\n{"text": "no markers", "label": "X"}\n', 2,
     "'<< ... >>'"),
    ("bad.jsonl", '{"text": "<< a >> b [[ c ]]", "label": "X"}\n{"text": "<< a >> [[ c ]]"\n', 2, "not valid JSON"),
    ("bad.jsonl", '{"text": "<< a >> b [[ c ]]"}\n', 1, "'label'"),
])
def test_malformed_files_name_file_and_line(tmp_path, name, content, line, fragment):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataFormatError) as info:
        load_rows("re", [str(path)])
    assert f"{path}:{line}" in str(info.value) and fragment in str(info.value)


def test_unknown_dataset_names_the_bundled_ones():
    with pytest.raises(DataFormatError, match="bc5cdr_cid, chemprot"):
        load_rows("re", ["chemprot_v2"])


def test_sites_natural_and_dirichlet_with_relation_statistics():
    natural = parse_run_config({"data.task": "re", "data.datasets": "bc5cdr_cid,chemprot",
                                "data.partitioning": "natural", "data.num-sites": 2})
    sites = load_sites(natural)
    assert sorted(s.name for s in sites) == ["bc5cdr_cid", "chemprot"]
    stats = {s["name"]: s for s in site_statistics(sites, "re")}
    total = {split: sum(sum(s[f"{split}-relations"].values()) for s in stats.values()) for split in SPLITS}
    assert sum(total.values()) == 1038 + 1012 + 1066 + 4169 + 2427 + 3469
    assert set(stats["bc5cdr_cid"]["train-relations"]) == {"CID"} and "CID" not in stats["chemprot"]["train-relations"]
    assert sum(stats["bc5cdr_cid"][f"{split}-candidate-pairs"] for split in SPLITS) == 5432 + 5261 + 5405

    skewed = load_sites(parse_run_config({"data.task": "re", "data.datasets": "chemprot",
                                          "data.partitioning": "dirichlet", "data.partition-by": "label",
                                          "data.dirichlet-alpha": 0.3, "data.num-sites": 3}))
    shares = [Counter(r["label"] for r in s.train + s.val + s.test) for s in skewed]
    inhibitor = [c["INHIBITOR"] / sum(c.values()) for c in shares]
    assert sum(sum(c.values()) for c in shares) == 1653 + 910 + 1397 and max(inhibitor) - min(inhibitor) > 0.1
