"""Communication of the flowertune-medical preset shape, counted by the real strategy and client code, for each
`strategy.wire-dtype`: float32 (the seed's arrays), float16 (the default), int8 and int4 (blockwise absmax updates
with error feedback, `strategy.wire-block-size` 128).

conf/flowertune-medical.toml as it stands (Llama-3-8B shape from its config: LoRA r=32 on q_proj and v_proj,
13,631,488 parameters, 128 tensors; 20 sites, 2 sampled a round, 10 rounds, FedAvgOpt). Each round the strategy's
own `configure_train` builds the messages to the sampled sites and `aggregate_train` takes their replies. A reply is
built by the ClientApp's own code (`site_adapter.reply_arrays`: values in float16/float32, or the quantized update
plus the site's residual) from the adapter the site decoded plus seeded noise standing in for training. The MiB come
from the run's RunRecorder, the numbers a run writes to metrics.jsonl (array data as Flower counts it: numpy's
128-byte header included); beside them, every message's ArrayRecord as Flower 1.42 puts it on the wire
(`wire.record_wire_bytes`: the values, numpy's headers, and Flower's own object headers). The seed reports
2080.62 MiB for this shape at float32 (DESIGN.md).

    python bench/bench_comm.py            # a few minutes on 2 CPU cores; ~2 GiB of memory
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
MIB = 2.0 ** 20
FORMATS = ("float32", "float16", "int8", "int4")
TARGETS = {"float16": 0.5, "int8": 0.25, "int4": 0.125}  # of the seed's float32 MiB per run


def add(total: dict[str, int], part: dict[str, int]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0) + value


def run(wire_dtype: str) -> dict[str, Any]:
    from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

    import fedmedlora.model.loading
    from fedmedlora.launch.grid import NodeIdsGrid, set_task_identity
    from fedmedlora.model.adapter import initial_adapter_state
    from fedmedlora.model.shapes import llama3_8b_config
    from fedmedlora.recorder import RunRecorder
    from fedmedlora.settings import load_toml_overrides, parse_run_config
    from fedmedlora.site_adapter import SiteAdapter, reply_arrays
    from fedmedlora.strategies import build_strategy
    from fedmedlora.wire import from_array_record, is_quantized, record_wire_bytes, to_array_record

    fedmedlora.model.loading.load_config = lambda name: llama3_8b_config()  # no hub here: the shape from its config
    preset = load_toml_overrides(str(ROOT / "conf" / "flowertune-medical.toml"))
    settings = parse_run_config({**preset, "strategy.wire-dtype": wire_dtype})
    initial = initial_adapter_state(settings, "", None, seed=settings.run.seed)
    params = int(sum(v.size for v in initial.values()))
    rng = np.random.default_rng(0)
    contexts: dict[int, Context] = {}
    wire = {"sent": {}, "received": {}}
    with tempfile.TemporaryDirectory() as tmp:
        recorder = RunRecorder(Path(tmp))
        strategy = build_strategy(settings, recorder, initial)
        global_record = to_array_record(initial, "float32")
        start = time.perf_counter()
        per_round = []
        for server_round in range(1, settings.num_server_rounds + 1):
            set_task_identity(1, 0)
            messages = list(strategy.configure_train(server_round, global_record, ConfigRecord(),
                                                     NodeIdsGrid(settings.data.num_sites)))
            replies = []
            for msg in messages:
                node = msg.metadata.dst_node_id
                add(wire["sent"], record_wire_bytes(msg.content["arrays"]))
                received = from_array_record(msg.content["arrays"])
                if is_quantized(wire_dtype):  # the site adds the initial adapter it drew itself
                    received = {k: initial[k] + v for k, v in received.items()}
                trained = {k: v + rng.normal(0, 1e-3, v.shape).astype(np.float32) for k, v in received.items()}
                context = contexts.setdefault(node, Context(run_id=1, node_id=node, node_config={}, state=RecordDict(),
                                                            run_config={}))
                arrays = reply_arrays(SiteAdapter(settings, "all", received, received, settings.lora.r), trained,
                                      context)
                add(wire["received"], record_wire_bytes(arrays))
                set_task_identity(1, node)
                replies.append(Message(RecordDict({
                    "arrays": arrays,
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
    on_wire = {k: (wire["sent"].get(k, 0) + wire["received"].get(k, 0)) / MIB
               for k in ("values", "numpy-headers", "flower-headers", "total")}
    return {"wire-dtype": wire_dtype, "block-size": settings.strategy.wire_block_size if is_quantized(wire_dtype)
            else None, "lora-parameters": params, "tensors": len(initial), "rounds": settings.num_server_rounds,
            "clients-per-round": settings.clients_per_round,
            "mib-per-run": total, "mib-per-run-vs-seed": total / SEED_MIB_FLOAT32,
            "on-flower-wire-mib": on_wire, "on-flower-wire-vs-seed": on_wire["total"] / SEED_MIB_FLOAT32,
            "header-share-of-wire": (on_wire["numpy-headers"] + on_wire["flower-headers"]) / on_wire["total"],
            "per-round": per_round, "strategy-seconds": seconds}


def main() -> None:
    import contextlib

    from fedmedlora.evaluation.machine_info import machine_info

    with contextlib.redirect_stdout(sys.stderr):  # the strategy's console lines; stdout is the JSON
        results = {dtype: run(dtype) for dtype in FORMATS}
    summary: dict[str, Any] = {"seed-mib-float32": SEED_MIB_FLOAT32}
    for dtype in FORMATS:
        r = results[dtype]
        summary[dtype] = {"mib-per-run": round(r["mib-per-run"], 2), "vs-seed": round(r["mib-per-run-vs-seed"], 5),
                          "on-flower-wire-mib": round(r["on-flower-wire-mib"]["total"], 2),
                          "on-flower-wire-vs-seed": round(r["on-flower-wire-vs-seed"], 5),
                          "header-share-of-wire": round(r["header-share-of-wire"], 5)}
        if dtype in TARGETS:
            summary[dtype]["target-vs-seed"] = TARGETS[dtype]
            summary[dtype]["met"] = r["on-flower-wire-vs-seed"] <= TARGETS[dtype]
    print(json.dumps({"benchmark": "communication", "preset": "conf/flowertune-medical.toml",
                      "machine": machine_info("cpu"), "runs": results, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
