"""RE tasks: the encoder's marked and windowed inputs, the generative prompt and the parsing of its answers, one
metric for both families, routing and the adapter, and tiny federations of each family."""

from __future__ import annotations

import gzip
import json

import pytest

from fedmedlora.data.rows import load_rows
from fedmedlora.data.relation_fields import relation_labels
from fedmedlora.recorder import read_metrics
from fedmedlora.scoring.output_format import format_relations
from fedmedlora.settings import ConfigError, parse_run_config
from fedmedlora.tasks import build_task
from fedmedlora.tasks.generative_re import GenerativeRelationOutcome, GenerativeRETask, completion_relations
from fedmedlora.tasks.relation_classification import RelationClassificationTask, RelationOutcome, gold_relations

from fedmedlora_data import data_path

RE_ENCODER = {"data.task": "re", "data.datasets": "chemprot"}
RE_CAUSAL = {"data.task": "re", "data.datasets": "bc5cdr_cid", "model.name": "builtin:tiny-llama-micro",
             "lora.target-modules": "q_proj,v_proj"}


@pytest.fixture(scope="module")
def encoder_tokenizer():
    from fedmedlora.model.loading import load_tokenizer

    return load_tokenizer("builtin:minilm-l6", "encoder")


def encoder_task(labels, **overrides):
    return RelationClassificationTask(parse_run_config({**RE_ENCODER, **overrides}), labels)


def doc(uid_suffix):
    return [r for r in load_rows("re", ["bc5cdr_cid"]) if r["uid"].endswith(uid_suffix)][0]


# --- encoder inputs ---------------------------------------------------------------------------------------------


def test_chemprot_pairs_are_fed_exactly_as_scibert_marks_them(encoder_tokenizer):
    rows = [r for r in load_rows("re", ["chemprot"]) if r["split"] == "train"][:3]
    with gzip.open(data_path("re", "chemprot", "train.txt.gz"), "rt") as fh:
        originals = [json.loads(next(fh)) for _ in range(sum(len(r["pairs"]) for r in rows))]
    task = encoder_task(relation_labels(load_rows("re", ["chemprot"])))
    dataset = task.tokenize(rows, encoder_tokenizer)
    assert len(dataset) == len(originals)
    for k, original in enumerate(originals):
        assert dataset[k]["input_ids"] == encoder_tokenizer(original["text"])["input_ids"]
        assert task.labels[dataset[k]["labels"]] == original["label"]
    assert dataset["row"][:3] == [0, 0, 0] and dataset["pair"][:3] == [0, 1, 2]


def squeeze(text):
    return "".join(text.lower().split())


def marked_words(tokenizer, ids):
    """The text between << >> and between [[ ]] in a decoded input, without spaces (decoding adds some)."""
    text = tokenizer.decode(ids)
    head = text.split("< <", 1)[1].split("> >", 1)[0]
    tail = text.split("[ [", 1)[1].split("] ]", 1)[0]
    return squeeze(head), squeeze(tail), text


def test_long_documents_keep_a_window_around_the_marked_pair(encoder_tokenizer):
    filler = "the patients were followed for several weeks . " * 40
    text = filler + "aspirin caused a gastric ulcer in two patients . " + filler
    start = text.index("aspirin")
    pair = {"head": "aspirin", "tail": "gastric ulcer", "label": "CID", "head_start": start, "head_end": start + 7,
            "tail_start": text.index("gastric"), "tail_end": text.index("gastric") + 13}
    row = {"text": text, "pairs": [pair], "relations": []}
    ids = encoder_task(["none", "CID"], **{"data.max-length": 48}).tokenize([row], encoder_tokenizer)["input_ids"][0]
    head, tail, decoded = marked_words(encoder_tokenizer, ids)
    assert len(ids) == 48 and (head, tail) == ("aspirin", "gastriculcer") and decoded.count("[SEP]") == 1
    # arguments further apart than one window: one window around each, as a text pair
    far = filler + "aspirin was given . " + filler + filler + "a gastric ulcer followed . " + filler
    pair = {**pair, "head_start": far.index("aspirin"), "head_end": far.index("aspirin") + 7,
            "tail_start": far.index("gastric"), "tail_end": far.index("gastric") + 13}
    ids = encoder_task(["none", "CID"], **{"data.max-length": 48}).tokenize(
        [{"text": far, "pairs": [pair], "relations": []}], encoder_tokenizer)["input_ids"][0]
    head, tail, decoded = marked_words(encoder_tokenizer, ids)
    assert len(ids) <= 48 and (head, tail) == ("aspirin", "gastriculcer") and decoded.count("[SEP]") == 2


def test_bc5cdr_candidates_are_marked_on_their_concepts(encoder_tokenizer):
    row = doc("/227508")
    dataset = encoder_task(["none", "CID"], **{"data.datasets": "bc5cdr_cid"}).tokenize([row], encoder_tokenizer)
    assert len(dataset) == len(row["pairs"]) == 6  # 3 chemicals x 2 diseases
    for ids, j, label in zip(dataset["input_ids"], dataset["pair"], dataset["labels"]):
        head, tail, _ = marked_words(encoder_tokenizer, ids)
        pair = row["pairs"][j]
        assert (head, tail) == (squeeze(pair["head"]), squeeze(pair["tail"]))
        assert label == (1 if pair["label"] == "CID" else 0)


