"""End to end on the embedded default (NER, MiniLM), through the real ServerApp and ClientApp (`run_in_process`): what
FFA-LoRA, FedSA-LoRA, FlexLoRA and the int8/int4 wire formats promise a user, read from the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedmedlora.launch.grid import run_in_process
from fedmedlora.recorder import read_metrics

pytestmark = pytest.mark.slow

TINY = {"data.max-train-examples": 64, "data.max-eval-examples": 16, "train.local-steps": 2,
        "num-server-rounds": 2, "data.num-sites": 2, "train.batch-size": 8, "data.max-length": 64}


def run(tmp_path: Path, **overrides: Any) -> tuple[Path, list[dict[str, Any]]]:
    config = {**TINY, "run.results-dir": str(tmp_path), "run.name": "run", **overrides}
    result = run_in_process(config)
    return Path(result["run-dir"]), read_metrics(result["run-dir"])


def adapter(folder: Path) -> dict[str, np.ndarray]:
    return load_file(str(folder / "adapter_model.safetensors"))


def test_ffa_lora_never_moves_a_and_sends_half(tmp_path: Path) -> None:
    run_dir, records = run(tmp_path, **{"strategy.name": "ffa-lora"})
    first, last = adapter(run_dir / "peft_0"), adapter(run_dir / "peft_2")
    a_keys = [k for k in first if ".lora_A." in k]
    assert a_keys and all(np.array_equal(first[k], last[k]) for k in a_keys)
    assert any(not np.array_equal(first[k], last[k]) for k in first if ".lora_B." in k)
    assert records[-1]["usable"] == 2
    # A and B are the same size here (384 x 8 and 8 x 384); the head (2.3k values) travels too
    lora = sum(v.size for k, v in first.items() if ".lora_" in k)
    head = sum(v.size for k, v in first.items() if ".lora_" not in k)
    received = records[-1]["comm"]["train"]["received-mib"] * 2 ** 20
    expected = 2 * 2 * (lora / 2 + head)  # two replies, float16, B and the head only
    assert expected <= received <= expected + 2 * 26 * 128  # + numpy's header per tensor
    evaluated = records[-1]["comm"]["evaluate"]["sent-mib"] * 2 ** 20
    expected = 2 * 4 * (lora / 2 + head)  # two sites evaluate, float32 values, B and the head only
    assert expected <= evaluated <= expected + 2 * 26 * 128


def test_fedsa_lora_reports_personalised_scores_and_keeps_b_at_the_sites(tmp_path: Path) -> None:
    run_dir, records = run(tmp_path, **{"strategy.name": "fedsa-lora"})
    server = adapter(run_dir / "peft_2")
    assert all(not np.any(v) for k, v in server.items() if ".lora_B." in k)  # the server never sees a B
    # the federated evaluation is personalised: each site scores global A with its own B, the server adds counts
    for record in records[1:]:
        evaluation = record["server-eval"]
        assert set(evaluation["sites"]) == {"0", "1"}
        assert 0.0 <= evaluation["pooled"]["strict-f1"] <= 1.0
    sites = [adapter(run_dir / "sites" / f"site{k}" / "peft_2") for k in (0, 1)]
    b_keys = [k for k in server if ".lora_B." in k]
    assert all(np.any(s[k]) for s in sites for k in b_keys[:2])  # each site trained its own B
    assert not np.array_equal(sites[0][b_keys[0]], sites[1][b_keys[0]])
    a_key = next(k for k in server if ".lora_A." in k)
    assert np.allclose(sites[0][a_key], server[a_key], atol=1e-3)  # the global A (float16 on the wire)


def test_flexlora_trains_each_site_at_its_rank(tmp_path: Path) -> None:
    run_dir, records = run(tmp_path, **{"strategy.name": "flexlora", "lora.site-ranks": "8,2"})
    assert records[1]["site-ranks"] == {"site 0": 8, "site 1": 2}
    # one base model, an adapter per rank: the last round loads no base model (ranks switch adapters, not bases)
    assert all(c["model-loaded"] == 0 for c in records[-1]["clients"])
    # round 2 sends site 1 its rank-2 factors: the downlink shrinks by about 3/8 of the LoRA payload
    assert records[2]["comm"]["train"]["sent-mib"] < 0.75 * records[1]["comm"]["train"]["sent-mib"]
    # evaluation too: round 0 sends both sites rank 8 (no rank reported yet), later rounds site 1 its rank-2 factors
    evaluated = [r["comm"]["evaluate"]["sent-mib"] for r in records]
    assert evaluated[1] == evaluated[2] < 0.75 * evaluated[0]
    last = adapter(run_dir / "peft_2")
    assert next(v for k, v in last.items() if ".lora_A." in k).shape == (8, 384)
    assert records[-1]["lora-product"]["layers"] == 12


@pytest.mark.parametrize("wire", ["int8", "int4"])
def test_quantized_wire_formats(wire: str, tmp_path: Path) -> None:
    _, base = run(tmp_path / "f16", **{"strategy.name": "fedavg"})
    _, records = run(tmp_path / wire, **{"strategy.name": "fedavg", "strategy.wire-dtype": wire})
    f16 = base[-1]["comm"]["train"]
    comm = records[-1]["comm"]["train"]
    ratio = {"int8": 0.5, "int4": 0.25}[wire]  # of float16, plus the block scales
    assert comm["received-mib"] <= f16["received-mib"] * ratio * 1.05
    assert records[1]["comm"]["train"]["sent-mib"] == 0.0  # round 1: sites draw the initial adapter themselves
    assert comm["sent-mib"] <= f16["sent-mib"] * ratio * 1.05
    f1 = [r["server-eval"]["pooled"]["strict-f1"] for r in records]
    ref = [r["server-eval"]["pooled"]["strict-f1"] for r in base]
    assert f1[0] == ref[0] and abs(f1[-1] - ref[-1]) < 0.05


def test_fed_sb_sends_only_the_cores(tmp_path: Path) -> None:
    run_dir, records = run(tmp_path, **{"strategy.name": "fed-sb"})
    first, last = adapter(run_dir / "peft_0"), adapter(run_dir / "peft_2")
    cores = [k for k in first if ".psoft_R." in k]
    assert len(cores) == 12 and any(not np.array_equal(first[k], last[k]) for k in cores)
    values = sum(v.size for v in first.values())  # 12 cores of 8 x 8 and the head
    received = records[-1]["comm"]["train"]["received-mib"] * 2 ** 20
    assert received <= 2 * (2 * values + 128 * len(first))  # two float16 replies, numpy headers included
    assert '"peft_type": "PSOFT"' in (run_dir / "peft_2" / "adapter_config.json").read_text()
