"""F1 against epsilon (site-level and example-level DP) and against a poisoning site, on the default NER run
(results/privacy/README.md).

Every run is the default run (`fedmedlora run .`: NCBI-disease + BC5CDR over 3 IID sites, MiniLM-L6 + LoRA r=8,
3 rounds x 30 local steps of 16 sentences) with one change, through the real ServerApp and ClientApp code in this
process (`fedmedlora.launch.grid`; `fedmedlora run` gives the same numbers with a Ray start per run):

    OMP_NUM_THREADS=1 python results/privacy/run_table.py                   # every variant, one after the other
    OMP_NUM_THREADS=1 python results/privacy/run_table.py --variants "site DP eps 8;example DP eps 8"

The poisoning variants replay the issue's attack: site 2 trains honestly, then claims num-examples = 10**9 and sends
global + 10**4 x (its update). Runs land in results/runs/privacy-<variant>/; a finished run is reused, so an
interrupted sweep resumes. Each run's summary.json, strategy.json and metrics.jsonl are copied to
results/privacy/runs/<variant>/, and results/privacy/results.json (rows and the markdown table) is rewritten after
every run.
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

POISONED_NODE = 3  # the in-process grid's node for site 2
SITE = {"privacy.dp": "site", "privacy.clipping-norm": 0.1}  # C = 0.1 on updates of norm ~5-6
EXAMPLE = {"privacy.dp": "example", "privacy.clipping-norm": 1.0}  # C = 1 on per-example gradients of norm ~2-5
UNSCREENED = {"strategy.weight-cap": False, "strategy.norm-bound": 0.0}

VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {  # name: (run-config overrides, site 2 poisons)
    "no DP": ({}, False),
    "site DP eps 8": ({**SITE, "privacy.target-epsilon": 8.0}, False),
    "site DP eps 3": ({**SITE, "privacy.target-epsilon": 3.0}, False),
    "site DP eps 1": ({**SITE, "privacy.target-epsilon": 1.0}, False),
    "example DP eps 8": ({**EXAMPLE, "privacy.target-epsilon": 8.0}, False),
    "example DP eps 3": ({**EXAMPLE, "privacy.target-epsilon": 3.0}, False),
    "example DP eps 1": ({**EXAMPLE, "privacy.target-epsilon": 1.0}, False),
    "poisoned, no screening": (UNSCREENED, True),
    "poisoned, cap and norm bound 10 (the old default)": ({"strategy.norm-bound": 10.0}, True),
    "poisoned, krum": ({"strategy.name": "krum"}, True),
    "poisoned, defaults (cap, norm bound 3)": ({}, True),
    "site DP, clipping only (z 1e-6)": ({**SITE, "privacy.noise-multiplier": 1e-6}, False),
}


def slug(variant: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in variant).strip("-").replace("--", "-")


def poisoning_grid(base: Any) -> Any:
    """An in-process grid whose node 3 replays the issue's attack on its honest reply."""
    import numpy as np

    from fedmedlora.wire import from_array_record, to_array_record

    class PoisoningGrid(base):
        def send_and_receive(self, messages, *, timeout=None):
            messages = list(messages)
            sent = {m.metadata.dst_node_id: m for m in messages}
            replies = super().send_and_receive(messages, timeout=timeout)
            for reply in replies:
                node = reply.metadata.src_node_id
                if node != POISONED_NODE or reply.has_error() or "arrays" not in reply.content:
                    continue
                received = from_array_record(sent[node].content["arrays"])
                trained = from_array_record(reply.content["arrays"])
                dtype = next(iter(reply.content["arrays"].values())).dtype
                reply.content["arrays"] = to_array_record(
                    {k: received[k] + np.float32(1e4) * (trained[k] - received[k]) for k in trained}, dtype)
                reply.content["metrics"]["num-examples"] = 10 ** 9
            return replies

    return PoisoningGrid


def run(config: dict[str, Any], poisoned: bool) -> None:
    from flwr.app import Context, RecordDict

    from fedmedlora.client_app import app as client_app
    from fedmedlora.launch.grid import InProcessGrid, set_task_identity
    from fedmedlora.run_config import load_settings
    from fedmedlora.server_app import run_server

    settings = load_settings(config)
    grid_class = poisoning_grid(InProcessGrid) if poisoned else InProcessGrid
    grid = grid_class(client_app, config, settings.data.num_sites)
    set_task_identity(grid.run_id, InProcessGrid.SERVER_NODE_ID)
    run_server(grid, Context(run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config))


