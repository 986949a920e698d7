"""Seconds per round and peak memory of a simulation at 3, 20 and 50 sites, 2 sampled a round, by evaluation mode.

Each configuration is one real `fedmedlora run` (a private SuperLink, Ray, the ServerApp and the ClientApp
workers), the embedded default (MiniLM-L6 + LoRA r=8, NER on NCBI-disease + BC5CDR, IID sites) made short: 3 rounds,
10 local steps of 16, 2 sites trained a round, each site's test split capped at 40 sentences (so evaluating every
site costs in proportion to the number of sites, as it does with the per-site test sets of a real consortium).
Modes:

- `main`: the code before this change (git commit given by --main-commit, exported to a temporary folder): the
  ServerApp holds every site's data and scores every site's test split after every round;
- `all-sites`: federated evaluation of every site every round (evaluate.sites = 0, evaluate.every = 1);
- `sampled`: federated evaluation of 2 sampled sites every round (evaluate.sites = 2).

Seconds per round come from metrics.jsonl (elapsed seconds between round ends, rounds 1-3); memory from sampling
the RSS of the run's whole process tree every 0.5 s (SuperLink, Ray's own processes, the ServerApp process and the
ClientApp workers), with the ServerApp's and the largest ClientApp worker's peaks beside it.

    python bench/bench_federation.py > results/performance/bench_federation.json    # ~40 min on 2 busy cores
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASE = {"num-server-rounds": 3, "train.local-steps": 10, "train.batch-size": 16, "strategy.clients-per-round": 2,
        "data.max-eval-examples": 40, "evaluate.checkpoint-every": 0}
MODES = {"main": {}, "all-sites": {"evaluate.sites": 0}, "sampled": {"evaluate.sites": 2}}


class TreeMemory:
    """Peak RSS of a process and all its descendants, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.5):
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = {"tree": 0, "serverapp": 0, "clientapp-worker": 0}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    cmd = " ".join(proc.cmdline())
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += rss
                if "flwr-simulation" in cmd:
                    self.peak["serverapp"] = max(self.peak["serverapp"], rss)
                elif "ClientAppActor" in cmd or proc.name().startswith("ray::ClientApp"):
                    self.peak["clientapp-worker"] = max(self.peak["clientapp-worker"], rss)
            self.peak["tree"] = max(self.peak["tree"], total)
            time.sleep(self.interval)

    def __enter__(self) -> "TreeMemory":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self.thread.join()


def pairs(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in config.items())


def run_one(app: Path, sites: int, mode: str, out: Path) -> dict[str, Any]:
    config = {**BASE, **MODES[mode], "data.num-sites": sites, "run.results-dir": str(out), "run.name": f"{mode}-{sites}"}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if mode == "main":
        env["PYTHONPATH"] = str(app)
    start = time.time()
    with open(out / f"{mode}-{sites}.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fedmedlora.cli", "run", str(app), "-c", pairs(config)],
                                cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
        with TreeMemory(proc.pid) as memory:
            code = proc.wait()
    wall = time.time() - start
    run_dir = out / f"{mode}-{sites}"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()] if (
        run_dir / "metrics.jsonl").exists() else []
    ends = [r["elapsed-seconds"] for r in records]
    per_round = [round(b - a, 2) for a, b in zip(ends, ends[1:])]
    evaluation = [r.get("server-eval", {}) for r in records[1:]]
    return {
        "sites": sites, "mode": mode, "exit-code": code, "wall-seconds": round(wall, 1),
        "seconds-per-round": per_round,
        "mean-seconds-per-round": round(sum(per_round) / len(per_round), 2) if per_round else None,
        "evaluation-seconds-per-round": [round(e.get("seconds", 0.0), 2) for e in evaluation],
        "sites-evaluated-per-round": [len(e.get("sampled", e.get("sites", {}))) for e in evaluation],
        "peak-rss-mib": {k: round(v / 2**20, 1) for k, v in memory.peak.items()},
        "final-pooled-strict-f1": evaluation[-1].get("pooled", {}).get("strict-f1") if evaluation else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", default="3,20,50")
    parser.add_argument("--modes", default="main,all-sites,sampled")
    parser.add_argument("--main-commit", default="b82e0dd")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-federation-") as tmp:
        tmp_path = Path(tmp)
        main_app = tmp_path / "main"
        main_app.mkdir()
        subprocess.run(f"git archive {args.main_commit} | tar -x -C {main_app}", shell=True, cwd=ROOT, check=True)
        for sites in map(int, args.sites.split(",")):
            for mode in args.modes.split(","):
                app = main_app if mode == "main" else ROOT
                result = run_one(app, sites, mode, tmp_path)
                print(json.dumps(result), file=sys.stderr, flush=True)
                results.append(result)
    import platform

    print(json.dumps({
        "benchmark": "federation: seconds per round and peak memory by number of sites and evaluation mode",
        "settings": BASE, "modes": {k: v or "code of commit " + args.main_commit for k, v in MODES.items()},
        "machine": {"cpus": os.cpu_count(), "load-average-before": load_before, "load-average-after": os.getloadavg(),
                    "python": platform.python_version()},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