# --- generative prompt and answers --------------------------------------------------------------------------------


def causal_task(**overrides):
    settings = parse_run_config({**RE_CAUSAL, **overrides})
    return GenerativeRETask(settings, relation_labels(load_rows("re", [settings.datasets[0]])))


def test_prompt_keeps_the_instructions_and_cuts_long_text_at_its_end():
    from fedmedlora.model.loading import load_tokenizer

    tokenizer = load_tokenizer("builtin:tiny-llama-micro", "causal")
    task = causal_task(**{"data.max-length": 320})
    row = doc("/227508")
    dataset = task.tokenize([row], tokenizer)
    ids, mask = dataset["input_ids"][0], dataset["completion_mask"][0]
    prompt = tokenizer.decode(ids[: mask.index(1)], skip_special_tokens=True)
    assert len(ids) <= 320 and prompt.startswith("Below is an instruction")
    assert "'<head> | <relation type> | <tail>'" in prompt and "from a Chemical (head) to a Disease (tail)" in prompt
    assert "Naloxone reverses" in prompt and "sympathetic tone" not in prompt  # the abstract's end is cut
    assert tokenizer.decode(ids[mask.index(1):], skip_special_tokens=True) == "alpha-methyldopa | CID | hypotensive"
    with pytest.raises(ConfigError, match="data.max-length"):
        causal_task(**{"data.max-length": 128}).tokenize([row], tokenizer)


def test_answers_are_parsed_and_unparseable_ones_counted():
    task = causal_task()
    row = doc("/227508")
    answers = ["alpha-methyldopa | CID | Hypotensive",  # any case: the gold concepts
               "methyldopa | CID | hypotensive effect",  # shares words only: lenient
               "The drug lowers blood pressure.",  # no line of the format
               "none"]
    outcome = task.read_answers([row] * 4, answers, GenerativeRelationOutcome())
    metrics = task.score(outcome)
    assert outcome.unparseable == 1 and metrics["unparseable"] == 1.0
    assert (metrics["strict-tp"], metrics["strict-fp"], metrics["strict-fn"]) == (1.0, 1.0, 3.0)
    assert (metrics["lenient-tp"], metrics["lenient-fp"]) == (2.0, 0.0)
    assert outcome.generations == answers


def test_a_mention_shared_by_two_concepts_stands_for_the_gold_one(tmp_path):
    path = tmp_path / "composite.pubtator"
    path.write_text("9|t|Cyclophosphamide and hemorrhagic cystitis.\n9|a|\n"
                    "9\t0\t16\tCyclophosphamide\tChemical\tD003520\n"
                    "9\t21\t41\themorrhagic cystitis\tDisease\tD006470|D003556\themorrhagic|cystitis\n"
                    "9\tCID\tD003520\tD003556\n")
    row = load_rows("re", [str(path)])[0]
    assert row["relations"] == [{"head": "Cyclophosphamide", "type": "CID", "tail": "cystitis"}]
    outcome = causal_task().read_answers([row], ["cyclophosphamide | CID | hemorrhagic cystitis"],
                                         GenerativeRelationOutcome())
    assert GenerativeRETask.score(outcome)["strict-f1"] == 1.0


@pytest.mark.parametrize("dataset", ["bc5cdr_cid", "chemprot"])
def test_both_families_share_the_metric(dataset):
    """Perfect predictions score 1 in both families, and the same mistakes score the same."""
    rows = [r for r in load_rows("re", [dataset]) if r["split"] == "test"][:40]
    generative = causal_task(**{"data.datasets": dataset})
    answers = [format_relations(completion_relations(r)) for r in rows]
    gen = GenerativeRETask.score(generative.read_answers(rows, answers, GenerativeRelationOutcome()))
    from fedmedlora.scoring.relations import Relation

    enc = RelationClassificationTask.score(RelationOutcome(
        gold=[gold_relations(r) for r in rows],
        pred=[[Relation(p["head"], p["tail"], p["label"]) for p in r["pairs"] if p["label"] != "none"]
              for r in rows]))
    assert gen["typed-strict-micro-f1"] == enc["typed-strict-micro-f1"] == 1.0 and gen["unparseable"] == 0
    # drop every other unit's answer in both families: identical counts
    gen = GenerativeRETask.score(generative.read_answers(
        rows, [a if i % 2 else "none" for i, a in enumerate(answers)], GenerativeRelationOutcome()))
    enc = RelationClassificationTask.score(RelationOutcome(
        gold=[gold_relations(r) for r in rows],
        pred=[[Relation(p["head"], p["tail"], p["label"]) for p in r["pairs"] if p["label"] != "none" and i % 2]
              for i, r in enumerate(rows)]))
    keys = ["typed-strict-micro-tp", "typed-strict-micro-fn", "typed-strict-micro-f1", "strict-f1", "lenient-f1"]
    assert {k: gen[k] for k in keys} == {k: enc[k] for k in keys} and gen["typed-strict-micro-f1"] < 1.0


