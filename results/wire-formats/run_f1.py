"""F1 cost of the int8 / int4 wire formats at equal rounds on the default task (results/wire-formats/README.md).

The embedded default exactly as `fedmedlora run .` runs it (NER, 3 IID sites, MiniLM-L6 + LoRA r=8, 3 rounds x 30
steps, FedAvg), once per `strategy.wire-dtype`, through the real ServerApp and ClientApp in this process
(`run_in_process`, the same numbers as a Flower simulation). float16 is the default and must reproduce
0.0871, 0.2537, 0.5293, 0.6188. A finished run is reused.

    OMP_NUM_THREADS=1 python results/wire-formats/run_f1.py            # ~5 min a run on a quiet 2-core machine
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from fedmedlora.launch.grid import run_in_process
    from fedmedlora.recorder import read_metrics

    runs = ROOT / "results" / "runs"
    out = Path(__file__).resolve().parent / "f1.json"
    rows = []
    for wire in sys.argv[1:] or ["float16", "int8", "int4"]:
        name = f"wire-{wire}"
        summary = runs / name / "summary.json"
        if not (summary.exists() and json.loads(summary.read_text())["status"] == "completed"):
            shutil.rmtree(runs / name, ignore_errors=True)
            run_in_process({"strategy.wire-dtype": wire, "run.name": name, "run.results-dir": str(runs)})
        records = read_metrics(runs / name)
        rows.append({"wire-dtype": wire, "run-dir": f"results/runs/{name}",
                     "strict-f1-per-round": [r["server-eval"]["pooled"]["strict-f1"] for r in records],
                     "lenient-f1": records[-1]["server-eval"]["pooled"]["lenient-f1"],
                     "mib-per-run": records[-1]["comm"]["total-sent-mib"] + records[-1]["comm"]["total-received-mib"],
                     # what the wire format changes: training traffic (evaluation sends the float32 adapter)
                     "train-mib-per-run": sum(r["comm"].get("train", {}).get(k, 0.0)
                                              for r in records for k in ("sent-mib", "received-mib")),
                     "wall-seconds": json.loads(summary.read_text())["wall-seconds"]})
        out.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"[wire-f1] {wire}: {[round(x, 4) for x in rows[-1]['strict-f1-per-round']]}", flush=True)


if __name__ == "__main__":
    main()
