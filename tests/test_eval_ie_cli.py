"""`eval.py --task ner|re` on checkpoints a federation wrote: outputs, label sets, and scores nervaluate agrees with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nervaluate import Evaluator

from fedmedlora.evaluation import cli
from fedmedlora.launch.grid import run_in_process

from helpers import TINY_NER


def _eval(*flags: str) -> int:
    return cli.main(["--device", "cpu", "--quantization", "0", "--no-progress", *flags])


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def ner_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    run_in_process({**TINY_NER, "num-server-rounds": 1, "run.results-dir": str(out), "run.name": "ner"})
    return out / "ner"


def test_ner_checkpoint_is_scored_per_dataset_and_pooled(ner_checkpoint, tmp_path):
    # peft_0, the initial adapter: its untrained head tags many spans, so the comparison below has work to do
    out = tmp_path / "ner"
    assert _eval("--task", "ner", "--base-model-name-path", "builtin:minilm-l6", "--peft-path",
                 str(ner_checkpoint / "peft_0"), "--datasets", "ncbi_disease,bc5cdr", "--limit", "40",
                 "--output-dir", str(out)) == 0


    summary = json.loads((out / "ner_summary.json").read_text())
    assert summary["family"] == "encoder" and summary["split"] == "test"
    assert sum(v["examples"] for v in summary["datasets"].values()) == 40 and summary["pooled"]["strict-f1"] > 0
    records = _read_jsonl(out / "ner_predictions.jsonl")
    assert len(records) == 40 and (out / "ner_table.md").read_text().startswith("# NER")

    # nervaluate agrees on the written predictions: "exact" ignores types (the seed's headline), "strict" does not
    def spans(key):
        return [[{"label": s["type"], "start": s["start"], "end": s["end"] - 1} for s in r[key]] for r in records]

    results = Evaluator(spans("gold"), spans("pred"), tags=["Chemical", "Disease"], loader="default").evaluate()
    assert summary["pooled"]["strict-f1"] == pytest.approx(results["overall"]["exact"].f1, abs=1e-12)
    assert summary["pooled"]["typed-strict-micro-f1"] == pytest.approx(results["overall"]["strict"].f1, abs=1e-12)
    assert any(r["gold"] for r in records)


def test_ner_label_set_comes_from_the_checkpoint(ner_checkpoint):
    info = json.loads((ner_checkpoint / "peft_1" / "fedmedlora.json").read_text())
    assert info["task"] == "ner" and "B-Disease" in info["labels"]


def test_a_checkpoint_of_another_task_is_refused_before_loading(ner_checkpoint, tmp_path, capsys):
    assert _eval("--task", "re", "--base-model-name-path", "builtin:minilm-l6", "--peft-path",
                 str(ner_checkpoint / "peft_1"), "--datasets", "chemprot", "--output-dir", str(tmp_path / "re")) == 2
    assert "was trained for task 'ner'" in capsys.readouterr().err


def test_re_base_encoder_is_scored_on_bundled_chemprot(tmp_path):
    out = tmp_path / "re"
    assert _eval("--task", "re", "--base-model-name-path", "builtin:minilm-l6", "--datasets", "chemprot",
                 "--limit", "16", "--output-dir", str(out)) == 0
    summary = json.loads((out / "re_summary.json").read_text())
    assert summary["datasets"]["chemprot"]["examples"] == 16
    assert set(summary["pooled"]) >= {"strict-f1", "typed-strict-micro-f1"}
    assert len(_read_jsonl(out / "re_predictions.jsonl")) == 16
