"""`evaluate.qa-benchmarks`: the QA accuracy a run scores after every round, on eval.py's own samples and scorer, and
the settings that would make it meaningless refused before any work."""

from __future__ import annotations

import json

import pytest

from fedmedlora.data.qa_benchmarks import load_qa_datasets
from fedmedlora.qa.suite import QASuite
from fedmedlora.run_config import load_settings
from fedmedlora.settings import ConfigError, parse_run_config

QA_RUN = {"data.task": "instruct", "data.datasets": "pubmedqa_pool", "model.name": "builtin:tiny-llama-micro",
          "lora.target-modules": "q_proj,v_proj"}


def _problems(**overrides) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings({**QA_RUN, **{k.replace("__", ".").replace("_", "-"): v for k, v in overrides.items()}})
    return str(caught.value)


def test_the_key_reads_names_and_sizes():
    settings = load_settings({**QA_RUN, "evaluate.qa-benchmarks": " pubmedqa:100, medqa ,careqa:0"})
    assert settings.qa_benchmarks == [("pubmedqa", 100), ("medqa", 0), ("careqa", 0)]
    assert load_settings(QA_RUN).qa_benchmarks == []


@pytest.mark.parametrize("value, message", [
    ("pubmedqa:ten", "'pubmedqa:ten' is not <name> or <name>:<size>"),
    (":50", "':50' is not <name> or <name>:<size>"),
    ("pubmedqa:-3", "'pubmedqa:-3' is not"),
])
def test_malformed_entries_name_the_key_and_the_entry(value, message):
    with pytest.raises(ConfigError) as caught:
        parse_run_config({**QA_RUN, "evaluate.qa-benchmarks": value})
    assert f"key 'evaluate.qa-benchmarks' = {value!r}" in str(caught.value) and message in str(caught.value)


def test_runs_that_cannot_use_benchmarks_are_refused_before_any_work():
    text = _problems(evaluate__qa_benchmarks="pubmedqa:10,nosuchbench:5")
    assert "'nosuchbench' is neither a bundled benchmark (pubmedqa, medmcqa, medqa, careqa) nor a file" in text
    text = _problems(evaluate__qa_benchmarks="pubmedqa:10", data__task="ner", data__datasets="ncbi_disease")
    assert "QA benchmarks score instruction-tuned models; data.task is 'ner'" in text
    text = _problems(evaluate__qa_benchmarks="pubmedqa:10", evaluate__server=False)
    assert "evaluate.server is false" in text
    # The FlowerTune seed's mistake: training in one prompt format, scoring in another.
    text = _problems(evaluate__qa_benchmarks="pubmedqa:10", data__datasets="pubmedqa_pool,medquad")
    assert "key 'data.datasets' = 'pubmedqa_pool,medquad': medquad is written in Alpaca's prompt format" in text
    assert "medquad_flowertune" in text
    load_settings({**QA_RUN, "data.datasets": "pubmedqa_pool,medquad_flowertune",
                   "evaluate.qa-benchmarks": "pubmedqa:10"})


def test_suite_scores_eval_samples_with_eval_scorer(tmp_path):
    """The per-round numbers are eval.py's: the same questions (`--limit`, seed 2024) and the same accuracies."""
    from fedmedlora.evaluation.cli import main as eval_main
    from fedmedlora.model.loading import load_tokenizer, resolve_model_source
    from transformers import AutoModelForCausalLM

    settings = load_settings({**QA_RUN, "evaluate.qa-benchmarks": "pubmedqa:12,medmcqa:8", "evaluate.batch-size": 4})
    suite = QASuite.from_settings(settings)
    for dataset, (name, size) in zip(suite.datasets, settings.qa_benchmarks):
        (expected,) = load_qa_datasets([name], size, 2024)
        assert [i.id for i in dataset.items] == [i.id for i in expected.items] and len(dataset.items) == size

    model = AutoModelForCausalLM.from_pretrained(resolve_model_source("builtin:tiny-llama-micro"))
    model.train()
    scores = suite.score(model, load_tokenizer("builtin:tiny-llama-micro", "causal"))
    assert model.training  # left as it was found; scored in eval mode
    assert set(scores) == {"pubmedqa", "medmcqa", "mean"}
    for name, size in settings.qa_benchmarks:
        out = tmp_path / name
        assert eval_main(["--base-model-name-path", "builtin:tiny-llama-micro", "--quantization", "0",
                          "--datasets", name, "--limit", str(size), "--mode", "generate+loglik", "--batch-size", "4",
                          "--output-dir", str(out), "--no-progress"]) == 0
        for mode in ("generate", "loglik"):
            summary = json.loads((out / mode / "summary.json").read_text())["datasets"][name]
            assert scores[name][f"{mode}-accuracy"] == summary["accuracy"]
            assert scores[name]["questions"] == summary["total"] == size
        assert scores[name]["unparseable"] == json.loads((out / "generate" / "summary.json").read_text()
                                                         )["datasets"][name]["unparseable"]
    assert scores["mean"]["loglik-accuracy"] == pytest.approx(
        (scores["pubmedqa"]["loglik-accuracy"] + scores["medmcqa"]["loglik-accuracy"]) / 2)
