"""What the per-round resume state costs, next to the PEFT checkpoint every round already writes.

Two shapes: the embedded default (MiniLM, LoRA r=8 on query/value plus the token head, FedAvg: the adapter only)
and conf/flowertune-medical.toml's Llama-3-8B shape (LoRA r=32 on q_proj/v_proj, 13.6 M parameters) with FedAdam,
whose state adds its two moments (three adapter copies in all). For each: bytes on disk and best-of-3 seconds of
`save_round_state` (atomic, fsync'd, RNGs captured), `load_round_state` (SHA-256 checked) and `save_checkpoint`
(peft_<round>/, the slow way a resume could have been built on, without strategy or RNG state).

    python bench/bench_state.py     # about a minute on 2 CPU cores; ~1 GiB of memory
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


def best_of(fn: Any, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(name: str, overrides: dict[str, Any], head: str, num_labels: int | None, moments: bool) -> dict[str, Any]:
    from fedmedlora.model.adapter import initial_adapter_state, lora_config, save_checkpoint
    from fedmedlora.run_state import load_round_state, save_round_state
    from fedmedlora.settings import parse_run_config

    settings = parse_run_config(overrides)
    state = initial_adapter_state(settings, head, num_labels, seed=0)
    rng = np.random.default_rng(0)
    state = {k: (v + rng.normal(0, 0.01, v.shape)).astype(np.float32) for k, v in state.items()}  # a trained B
    strategy = ({**{f"m_t/{k}": v * 0.1 for k, v in state.items()}, **{f"v_t/{k}": v * v for k, v in state.items()}}
                if moments else {})
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        save = best_of(lambda: save_round_state(run_dir, 1, state, strategy, {}))
        load = best_of(lambda: load_round_state(run_dir, 1))
        restored = load_round_state(run_dir, 1)
        exact = all(np.array_equal(restored.adapter[k], v) for k, v in state.items()) and all(
            np.array_equal(restored.strategy_arrays[k], v) for k, v in strategy.items())
        state_bytes = folder_bytes(run_dir / "state")
        config = lora_config(settings, head)
        checkpoint = best_of(lambda: save_checkpoint(run_dir / "peft_1", state, config))
        checkpoint_bytes = folder_bytes(run_dir / "peft_1")
    return {"shape": name, "parameters": int(sum(v.size for v in state.values())),
            "strategy-arrays": len(strategy), "state-mib": state_bytes / 2**20, "save-seconds": save,
            "load-seconds": load, "exact": exact, "checkpoint-mib": checkpoint_bytes / 2**20,
            "checkpoint-seconds": checkpoint}


def main() -> None:
    import fedmedlora.model.loading
    from fedmedlora.model.shapes import llama3_8b_config
    from fedmedlora.settings import load_toml_overrides

    results = [measure("minilm-ner-default (fedavg)", {}, "token", 5, moments=False)]
    real_load_config = fedmedlora.model.loading.load_config
    fedmedlora.model.loading.load_config = lambda name: llama3_8b_config()  # no hub here: the shape from its config
    try:
        preset = load_toml_overrides(str(ROOT / "conf" / "flowertune-medical.toml"))
        results.append(measure("llama-3-8b r=32 q,v (fedadam)", {**preset, "strategy.name": "fedadam"}, "", None,
                               moments=True))
    finally:
        fedmedlora.model.loading.load_config = real_load_config
    print(json.dumps({"results": results}, indent=2))


if __name__ == "__main__":
    main()
