"""Training data for the QA benchmarks: PubMedQA's labelled non-test questions and MedQuAD, written in the exact prompt
FlowerTune's medical eval scores, with no question of a test set among them."""

from __future__ import annotations

import gzip
import json
from collections import Counter

from fedmedlora.data.instruct import BUNDLED_INSTRUCT, instruct_rows
from fedmedlora.data.qa_benchmarks import load_pubmedqa, load_pubmedqa_pool
from fedmedlora.data.qa_prompts import FLOWERTUNE_INSTRUCTIONS, PROTOCOLS
from fedmedlora_data import data_path


def _raw_pubmedqa() -> tuple[dict, dict]:
    with gzip.open(data_path("qa", "pubmedqa", "ori_pqal.json.gz"), "rt", encoding="utf-8") as fh:
        records = json.load(fh)
    return records, json.loads(data_path("qa", "pubmedqa", "test_ground_truth.json").read_text())


def _flowertune_pubmedqa_prompt(record: dict) -> str:
    """FlowerTune's PubMedQA prompt written out by hand from a raw record (not through our code)."""
    body = (FLOWERTUNE_INSTRUCTIONS["pubmedqa"] + "\n" + "\n".join(record["CONTEXTS"]) + "\n" + record["QUESTION"]
            + "\nThe answer is:\n")
    return "<|im_start|>question\n" + body + "<|im_end|>\n<|im_start|>answer\n"


def test_pool_is_the_500_labelled_questions_outside_the_test_split():
    records, test = _raw_pubmedqa()
    pool = load_pubmedqa_pool()
    ids = [item.id for item in pool.items]
    assert len(ids) == len(set(ids)) == 500
    assert not set(ids) & set(test)  # nothing the pubmedqa benchmark scores
    assert not set(ids) & {item.id for item in load_pubmedqa().items}
    assert set(ids) | set(test) == set(records)
    assert Counter(pool.items[i].options[pool.items[i].gold] for i in range(500)) == {"yes": 276, "no": 169,
                                                                                       "maybe": 55}
    assert all(item.options[item.gold] == records[item.id]["final_decision"] for item in pool.items)


def test_pool_rows_are_prompted_exactly_as_eval_prompts_a_test_question():
    records, test = _raw_pubmedqa()
    rows = instruct_rows(["pubmedqa_pool"])
    assert len(rows) == 500 and BUNDLED_INSTRUCT["pubmedqa_pool"] == "wrapper"
    for row in rows:
        pmid = row["uid"].split("/", 1)[1]
        assert pmid not in test
        assert row["prompt"] == _flowertune_pubmedqa_prompt(records[pmid])
        assert row["completion"] == records[pmid]["final_decision"] == row["answer"]
    # ... and eval's prompt for a test question has the same form, built by the same code.
    item = load_pubmedqa().items[0]
    assert PROTOCOLS["pubmedqa"].prompt(item) == _flowertune_pubmedqa_prompt(records[item.id])


def test_medquad_in_the_eval_wrapper_and_in_alpaca():
    wrapped = instruct_rows(["medquad_flowertune"])
    alpaca = instruct_rows(["medquad"])
    assert len(wrapped) == len(alpaca) > 16_000
    assert [r["completion"] for r in wrapped] == [r["completion"] for r in alpaca]
    first = wrapped[0]
    question = alpaca[0]["prompt"].split("### Instruction:\n", 1)[1].split("\n\n### Response:", 1)[0]
    assert first["prompt"] == f"<|im_start|>question\n{question}\n<|im_end|>\n<|im_start|>answer\n"
    assert alpaca[0]["prompt"].startswith("Below is an instruction")  # the existing format is unchanged
    assert BUNDLED_INSTRUCT == {"medquad": "alpaca", "medquad_flowertune": "wrapper", "pubmedqa_pool": "wrapper"}


def test_training_tokens_are_the_tokens_eval_scores(smollm2_folder):
    """On SmolLM2: a pool row's training prompt tokenizes to what eval feeds the model for that question, and its
    completion starts with the token loglik reads for the gold answer, then the end-of-sequence token."""
    from fedmedlora.data.qa_prompts import ANSWER_LEAD_IN
    from fedmedlora.model.loading import load_tokenizer
    from fedmedlora.qa.inference import continuation_token_ids
    from fedmedlora.settings import parse_run_config
    from fedmedlora.tasks import build_task

    tokenizer = load_tokenizer("builtin:smollm2-135m", "causal")
    settings = parse_run_config({"data.task": "instruct", "data.datasets": "pubmedqa_pool", "data.max-length": 1024,
                                 "model.name": "builtin:smollm2-135m"})
    task = build_task(settings, "causal", vocabulary=[])
    rows = instruct_rows(["pubmedqa_pool"])[:20]
    pool = {item.id: item for item in load_pubmedqa_pool().items}
    for row, (ids, mask) in zip(rows, (task.encode(r["prompt"], r["completion"], tokenizer) for r in rows)):
        item = pool[row["uid"].split("/", 1)[1]]
        prompt_tokens = ids[: mask.index(1)]
        assert prompt_tokens == tokenizer([PROTOCOLS["pubmedqa"].prompt(item)])["input_ids"][0]  # as eval batches it
        answer = ids[mask.index(1):]
        gold_word = item.options[item.gold]
        assert answer[0] == continuation_token_ids(tokenizer, ANSWER_LEAD_IN, gold_word)[0]
        assert answer == tokenizer(gold_word, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def test_label_skewed_sites_from_the_gold_answer():
    """`data.partition-by = "answer"`: Dirichlet sites whose answer mixes differ (a site that mostly reads "no" and one
    that mostly reads "yes"), every pool question on exactly one site."""
    from fedmedlora.data.sites import load_sites
    from fedmedlora.settings import parse_run_config

    settings = parse_run_config({"data.task": "instruct", "data.datasets": "pubmedqa_pool",
                                 "data.partitioning": "dirichlet", "data.partition-by": "answer",
                                 "data.dirichlet-alpha": 0.5, "data.num-sites": 3})
    sites = load_sites(settings)
    uids = [r["uid"] for s in sites for r in s.train + s.val + s.test]
    assert len(uids) == len(set(uids)) == 500
    majority = [Counter(r["answer"] for r in s.train).most_common(1)[0][0] for s in sites]
    assert {"yes", "no"} <= set(majority)
