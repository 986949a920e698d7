"""--mode generate+loglik: when every answer is one token, one forward pass per batch gives the records `generate`
(real `model.generate`) and `loglik` give, record for record, unparseable answers included; otherwise (longer answers,
a generation config that changes greedy picks) the two modes run one after the other."""

from __future__ import annotations

import json
import zlib

import pytest
import torch
from transformers import AutoModelForCausalLM

from fedmedlora.evaluation import cli
from fedmedlora.data.qa_benchmarks import load_qa_dataset
from fedmedlora.qa.inference import one_pass_is_exact
from fedmedlora.qa.scoring import evaluate_qa_dataset, evaluate_qa_dataset_modes
from fedmedlora.model.loading import load_tokenizer, resolve_model_source

from test_eval_qa_scoring import gold_by_prompt, scripted_model

MICRO = "builtin:tiny-llama-micro"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MICRO, "causal")


@pytest.fixture(scope="module")
def sharp_model():
    """tiny-llama-micro with its matrices scaled up: its greedy picks vary from prompt to prompt (letters, words,
    punctuation), so both parseable and unparseable answers occur."""
    model = AutoModelForCausalLM.from_pretrained(resolve_model_source(MICRO)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.mul_(6.0)
    return model


class ForwardCounter:
    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self.count)

    def count(self, module, args):
        self.calls += 1


def both_ways(model, tokenizer, dataset, batch_size=8):
    """(records of the one-pass run, records of the two real modes run separately, forward calls of each)."""
    fused = {"generate": [], "loglik": []}
    counter = ForwardCounter(model)
    try:
        results = evaluate_qa_dataset_modes(model, tokenizer, dataset, ["generate", "loglik"], batch_size=batch_size,
                                            on_records={m: fused[m].extend for m in fused}, progress=False)
        fused_calls, counter.calls = counter.calls, 0
        separate = {mode: [] for mode in fused}
        for mode in separate:
            evaluate_qa_dataset(model, tokenizer, dataset, mode=mode, batch_size=batch_size,
                                on_records=separate[mode].extend, progress=False)
        separate_calls = counter.calls
    finally:
        counter.handle.remove()
    return results, fused, separate, fused_calls, separate_calls


@pytest.mark.parametrize("name", ["medmcqa", "medqa", "careqa"])
def test_one_pass_gives_the_records_of_generate_and_of_loglik(sharp_model, tokenizer, name):
    dataset = load_qa_dataset(name).sample(24, seed=3)
    results, fused, separate, fused_calls, separate_calls = both_ways(sharp_model, tokenizer, dataset)
    assert fused == separate  # same records, same order, every field (generation, extracted, prediction, ...)
    assert (fused_calls, separate_calls) == (3, 6)  # 24 prompts in batches of 8: one forward each, not two
    generations = [r["generation"] for r in fused["generate"]]
    assert any(r["prediction"] is None for r in fused["generate"]), "no unparseable answer: a weak check"
    assert len(set(generations)) >= 3, generations
    assert all(result.shared_pass for result in results.values())
    assert results["generate"].summary()["unparseable"] == sum(r["prediction"] is None for r in separate["generate"])


def test_scripted_answers_parse_the_same_in_one_pass(tokenizer):
    """Known answers: gold letters, wrong letters, words whose first letter is no option, and an immediate
    end-of-sequence (an empty generation)."""
    table = gold_by_prompt("medqa")

    def script(prompt: str) -> str:
        kind = zlib.crc32(prompt.encode()) % 5  # fixed across runs (str hashes are salted per process)
        return [table[prompt], "B", "The answer", "", "E"][kind]

    dataset = load_qa_dataset("medqa").limited(40)
    _, fused, separate, fused_calls, separate_calls = both_ways(scripted_model(tokenizer, script), tokenizer,
                                                                 dataset)
    assert fused == separate and fused_calls * 2 == separate_calls
    generations = {r["generation"] for r in fused["generate"]}
    assert "" in generations and "The" in generations and "E" in generations
    assert {r["prediction"] for r in fused["generate"]} >= {None, "B"}


def test_longer_answers_or_a_greedy_changing_generation_config_run_both_modes(sharp_model, tokenizer):
    pubmedqa = load_qa_dataset("pubmedqa").sample(9, seed=1)  # "yes" is two tokens on this tokenizer
    assert len(tokenizer("yes", add_special_tokens=False)["input_ids"]) == 2
    results, fused, separate, fused_calls, separate_calls = both_ways(sharp_model, tokenizer, pubmedqa, batch_size=4)
    assert fused == separate and fused_calls == separate_calls
    assert not any(result.shared_pass for result in results.values())

    assert one_pass_is_exact(sharp_model, [1, 1]) is None
    sharp_model.generation_config.repetition_penalty = 1.3
    try:
        assert "repetition_penalty" in one_pass_is_exact(sharp_model, [1, 1])
        results, fused, separate, _, _ = both_ways(sharp_model, tokenizer, load_qa_dataset("medqa").limited(8))
        assert fused == separate and not results["generate"].shared_pass
    finally:
        sharp_model.generation_config.repetition_penalty = 1.0


def test_the_cli_writes_one_complete_folder_per_mode(tmp_path, capsys):
    def run(mode, out):
        assert cli.main(["--base-model-name-path", MICRO, "--quantization", "0", "--device", "cpu", "--no-progress",
                         "--datasets", "medqa,careqa", "--limit", "6", "--mode", mode, "--output-dir", str(out)]) == 0

    run("generate+loglik", tmp_path / "both")
    assert "medqa [generate]: Accuracy:" in capsys.readouterr().out
    for mode in ("generate", "loglik"):
        run(mode, tmp_path / mode)
        both = json.loads((tmp_path / "both" / mode / "summary.json").read_text())
        alone = json.loads((tmp_path / mode / "summary.json").read_text())
        assert both["mode"] == mode and both["requested_mode"] == "generate+loglik"
        for name in ("medqa", "careqa"):
            assert both["datasets"][name]["accuracy"] == alone["datasets"][name]["accuracy"]
            assert both["datasets"][name]["shared_pass"] is True
            assert (tmp_path / "both" / mode / f"generation_{name}_fl.jsonl").read_text() == \
                (tmp_path / mode / f"generation_{name}_fl.jsonl").read_text()
            assert (tmp_path / "both" / mode / f"acc_{name}_fl.txt").read_text() == \
                (tmp_path / mode / f"acc_{name}_fl.txt").read_text()


@pytest.mark.slow
def test_one_pass_on_smollm2_equals_its_real_generate_and_loglik(smollm2_folder):
    model = AutoModelForCausalLM.from_pretrained(smollm2_folder).eval()
    tokenizer = load_tokenizer("builtin:smollm2-135m", "causal")
    dataset = load_qa_dataset("medmcqa").sample(8, seed=5)  # short questions: cheap prompts
    _, fused, separate, fused_calls, separate_calls = both_ways(model, tokenizer, dataset, batch_size=4)
    assert fused == separate and (fused_calls, separate_calls) == (2, 4)
    assert len({r["prediction"] for r in fused["loglik"]}) >= 2  # the check compares real, varied scores
