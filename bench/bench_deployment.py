"""What a round costs in a real Flower 1.42 deployment: process starts, load seconds, share outside training.

A SuperLink and three SuperNodes on this machine (separate process trees, own FLWR_HOME each, TLS and SuperNode
authentication on: launch/local_deployment.py), each site holding one CoNLL file of 1,500 sentences cut from the
bundled corpora (BC5CDR 0-1499, NCBI-disease 0-1499, BC5CDR 1500-2999). The embedded default model and task
(MiniLM-L6 + LoRA r=8, NER), 3 rounds of 10 local steps of 16, every site evaluated every round. Three runs:

- `no-cache`: node config `cache=false`: every message re-reads, re-splits and re-tokenizes its site's file;
- `cold-cache`: the site caches start empty (the first process of each kind writes them);
- `warm-cache`: the same federation again: every process reads rows and tokens back from its site's disk.

Per round (metrics.jsonl `processes`): ClientApp process starts, their startup seconds (interpreter, imports,
Flower), base-model load seconds, data seconds, the slowest site's seconds in its optimizer loop, the round's wall
seconds and the share of it outside training.

    python bench/bench_deployment.py > results/performance/bench_deployment.json    # ~20 min on 2 busy cores
Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUN = {"num-server-rounds": 3, "train.local-steps": 10, "train.batch-size": 16, "evaluate.checkpoint-every": 0,
       "data.datasets": "/nonexistent/sites-hold-their-own-data.tsv"}
SITES = {"general": ("bc5cdr", 0), "oncology": ("ncbi_disease", 0), "pharmacy": ("bc5cdr", 1500)}


def summarise(run_dir: Path, wall: float, code: int) -> dict[str, Any]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = []
    for record in records:
        figures = dict(record.get("processes", {}))
        starts = figures.get("process-starts", 0) or 1
        rounds.append({
            "round": record["round"],
            "process-starts": figures.get("process-starts"),
            "messages": figures.get("messages"),
            "mean-startup-seconds": round(figures.get("startup-seconds", 0.0) / starts, 2),
            "mean-model-load-seconds": round(figures.get("model-load-seconds", 0.0) / starts, 2),
            "mean-data-seconds": round(figures.get("data-seconds", 0.0) / max(figures.get("messages", 1), 1), 2),
            "slowest-training-seconds": round(figures.get("slowest-training-seconds", 0.0), 2),
            "round-seconds": round(figures.get("round-seconds", 0.0), 2),
            "share-outside-training": round(figures.get("share-outside-training", 0.0), 3),
            "strict-f1": record.get("server-eval", {}).get("pooled", {}).get("strict-f1"),
        })
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"exit-code": code, "wall-seconds": round(wall, 1), "status": summary.get("status"), "rounds": rounds,
            "per-site": summary.get("processes-per-site")}


def main() -> None:
    from fedmedlora.launch.local_deployment import LocalDeployment, SiteSpec
    from fedmedlora_data import write_site_file

    load_before = os.getloadavg()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-deployment-") as tmp:
        root = Path(tmp)
        files = {}
        for name, (corpus, skip) in SITES.items():
            files[name] = root / "hospitals" / name / f"{name}.tsv"
            write_site_file(files[name], corpus, skip, 1500, splits=("train", "devel"))
        env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        for label, cache, federation in (("no-cache", False, "nocache"), ("cold-cache", True, "cached"),
                                         ("warm-cache", True, "cached")):
            sites = [SiteSpec(name, data=[str(path)], cache=cache) for name, path in files.items()]
            with LocalDeployment(root / federation, sites, env=env, startup_timeout=300) as fed:
                start = time.time()
                code = fed.submit(ROOT, {**RUN, "run.results-dir": str(root / "results"), "run.name": label})
                wall = time.time() - start
            out[label] = summarise(root / "results" / label, wall, code)
            print(json.dumps({label: out[label]["rounds"]}), file=sys.stderr, flush=True)
    print(json.dumps({
        "benchmark": "deployment: per-round process starts, load seconds and share outside training, 3 SuperNodes",
        "settings": RUN, "sites": {k: f"{v[0]} sentences {v[1]}-{v[1] + 1499}" for k, v in SITES.items()},
        "machine": {"cpus": os.cpu_count(), "load-average-before": load_before, "load-average-after": os.getloadavg(),
                    "python": platform.python_version()},
        "runs": out,
    }, indent=2))


if __name__ == "__main__":
    main()
