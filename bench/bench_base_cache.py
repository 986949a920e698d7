"""Loading a converted base model in a fresh process, as each message of a deployed site does: without the site
cache, with it cold (the first process converts and saves), and warm (later processes read the saved copy).

Model: the pretrained SmolLM2-135M-Instruct (`builtin:smollm2-135m`, stored in float32 after its GGUF conversion)
with LoRA r=16 on q/v, loaded (a) in 4-bit NF4 through bitsandbytes' CPU backend, (b) cast to bfloat16. Each load
runs in its own Python process (`resident_model`, the ClientApp's model slot), timed inside it; the import floor
(a fresh process importing torch, transformers, peft, datasets and flwr, which no cache removes) is measured beside.

    python bench/bench_base_cache.py > results/performance/bench_base_cache.json    # ~5 min on 2 busy cores
Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOAD = """
import json, sys, time
from pathlib import Path
start = time.perf_counter()
from fedmedlora.model import base_cache, resident
from fedmedlora.settings import parse_run_config
imported = time.perf_counter()
settings = parse_run_config(json.loads(sys.argv[1]))
cache = Path(sys.argv[2]) if sys.argv[2] else None
resident.resident_model(settings, "", [], cache_dir=cache)
print(json.dumps({"load-seconds": resident.base_model_load_seconds(), "from-cache": base_cache.cache_hits(),
                  "import-seconds": imported - start}))
"""

FLOOR = "import time; t = time.perf_counter(); import torch, transformers, peft, datasets, flwr.clientapp; " \
        "print(time.perf_counter() - t)"


def fresh(code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=1800,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    load_before = os.getloadavg()
    base = {"model.name": "builtin:smollm2-135m", "lora.r": 16, "lora.target-modules": "q_proj,v_proj"}
    fresh(LOAD, json.dumps(base), "")  # converts the GGUF once (the machine's model cache), outside the timings
    results = {"import-floor-seconds": [round(float(fresh(FLOOR)), 2) for _ in range(3)]}
    for label, extra in (("4-bit NF4", {"model.quantization": 4}), ("bfloat16 cast", {"model.dtype": "bfloat16"})):
        config = json.dumps({**base, **extra})
        with tempfile.TemporaryDirectory(prefix="bench-base-cache-") as cache:
            runs = {"no-cache": [json.loads(fresh(LOAD, config, "")) for _ in range(2)],
                    "cold-cache": [json.loads(fresh(LOAD, config, cache))],
                    "warm-cache": [json.loads(fresh(LOAD, config, cache)) for _ in range(2)]}
            size = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
        results[label] = {k: [{m: round(v, 2) if isinstance(v, float) else v for m, v in r.items()} for r in rs]
                          for k, rs in runs.items()}
        results[label]["cache-mib"] = round(size / 2**20, 1)
    print(json.dumps({
        "benchmark": "base model load in a fresh process: no cache, cold cache, warm cache",
        "model": base, "machine": {"cpus": os.cpu_count(), "load-average-before": load_before,
                                   "load-average-after": os.getloadavg(), "python": platform.python_version()},
        "results": results, "finished": time.strftime("%Y-%m-%d %H:%M"),
    }, indent=2))


if __name__ == "__main__":
    main()