# --- routing and the adapter ----------------------------------------------------------------------------------------


def test_build_task_routes_re_by_family():
    encoder = build_task(parse_run_config(RE_ENCODER), "encoder")
    assert isinstance(encoder, RelationClassificationTask) and len(encoder.labels) == 13  # positives only
    assert encoder.primary_metric == "typed-strict-micro-f1"
    causal = build_task(parse_run_config(RE_CAUSAL), "causal", vocabulary=["none", "CID"])
    assert isinstance(causal, GenerativeRETask) and causal.relation_types == ["CID"] and causal.labels == []


def test_server_initial_adapter_fits_the_clients_sequence_classifier():
    from peft import TaskType

    from fedmedlora.model.adapter import adapter_state, initial_adapter_state, load_adapter_state, lora_config
    from fedmedlora.model.resident import resident_model

    settings = parse_run_config({**RE_ENCODER, "data.datasets": "bc5cdr_cid"})
    assert lora_config(settings, "sequence").task_type == TaskType.SEQ_CLS
    initial = initial_adapter_state(settings, "sequence", 2, seed=0)
    resident = resident_model(settings, "sequence", ["none", "CID"])
    assert type(resident.model.get_base_model()).__name__ == "BertForSequenceClassification"
    load_adapter_state(resident.model, initial)
    heads = [k for k in initial if "classifier" in k]
    assert heads and all(initial[k].shape[0] == 2 for k in heads)
    assert set(adapter_state(resident.model)) == set(initial)


# --- tiny federations --------------------------------------------------------------------------------------------

TINY_RE_ENCODER = {
    "num-server-rounds": 2, "data.task": "re", "data.datasets": "bc5cdr_cid,chemprot",
    "data.partitioning": "natural", "data.num-sites": 2, "data.max-train-examples": 12, "data.max-eval-examples": 4,
    "train.local-steps": 2, "train.batch-size": 8, "train.learning-rate-max": 3e-3,
    "train.learning-rate-min": 3e-3,
}
TINY_RE_CAUSAL = {
    **RE_CAUSAL, "num-server-rounds": 2, "data.partitioning": "iid", "data.num-sites": 2, "data.max-length": 320,
    "data.max-train-examples": 8, "data.max-eval-examples": 2, "train.local-steps": 2, "train.batch-size": 4,
    "train.learning-rate-max": 3e-3, "train.learning-rate-min": 3e-3, "evaluate.batch-size": 4,
}


def check_run(run_dir, relation_key):
    records = read_metrics(run_dir)
    assert [r["round"] for r in records] == [0, 1, 2]
    f1 = [r["server-eval"]["pooled"]["typed-strict-micro-f1"] for r in records]
    assert all(0.0 <= x <= 1.0 for x in f1)
    for r in records:
        assert set(r["server-eval"]["sites"]) == {"0", "1"}
        assert {"strict-f1", "lenient-f1", "typed-strict-macro-f1"} <= set(r["server-eval"]["pooled"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["primary-metric"] == "typed-strict-micro-f1"
    assert summary["typed-strict-micro-f1-per-round"] == pytest.approx(f1)
    sites = json.loads((run_dir / "sites.json").read_text())
    assert all(sum(s["train-relations"].values()) > 0 for s in sites) and relation_key(sites)
    # honest sites: what each claims as its weight is what it reported before round 1, in the task's own unit
    assert all(not r.get("clips") and not r.get("clipped") for r in records), [r.get("clipped") for r in records]
    return records


@pytest.mark.slow
def test_encoder_federation_over_two_natural_sites(tmp_path):
    from fedmedlora.launch.grid import run_in_process

    run_in_process({**TINY_RE_ENCODER, "run.results-dir": str(tmp_path), "run.name": "re-enc"})
    records = check_run(tmp_path / "re-enc", lambda sites: {"CID"} == set(sites[0]["train-relations"]))
    assert all(len(r["clients"]) == 2 for r in records[1:])
    # the classifier trains on candidate pairs, more than the site's documents: that is the weight each claims
    sites = json.loads((tmp_path / "re-enc" / "sites.json").read_text())
    pairs = {s["site"]: s["train-candidate-pairs"] for s in sites}
    assert all(pairs[s] > s_["train-examples"] for s, s_ in zip(pairs, sites))
    for r in records[1:]:
        assert {c["site"]: c["num-examples"] for c in r["clients"]} == pairs


@pytest.mark.slow
def test_generative_federation_counts_unparseable_answers(tmp_path):
    from fedmedlora.launch.grid import run_in_process

    run_in_process({**TINY_RE_CAUSAL, "run.results-dir": str(tmp_path), "run.name": "re-gen"})
    records = check_run(tmp_path / "re-gen", lambda sites: all(set(s["train-relations"]) == {"CID"} for s in sites))
    for r in records:
        pooled = r["server-eval"]["pooled"]
        assert 0 <= pooled["unparseable"] <= pooled["examples"] == 4
