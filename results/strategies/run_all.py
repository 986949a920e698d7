"""Every aggregation strategy on the non-IID NER setting, same seeds, one table (results/strategies/README.md).

Each run is a whole federation through the real ServerApp and ClientApp code in this process
(`fedmedlora.launch.grid.run_in_process`; one process shares the loaded model and tokenized data between runs, and
`fedmedlora run` would give the same numbers with a Ray start per run). The setting is conf/ner-dirichlet.toml
(3 sites, Dirichlet 0.5 over each sentence's dominant entity type) reduced to fit two shared CPU cores (REDUCED):

    OMP_NUM_THREADS=1 python results/strategies/run_all.py                     # all variants, seeds 42 and 7
    OMP_NUM_THREADS=1 python results/strategies/run_all.py --variants fedavg,fedprox --seeds 42

Runs land in results/runs/strategies-<variant>-s<seed>/ (metrics.jsonl per round); a finished run is reused, so an
interrupted sweep resumes. The table and every per-round number go to results/strategies/results.json and are
printed as markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedmedlora.settings import load_toml_overrides  # noqa: E402

# 3 rounds x 20 local steps at the default learning rate 3e-3 (at 5e-4, 60 steps still
# predict "O" everywhere: F1 0); 100 validation and 100 test sentences per site; one checkpoint (the last).
REDUCED = {"num-server-rounds": 3, "train.local-steps": 20, "train.learning-rate-max": 3e-3,
           "train.learning-rate-min": 3e-3, "data.max-eval-examples": 100, "evaluate.checkpoint-every": 0}

VARIANTS: dict[str, dict[str, Any]] = {
    "fedavg": {"strategy.name": "fedavg"},
    "fedavg (product)": {"strategy.name": "fedavg", "strategy.lora-aggregation": "product"},
    "fed-medlora": {"strategy.name": "fed-medlora"},
    "fed-medlora-plus (seed)": {"strategy.name": "fed-medlora-plus"},
    "fed-medlora-plus (size-weighted)": {"strategy.name": "fed-medlora-plus",
                                         "strategy.validation-weighting": "size-weighted"},
    "fedavgopt": {"strategy.name": "fedavgopt"},
    "fedprox": {"strategy.name": "fedprox"},
    "fedadam": {"strategy.name": "fedadam"},
    "fedyogi": {"strategy.name": "fedyogi"},
    # Flower's server learning rates (FedAdam 0.1, FedYogi 0.01) were set for whole models; LoRA factors are small
    "fedadam (server-lr 1e-3)": {"strategy.name": "fedadam", "strategy.server-learning-rate": 1e-3},
    "fedyogi (server-lr 1e-3)": {"strategy.name": "fedyogi", "strategy.server-learning-rate": 1e-3},
    "fedadagrad": {"strategy.name": "fedadagrad"},
    "fedavgm": {"strategy.name": "fedavgm"},
    "fedmedian": {"strategy.name": "fedmedian"},
    "fedtrimmedavg": {"strategy.name": "fedtrimmedavg"},
}


def slug(variant: str) -> str:
    return variant.replace(" (", "-").replace(")", "").replace(" ", "-")


def one_run(variant: str, seed: int, base: dict[str, Any], runs_dir: Path) -> dict[str, Any]:
    from fedmedlora.launch.grid import run_in_process
    from fedmedlora.recorder import read_metrics

    name = f"strategies-{slug(variant)}-s{seed}"
    run_dir = runs_dir / name
    summary_path = run_dir / "summary.json"
    if not (summary_path.exists() and json.loads(summary_path.read_text())["status"] == "completed"):
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        config = {**base, **VARIANTS[variant], "run.seed": seed, "run.name": name, "run.results-dir": str(runs_dir)}
        run_in_process(config)
    summary = json.loads(summary_path.read_text())
    records = read_metrics(run_dir)
    pooled = [r["server-eval"]["pooled"] for r in records]
    return {
        "variant": variant, "seed": seed, "run-dir": str(run_dir.relative_to(ROOT)),
        "strict-f1": pooled[-1]["strict-f1"], "lenient-f1": pooled[-1]["lenient-f1"],
        "strict-f1-per-round": [p["strict-f1"] for p in pooled],
        "wall-seconds": summary["wall-seconds"],
        "excluded": sum(r.get("exclusions", 0) + r.get("failures", 0) for r in records),
        "extra": {key: records[-1][key] for key in ("weights", "fedavgopt", "validation", "lora-product")
                  if key in records[-1]},
    }


def table(rows: list[dict[str, Any]], seeds: list[int]) -> str:
    lines = ["| strategy | strict F1 | lenient F1 | strict F1 per round (0, 1, 2, 3) | wall s / run |",
             "|---|---|---|---|---|"]
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)

    def fmt(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.4f}"
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

    for variant, group in by_variant.items():
        rounds = zip(*(r["strict-f1-per-round"] for r in group))
        per_round = ", ".join(f"{statistics.mean(v):.3f}" for v in rounds)
        lines.append(f"| {variant} | {fmt([r['strict-f1'] for r in group])} | "
                     f"{fmt([r['lenient-f1'] for r in group])} | {per_round} | "
                     f"{statistics.mean(r['wall-seconds'] for r in group):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="42,7", help="comma-separated run.seed values (default 42,7)")
    parser.add_argument("--variants", default="all", help="comma-separated variant names, or all")
    parser.add_argument("--runs-dir", default=str(ROOT / "results" / "runs"))
    parser.add_argument("--out", default=str(ROOT / "results" / "strategies" / "results.json"))
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    variants = list(VARIANTS) if args.variants == "all" else [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    base = {**load_toml_overrides(str(ROOT / "conf" / "ner-dirichlet.toml")), **REDUCED}
    rows = []
    started = time.time()
    for seed in seeds:
        for variant in variants:
            rows.append(one_run(variant, seed, base, Path(args.runs_dir)))
            print(f"[run_all] {variant} seed {seed}: strict F1 {rows[-1]['strict-f1']:.4f}, "
                  f"{rows[-1]['wall-seconds']:.0f} s", flush=True)
    markdown = table(rows, seeds)
    Path(args.out).write_text(json.dumps({"config": base, "seeds": seeds, "variants": {v: VARIANTS[v] for v in
                                          variants}, "rows": rows, "table": markdown,
                                          "sweep-seconds": time.time() - started}, indent=2) + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
