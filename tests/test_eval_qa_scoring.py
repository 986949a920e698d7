"""Scoring with controlled models: a real (tiny) Llama whose next-token logits are overwritten by a script, so
`generate` and the forward pass run exactly as for any checkpoint while the answers are known in advance.

Expected accuracies are counted from the raw data files, not from the code under test.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from typing import Callable

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fedmedlora.data.qa_benchmarks import load_qa_dataset
from fedmedlora.data.qa_prompts import FLOWERTUNE_INSTRUCTIONS
from fedmedlora.qa.scoring import evaluate_qa_dataset
from fedmedlora.model.loading import load_tokenizer
from fedmedlora_data import data_path


class ScriptedLlama(LlamaForCausalLM):
    """Answers `script(prompt text)` token by token, then end-of-sequence. The prompt is read from the first
    (prefill) call of each generation with its left padding removed, as the model itself sees it."""

    script: Callable[[str], str]
    tokenizer = None

    def forward(self, input_ids=None, attention_mask=None, logits_to_keep=0, **kwargs):
        # transformers < 5.24 hands the cache over as `past_key_values`, 5.24+ as `cache`: read whichever came
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        fresh = cache is None or cache.get_seq_length() == 0
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep,
                              **kwargs)
        if fresh:
            if attention_mask is None:  # generate leaves it out when nothing is padded
                attention_mask = torch.ones_like(input_ids)
            prompts = [self.tokenizer.decode(row[mask.bool()], skip_special_tokens=True)
                       for row, mask in zip(input_ids, attention_mask)]
            self._answers = [self.tokenizer(self.script(p), add_special_tokens=False)["input_ids"] for p in prompts]
            self._step = 0
        else:
            self._step += 1
        forced = torch.full_like(out.logits[:, -1, :], -1e4)
        for row, answer in enumerate(self._answers):
            forced[row, answer[self._step] if self._step < len(answer) else self.config.eos_token_id] = 1e4
        out.logits[:, -1, :] = forced
        return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: threads gain nothing, and on a busy shared CPU their hand-offs cost 5x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("builtin:tiny-llama-micro", "causal")


def scripted_model(tokenizer, script: Callable[[str], str]) -> ScriptedLlama:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = ScriptedLlama(config).eval()
    model.script = script
    model.tokenizer = tokenizer
    return model


# --- independent ground truth -----------------------------------------------------------------------------------

def raw_medqa_golds() -> list[str]:
    with gzip.open(data_path("qa", "medqa", "test.jsonl.gz"), "rt") as fh:
        return [json.loads(line)["answer_idx"] for line in fh]


def raw_pubmedqa_golds() -> list[str]:
    return list(json.loads(data_path("qa", "pubmedqa", "test_ground_truth.json").read_text()).values())


def gold_by_prompt(name: str) -> dict[str, str]:
    """Prompt text (FlowerTune layout, written out here) -> the answer a perfect model writes."""
    table = {}
    for item in load_qa_dataset(name).items:
        if name == "pubmedqa":
            block, answer = f"{item.context}\n{item.question}", item.options[item.gold]
        else:
            question = item.question if item.question.endswith(("?", ".")) else item.question + "?"
            listed = "\n".join(f"{letter}. {text}" for letter, text in item.options.items())
            block, answer = f"Question: {question}\n\nOptions:\n{listed}", item.gold
        prompt = (f"<|im_start|>question\n{FLOWERTUNE_INSTRUCTIONS[name]}\n{block}\nThe answer is:\n<|im_end|>\n"
                  "<|im_start|>answer\n")
        table[prompt] = answer
    return table


def run(model, tokenizer, name, mode="generate", limit=None, batch_size=16):
    records = []
    result = evaluate_qa_dataset(model, tokenizer, load_qa_dataset(name).limited(limit), mode=mode,
                                 batch_size=batch_size, on_records=records.extend, progress=False)
    return result, sorted(records, key=lambda r: r["index"])


# --- tests ------------------------------------------------------------------------------------------------------

def test_always_a_on_medqa_scores_the_share_of_a_answers(tokenizer):
    golds = raw_medqa_golds()
    result, records = run(scripted_model(tokenizer, lambda prompt: "A"), tokenizer, "medqa")
    assert (result.correct, result.total) == (golds.count("A"), len(golds)) == (353, 1273)
    assert result.unparseable == 0
    assert result.predicted == Counter({"A": 1273})
    assert result.gold == Counter(golds)
    assert [r["generation"] for r in records[:3]] == ["A", "A", "A"]
    assert all(r["max_new_tokens"] == 1 for r in records)  # one token: as long as the gold letter


def test_gold_oracle_on_medqa_is_perfect_and_proves_the_prompt_layout(tokenizer):
    table = gold_by_prompt("medqa")  # a prompt laid out differently raises KeyError here
    result, records = run(scripted_model(tokenizer, table.__getitem__), tokenizer, "medqa")
    assert (result.correct, result.total, result.unparseable) == (1273, 1273, 0)
    assert all(r["prediction"] == r["gold"] for r in records)


def test_medmcqa_always_a_and_oracle_on_a_prefix(tokenizer):
    raw = json.load(gzip.open(data_path("qa", "medmcqa", "medmcqa_val.json.gz"), "rt"))[:400]
    result, _ = run(scripted_model(tokenizer, lambda prompt: "A"), tokenizer, "medmcqa", limit=400)
    assert result.correct == sum(row["data"]["cop"] == "0" for row in raw)
    table = gold_by_prompt("medmcqa")
    result, _ = run(scripted_model(tokenizer, table.__getitem__), tokenizer, "medmcqa", limit=400)
    assert result.correct == 400


def test_careqa_always_a_and_oracle_on_a_prefix(tokenizer):
    raw = list(json.load(gzip.open(data_path("qa", "careqa", "careqa_test.json.gz"), "rt")).values())[:400]
    result, records = run(scripted_model(tokenizer, lambda prompt: "A"), tokenizer, "careqa", limit=400)
    assert result.correct == sum(row["correct_answer"] == "A" for row in raw) and result.unparseable == 0
    table = gold_by_prompt("careqa")
    result, _ = run(scripted_model(tokenizer, table.__getitem__), tokenizer, "careqa", limit=400)
    assert result.correct == 400


def test_pubmedqa_answers_are_words_and_a_letter_is_unparseable(tokenizer):
    golds = raw_pubmedqa_golds()
    result, _ = run(scripted_model(tokenizer, lambda prompt: "yes"), tokenizer, "pubmedqa")
    assert (result.correct, result.total, result.unparseable) == (golds.count("yes"), 500, 0) == (276, 500, 0)
    result, _ = run(scripted_model(tokenizer, lambda prompt: "A"), tokenizer, "pubmedqa")
    assert (result.correct, result.unparseable) == (0, 500)


def test_pubmedqa_token_budget_is_the_first_gold_of_each_chunk(tokenizer):
    """FlowerTune lets a chunk of `batch_size` questions generate as many tokens as the chunk's *first* gold answer
    has. On this tokenizer "yes"/"no" are 2 tokens and "maybe" 4, so a "maybe" in a chunk that starts with "no" is
    cut to "may" and scores as unparseable; a perfect model loses exactly those."""
    golds = raw_pubmedqa_golds()
    size = {word: len(tokenizer(word, add_special_tokens=False)["input_ids"]) for word in ("yes", "no", "maybe")}
    assert size["maybe"] > size["no"]
    batch = 16
    survives = [size[gold] <= size[golds[start - start % batch]] for start, gold in enumerate(golds)]
    table = gold_by_prompt("pubmedqa")
    result, records = run(scripted_model(tokenizer, table.__getitem__), tokenizer, "pubmedqa", batch_size=batch)
    assert result.correct == sum(survives) < 500
    assert result.unparseable == 500 - sum(survives)
    assert [r["correct"] for r in records] == survives


def test_loop_and_batched_generation_give_the_same_records(tokenizer):
    table = gold_by_prompt("medqa")
    model = scripted_model(tokenizer, lambda p: table[p] if hash(p) % 3 else "B")
    _, batched = run(model, tokenizer, "medqa", limit=40, batch_size=8)
    _, looped = run(model, tokenizer, "medqa", mode="generate-loop", limit=40, batch_size=8)
    assert batched == looped


def test_loglik_picks_the_most_probable_answer_token(tokenizer):
    table = gold_by_prompt("pubmedqa")
    result, records = run(scripted_model(tokenizer, table.__getitem__), tokenizer, "pubmedqa", mode="loglik",
                          batch_size=32)
    assert (result.correct, result.total, result.unparseable) == (500, 500, 0)
    assert set(records[0]["option_logprobs"]) == {"A", "B", "C"}
    golds = raw_medqa_golds()[:300]
    result, _ = run(scripted_model(tokenizer, lambda p: "A"), tokenizer, "medqa", mode="loglik", limit=300)
    assert result.correct == golds.count("A")


def test_records_hold_prompt_gold_prediction_and_raw_generation(tokenizer):
    _, records = run(scripted_model(tokenizer, lambda p: "C) because"), tokenizer, "medqa", limit=3)
    first = records[0]
    assert first["prompt"].startswith("<|im_start|>question\n") and first["prompt"].endswith("<|im_start|>answer\n")
    assert first["generation"] == "C"  # cut at one new token, as long as the gold letter
    assert (first["extracted"], first["prediction"]) == ("c", "C")
    assert first["correct"] == (first["gold"] == "C")
    assert {"index", "id", "gold", "gold_answer", "max_new_tokens"} <= set(first)
