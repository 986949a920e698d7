"""Server learning rates for Flower's adaptive server optimisers on LoRA factors (results/server-lr/README.md).

The default NER task (`fedmedlora run .`: NCBI-disease + BC5CDR, 3 IID sites, MiniLM-L6 + LoRA r=8, 3 rounds x 30
local steps at 3e-3) with 200 test sentences per site for speed, FedAdam / FedYogi / FedAdagrad at several
`strategy.server-learning-rate` values, and FedAvg as the yardstick. Each run is a whole federation through the real
ServerApp and ClientApp in this process (`run_in_process`); a finished run is reused, so the sweep resumes.

    OMP_NUM_THREADS=1 python results/server-lr/run.py                      # ~10 min a run on 2 shared cores
    OMP_NUM_THREADS=1 python results/server-lr/run.py --only fedadam@0.01
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BASE = {"data.max-eval-examples": 200, "evaluate.checkpoint-every": 0}
RUNS: dict[str, dict[str, Any]] = {
    "fedavg": {"strategy.name": "fedavg"},
    **{f"{name}@{lr:g}": {"strategy.name": name, "strategy.server-learning-rate": lr}
       for lr in (0.01, 0.03, 0.003) for name in ("fedadam", "fedyogi", "fedadagrad")},
    # tau near the median |update| of a FedAvg round (0.007 on this task, A, B and head alike): coordinates whose
    # update is below tau move in proportion to it instead of by ~eta each, as with tau = 0.001
    **{f"{name}@0.1 tau 0.01": {"strategy.name": name, "strategy.server-learning-rate": 0.1, "strategy.tau": 0.01}
       for name in ("fedadam", "fedyogi", "fedadagrad")},
    # Flower's FedAdagrad has no momentum and no (1 - beta_2) on its second moment: its first step is
    # eta * update / (|update| + tau), ~6x FedAvg's at eta 0.1 and tau 0.01 on this task, so a 10x smaller eta
    "fedadagrad@0.01 tau 0.01": {"strategy.name": "fedadagrad", "strategy.server-learning-rate": 0.01,
                                 "strategy.tau": 0.01},
}


def one(label: str, runs_dir: Path) -> dict[str, Any]:
    from fedmedlora.launch.grid import run_in_process
    from fedmedlora.recorder import read_metrics

    name = "server-lr-" + label.replace("@", "-").replace(" ", "-")
    run_dir = runs_dir / name
    summary = run_dir / "summary.json"
    done = json.loads(summary.read_text()) if summary.exists() else {}
    if done.get("status") != "completed":
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_in_process({**BASE, **RUNS[label], "run.name": name, "run.results-dir": str(runs_dir)})
        done = json.loads(summary.read_text())
    records = read_metrics(run_dir)
    return {"run": label, **RUNS[label], "run-dir": name,
            "strict-f1-per-round": [r["server-eval"]["pooled"]["strict-f1"] for r in records],
            "lenient-f1": records[-1]["server-eval"]["pooled"]["lenient-f1"],
            "wall-seconds": done["wall-seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated run labels (default: all)")
    parser.add_argument("--runs-dir", default=str(ROOT / "results" / "runs"))
    args = parser.parse_args()
    from fedmedlora.recorder import write_text_atomic
    labels = [x for x in args.only.split(",") if x] or list(RUNS)
    out = ROOT / "results" / "server-lr" / "results.json"
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    for label in labels:
        row = one(label, Path(args.runs_dir))
        rows = [r for r in rows if r["run"] != label] + [row]
        write_text_atomic(out, json.dumps({"base": BASE, "rows": rows}, indent=2) + "\n")  # written as it goes
        print(f"[server-lr] {label}: strict F1 per round {[round(x, 4) for x in row['strict-f1-per-round']]}",
              flush=True)


if __name__ == "__main__":
    main()
