"""End to end through Flower's simulation engine (`fedmedlora run`: SuperLink, Ray, ServerApp, ClientApps)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedmedlora.recorder import read_metrics

from helpers import TINY_INSTRUCT, TINY_NER

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _pairs(config: dict) -> str:
    return " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v}"
                    for k, v in config.items())


def _run(config: dict, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    config = {**config, "run.results-dir": str(tmp_path), "run.name": "e2e"}
    proc = subprocess.run([sys.executable, "-m", "fedmedlora.cli", "run", str(ROOT), "-c", _pairs(config)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    return proc, tmp_path / "e2e"


def _check_common(proc, run_dir: Path, rounds: int) -> list[dict]:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[fedmedlora] completed" in proc.stdout
    records = read_metrics(run_dir)
    assert [r["round"] for r in records] == list(range(rounds + 1))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds-completed"] == rounds
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run-config"]["num-server-rounds"] == rounds
    for record in records[1:]:
        assert record["replies"] == record["usable"] > 0 and not record["excluded"]
        # one Ray actor serves every site on 2 cores: the base model was loaded once in it for the whole run
        assert {c["model-loads"] for c in record["clients"]} == {1}
        train = record["comm"]["train"]  # what goes out to train comes back; evaluation sends the adapter, gets counts
        assert train["sent-mib"] == pytest.approx(train["received-mib"]) and train["sent-mib"] > 0
        evaluate = record["comm"]["evaluate"]
        # float32 vs float16 values to every site; each tensor also carries numpy's 128-byte header in both formats
        headers = 2 ** -20 * 128 * config["adapter"]["tensors"] * len(record["train-nodes"])
        assert evaluate["sent-mib"] == pytest.approx(2 * train["sent-mib"] - headers, rel=1e-6)
        assert evaluate["received-mib"] == 0
    assert records[-1]["comm"]["total-sent-mib"] == pytest.approx(sum(r["comm"]["sent-mib"] for r in records))
    assert (run_dir / f"peft_{rounds}" / "adapter_model.safetensors").exists()
    return records


def test_ner_encoder_federation(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForTokenClassification

    from fedmedlora.model.loading import resolve_model_source

    proc, run_dir = _run(TINY_NER, tmp_path)
    records = _check_common(proc, run_dir, rounds=2)
    assert {c["site"] for c in records[1]["clients"]} == {0, 1, 2}
    assert "strict-f1" in records[-1]["server-eval"]["pooled"] and set(records[-1]["server-eval"]["sites"]) == {
        "0", "1", "2"}
    info = json.loads((run_dir / "peft_2" / "fedmedlora.json").read_text())
    base = AutoModelForTokenClassification.from_pretrained(
        resolve_model_source("builtin:minilm-l6"), num_labels=len(info["labels"]))
    model = PeftModel.from_pretrained(base, str(run_dir / "peft_2"))
    assert model.base_model.model.classifier.modules_to_save["default"].weight.shape[0] == 5


def test_instruct_sft_federation_loss_falls(tmp_path):
    proc, run_dir = _run(TINY_INSTRUCT, tmp_path)
    records = _check_common(proc, run_dir, rounds=2)
    losses = [r["server-eval"]["pooled"]["loss"] for r in records]
    assert losses[-1] < losses[0]
    assert all(c["train-loss"] > 0 for c in records[1]["clients"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["trainer"] == "trl.SFTTrainer" and config["family"] == "causal"


def test_sites_keep_their_state_between_rounds_in_a_flower_simulation(tmp_path):
    # FedSA-LoRA keeps each site's B, int8 each site's quantization residual, in the ClientApp's context.state:
    # Flower's simulation must hand it back to the site in the next round (a Ray actor plays every site)
    config = {**TINY_NER, "strategy.name": "fedsa-lora", "strategy.wire-dtype": "int8"}
    proc, run_dir = _run(config, tmp_path)
    assert proc.returncode == 0 and "[fedmedlora] completed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = read_metrics(run_dir)
    assert [r["round"] for r in records] == [0, 1, 2] and all(r["usable"] == 3 for r in records[1:])
    assert [{c["site-rounds-kept"] for c in r["clients"]} for r in records[1:]] == [{0}, {1}]
    assert set(records[2]["server-eval"]["sites"]) == {"0", "1", "2"}  # personalised: each site with its own B
    assert (run_dir / "sites" / "site0" / "peft_2" / "adapter_model.safetensors").exists()
