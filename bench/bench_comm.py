"""Communication of the flowertune-medical preset shape, counted by the real strategy code at float32 and float16.

conf/flowertune-medical.toml as it stands (Llama-3-8B shape from its config: LoRA r=32 on q_proj and v_proj,
13,631,488 parameters; 20 sites, 2 sampled a round, 10 rounds, FedAvgOpt), with `strategy.wire-dtype` float32
(the seed's arrays) and float16 (the default). Each round the strategy's own `configure_train` builds the messages
to the sampled sites and `aggregate_train` takes their replies (the global adapter plus seeded noise, sent back
in the wire dtype as a real client does); the MiB come from the run's RunRecorder, the numbers a run writes to
metrics.jsonl. The seed reports 2080.62 MiB for this shape at float32 (DESIGN.md).

    python bench/bench_comm.py            # about a minute on 2 CPU cores; ~1 GiB of memory
Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED_MIB_FLOAT32 = 2080.62


def run(wire_dtype: str) -> dict[str, Any]:
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

    import fedmedlora.model.loading
    from fedmedlora.model.adapter import initial_adapter_state
    from fedmedlora.wire import to_array_record
    from fedmedlora.launch.grid import NodeIdsGrid, set_task_identity
    from fedmedlora.recorder import RunRecorder
    from fedmedlora.settings import load_toml_overrides, parse_run_config
    from fedmedlora.strategies import build_strategy
    from fedmedlora.model.shapes import llama3_8b_config

    fedmedlora.model.loading.load_config = lambda name: llama3_8b_config()  # no hub here: the shape from its config
    preset = load_toml_overrides(str(ROOT / "conf" / "flowertune-medical.toml"))
    settings = parse_run_config({**preset, "strategy.wire-dtype": wire_dtype})
    state = initial_adapter_state(settings, "", None, seed=settings.run.seed)
    params = int(sum(v.size for v in state.values()))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        recorder = RunRecorder(Path(tmp))
        strategy = build_strategy(settings, recorder, state)
        global_record = to_array_record(state, "float32")
        start = time.perf_counter()
        per_round = []
        for server_round in range(1, settings.num_server_rounds + 1):
            set_task_identity(1, 0)
            messages = list(strategy.configure_train(server_round, global_record, ConfigRecord(),
                                                     NodeIdsGrid(settings.data.num_sites)))
            replies = []
            for msg in messages:
                node = msg.metadata.dst_node_id
                local = {k: v + rng.normal(0, 1e-3, v.shape).astype(np.float32) for k, v in state.items()}
                set_task_identity(1, node)
                replies.append(Message(RecordDict({
                    "arrays": to_array_record(local, wire_dtype),
                    "metrics": MetricRecord({"num-examples": 160, "num-tokens": 80_000, "site": node - 1,
                                             "train-loss": 1.0})}), reply_to=msg))
            set_task_identity(1, 0)
            arrays, _ = strategy.aggregate_train(server_round, replies)
            if arrays is not None:
                global_record = arrays
            comm = recorder.round(server_round)["comm"]
            per_round.append({"round": server_round, "clients": len(messages), "sent-mib": comm["sent-mib"],
                              "received-mib": comm["received-mib"]})
        seconds = time.perf_counter() - start
        total = recorder.comm_total["sent-mib"] + recorder.comm_total["received-mib"]
    return {"wire-dtype": wire_dtype, "lora-parameters": params, "rounds": settings.num_server_rounds,
            "clients-per-round": settings.clients_per_round,
            "mib-per-round": per_round[0]["sent-mib"] + per_round[0]["received-mib"],
            "mib-per-transfer": per_round[0]["sent-mib"] / per_round[0]["clients"],
            "mib-per-run": total, "per-round": per_round, "strategy-seconds": seconds}


def main() -> None:
    from fedmedlora.evaluation.machine_info import machine_info

    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # the strategy's console lines; stdout is the JSON
        results = {dtype: run(dtype) for dtype in ("float32", "float16")}
    f32, f16 = results["float32"]["mib-per-run"], results["float16"]["mib-per-run"]
    print(json.dumps({
        "benchmark": "communication",
        "preset": "conf/flowertune-medical.toml",
        "machine": machine_info("cpu"),
        "runs": results,
        "summary": {"seed-mib-float32": SEED_MIB_FLOAT32, "float32-mib-per-run": f32, "float16-mib-per-run": f16,
                    "float32-vs-seed": f32 / SEED_MIB_FLOAT32, "float16-vs-seed": f16 / SEED_MIB_FLOAT32,
                    "target-max-vs-seed": 0.5},
    }, indent=2))


if __name__ == "__main__":
    main()
