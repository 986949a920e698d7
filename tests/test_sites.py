"""Sites: partitioning through flwr-datasets, held-out splits, statistics, and clear data errors."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from fedmedlora.data.conll import read_conll
from fedmedlora.data.files import DataFormatError
from fedmedlora.data.rows import load_rows
from fedmedlora.settings import ConfigError, parse_run_config, with_overrides
from fedmedlora.data.sites import load_sites, site_statistics


def uids(rows):
    return [r["uid"] for r in rows]


def all_uids(site):
    return uids(site.train) + uids(site.val) + uids(site.test)


def test_bundled_ner_corpora_have_their_published_sizes():
    rows = load_rows("ner", ["ncbi_disease", "bc5cdr"])
    per_source = Counter(r["source"] for r in rows)
    assert per_source == {"ncbi_disease": 5432 + 923 + 940, "bc5cdr": 4560 + 4581 + 4797}


def test_iid_sites_are_disjoint_balanced_and_cover_the_pool():
    settings = parse_run_config({"data.partitioning": "iid", "data.num-sites": 3})
    sites = load_sites(settings)
    ids = [set(all_uids(s)) for s in sites]
    assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1:])
    assert sum(len(s) for s in ids) == 7295 + 13938
    sizes = [len(s) for s in ids]
    assert max(sizes) - min(sizes) <= 1
    # both corpora appear at every IID site in about their pooled proportion (7295 / 21233 = 0.34)
    for site in sites:
        share = site.sources["ncbi_disease"] / sum(site.sources.values())
        assert 0.30 < share < 0.39


def test_held_out_splits_follow_the_fractions_and_never_overlap():
    settings = parse_run_config({"data.val-fraction": 0.2, "data.test-fraction": 0.1})
    for site in load_sites(settings):
        n = len(all_uids(site))
        assert len(site.test) == round(0.1 * n) and len(site.val) == round(0.2 * n)
        assert not set(uids(site.train)) & (set(uids(site.val)) | set(uids(site.test)))


def test_partitioning_is_deterministic_and_seeded():
    a = load_sites(parse_run_config({"run.seed": 1}))
    b = load_sites(with_overrides(parse_run_config({"run.seed": 1}), {}))
    c = load_sites(parse_run_config({"run.seed": 2}))
    assert uids(a[0].test) == uids(b[0].test)
    assert uids(a[0].test) != uids(c[0].test)


def test_natural_sites_are_the_source_corpora():
    settings = parse_run_config({"data.partitioning": "natural", "data.num-sites": 2})
    sites = load_sites(settings)
    assert sorted(s.name for s in sites) == ["bc5cdr", "ncbi_disease"]
    for site in sites:
        assert set(site.sources) == {site.name}


def test_natural_partitioning_refuses_a_wrong_site_count():
    with pytest.raises(ConfigError, match=r"key 'data.num-sites' = 3: natural partitioning .* gives 2 sites"):
        load_sites(parse_run_config({"data.partitioning": "natural", "data.num-sites": 3}))


def test_dirichlet_over_a_column_skews_the_sites():
    settings = parse_run_config({"data.partitioning": "dirichlet", "data.partition-by": "label",
                                 "data.dirichlet-alpha": 0.3, "data.num-sites": 3})
    stats = site_statistics(load_sites(settings), "ner")
    chemical_share = [s["train-entities"].get("Chemical", 0) / sum(s["train-entities"].values()) for s in stats]
    assert max(chemical_share) - min(chemical_share) > 0.3  # IID sites differ by ~0.02


def test_dirichlet_on_a_missing_column_names_the_key():
    settings = parse_run_config({"data.partitioning": "dirichlet", "data.partition-by": "hospital"})
    with pytest.raises(ConfigError, match=r"key 'data.partition-by' = 'hospital': no such column"):
        load_sites(settings)


def test_caps_limit_training_and_evaluation_rows():
    settings = parse_run_config({"data.max-train-examples": 40, "data.max-eval-examples": 7})
    for site in load_sites(settings):
        assert (len(site.train), len(site.val), len(site.test)) == (40, 7, 7)


def test_site_statistics_count_entities_per_type():
    stats = site_statistics(load_sites(parse_run_config({})), "ner")
    assert [s["site"] for s in stats] == [0, 1, 2]
    assert set(stats[0]["train-entities"]) == {"Chemical", "Disease"}


def test_instruct_natural_sites_are_the_medquad_subsets():
    settings = parse_run_config({"data.task": "instruct", "data.datasets": "medquad", "data.partitioning": "natural",
                                 "data.num-sites": 9})
    sites = load_sites(settings)
    assert len(sites) == 9 and sum(len(all_uids(s)) for s in sites) == 16407
    assert sites[0].train[0]["prompt"].startswith("Below is an instruction")


def test_malformed_conll_names_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("Aspirin\tB-Chemical\ncauses\tO\nulcers\tB-Disease\tX-Bad\n")
    with pytest.raises(DataFormatError, match=r"bad.tsv:3: tag 'X-Bad' is not BIO"):
        read_conll(path)
    path.write_text("Aspirin\tB-Chemical\nlonely-token\n")
    with pytest.raises(DataFormatError, match=r"bad.tsv:2: expected 'token<TAB>tag'"):
        read_conll(path)


def test_users_conll_file_is_a_site_source(tmp_path):
    path = tmp_path / "hospital_a.tsv"
    path.write_text("Aspirin\tB-Chemical\ncauses\tO\nulcers\tB-Disease\n.\tO\n\nNo\tO\nentity\tO\n")
    rows = load_rows("ner", [str(path)])
    assert [r["source"] for r in rows] == ["hospital_a", "hospital_a"]
    assert rows[0]["label"] in {"Chemical", "Disease"} and rows[1]["label"] == "none"


def test_missing_user_file_is_named(tmp_path):
    with pytest.raises(DataFormatError, match=r"key 'data.datasets': file .*nope.tsv.* does not exist"):
        load_rows("ner", [str(tmp_path / "nope.tsv")])


def test_instruct_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "q?", "answer": "a."}) + "\n{not json\n")
    with pytest.raises(DataFormatError, match=r"qa.jsonl:2: not valid JSON"):
        load_rows("instruct", [str(path)])
    path.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(DataFormatError, match=r"qa.jsonl:1: expected fields prompt/completion"):
        load_rows("instruct", [str(path)])


def test_instruct_jsonl_layouts(tmp_path):
    path = tmp_path / "mixed.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps({"prompt": "P", "completion": "C"}) + "\n")
        fh.write(json.dumps({"instruction": "Explain", "input": "ctx", "output": "O"}) + "\n")
    rows = load_rows("instruct", [str(path)])
    assert rows[0]["prompt"] == "P" and "### Input:\nctx" in rows[1]["prompt"] and rows[1]["completion"] == "O"


def test_hub_instruct_dataset_rows_are_numbered(monkeypatch):
    """A Hugging Face dataset id (here served from memory: no hub on this machine) becomes prompt/completion rows."""
    import datasets

    from fedmedlora.data.instruct import _hub_instruct_rows

    table = datasets.Dataset.from_list([{"instruction": "Define fever.", "input": "", "output": "A raised temperature."},
                                        {"instruction": "What is a rash?", "input": "", "output": "A change of the skin."}])
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: table)
    rows = _hub_instruct_rows("org/flashcards")
    assert [r["uid"] for r in rows] == ["org/flashcards/0", "org/flashcards/1"]
    assert rows[1]["completion"] == "A change of the skin." and all(r["source"] == "org/flashcards" for r in rows)