def noise_multiplier(privacy: dict[str, Any]) -> float | None:
    """The server's z (site-level DP), else the largest of the sites' z (example-level DP: each site's own)."""
    if privacy.get("noise-multiplier") is not None:
        return privacy["noise-multiplier"]
    return max((site["noise-multiplier"] for site in privacy.get("sites", {}).values()), default=None)


def one_run(variant: str, runs_dir: Path, out_dir: Path) -> dict[str, Any]:
    from fedmedlora.recorder import read_metrics

    overrides, poisoned = VARIANTS[variant]
    name = f"privacy-{slug(variant)}"
    run_dir = runs_dir / name
    summary_path = run_dir / "summary.json"
    if not (summary_path.exists() and json.loads(summary_path.read_text())["status"] == "completed"):
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run({**overrides, "run.name": name, "run.results-dir": str(runs_dir), "evaluate.checkpoint-every": 0},
            poisoned)
    kept = out_dir / "runs" / slug(variant)
    kept.mkdir(parents=True, exist_ok=True)
    for file in ("summary.json", "strategy.json", "metrics.jsonl"):
        shutil.copy(run_dir / file, kept / file)
    summary = json.loads(summary_path.read_text())
    records = read_metrics(run_dir)
    pooled = [r["server-eval"]["pooled"] for r in records]
    privacy = records[-1].get("privacy", {})
    return {
        "variant": variant, "overrides": overrides, "poisoned-site": 2 if poisoned else None,
        "strict-f1": pooled[-1]["strict-f1"], "lenient-f1": pooled[-1]["lenient-f1"],
        "strict-f1-per-round": [p["strict-f1"] for p in pooled],
        "epsilon": privacy.get("epsilon"), "delta": privacy.get("delta"),
        "noise-multiplier": noise_multiplier(privacy),
        "clips": summary.get("total-clips", sum(r.get("clips", 0) for r in records)),
        "exclusions": sum(r.get("exclusions", 0) for r in records),
        "krum-selected": [r.get("krum-selected") for r in records[1:]] if "krum-selected" in records[-1] else None,
        "wall-seconds": summary["wall-seconds"], "kept": str(kept.relative_to(ROOT)),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | ε (δ = 1e-5) | noise multiplier | strict F1 | lenient F1 | strict F1 per round (0-3) | "
             "clips | exclusions |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        eps = "–" if r["epsilon"] is None else (f"{r['epsilon']:.3g}" if r["epsilon"] < 1e4 else f"{r['epsilon']:.1e}")
        z = "–" if r["noise-multiplier"] is None else f"{r['noise-multiplier']:.3g}"
        lines.append(f"| {r['variant']} | {eps} | {z} | {r['strict-f1']:.4f} | {r['lenient-f1']:.4f} | "
                     + ", ".join(f"{x:.3f}" for x in r["strict-f1-per-round"])
                     + f" | {r['clips']} | {r['exclusions']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="all", help="variant names separated by ';' (run in that order), or all")
    parser.add_argument("--runs-dir", default=str(ROOT / "results" / "runs"))
    parser.add_argument("--out-dir", default=str(ROOT / "results" / "privacy"))
    args = parser.parse_args(argv)
    variants = list(VARIANTS) if args.variants == "all" else [v.strip() for v in args.variants.split(";")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    out_dir = Path(args.out_dir)
    results_path = out_dir / "results.json"
    previous = json.loads(results_path.read_text())["rows"] if results_path.exists() else []
    rows = {r["variant"]: r for r in previous}
    for variant in variants:
        rows[variant] = one_run(variant, Path(args.runs_dir), out_dir)
        print(f"[run_table] {variant}: strict F1 {rows[variant]['strict-f1']:.4f}, "
              f"{rows[variant]['wall-seconds']:.0f} s", flush=True)
        ordered = [rows[v] for v in VARIANTS if v in rows]  # written after every run: a later failure loses none
        results_path.write_text(json.dumps({"rows": ordered, "table": table(ordered)}, indent=2) + "\n")
    print(table([rows[v] for v in VARIANTS if v in rows]))


if __name__ == "__main__":
    main()
