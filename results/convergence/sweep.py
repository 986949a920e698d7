"""The strategy comparison at convergence (issue 15): every strategy until its pooled score stops improving, on three
settings, several seeds, beside centralized and single-site training with the same optimizer steps per round.

Settings (each a preset plus COMMON): `ner-natural` (conf/ner-natural.toml: NCBI-disease and BC5CDR, one site each),
`ner-dirichlet` (conf/ner-dirichlet.toml: 3 sites, Dirichlet 0.5 over each sentence's dominant entity type) and
`re-chemprot` (conf/re-chemprot.toml: ChemProt relation classification, 3 sites, Dirichlet 0.5 over the relation
type). COMMON: a constant learning rate (so a round means the same thing whatever the cap), at most CAP rounds, and
the stop rule `evaluate.plateau-rounds` = 3, `-delta` = 0.003: a run ends when its best pooled score of the last 3
rounds is within 0.3 points of its best before them. Baselines stop by the same rule. `centralized` does the whole
federation's optimizer steps of a round on the pooled sites each round; `single-site` one site's steps on its own
data (`fedmedlora experiment`'s baselines). ChemProt adds variants that test why federated training collapses to the
majority class there (label skew: IID sites; the learning rate; client drift: fewer local steps, FedProx; the head).

Resumable: every run has its folder under --runs-dir; a finished one (its summary.json or done.json says so) is read,
not rerun, and an unfinished one is started again from round 0. results.json, table.md and the plots are rewritten
after every run, so stopping the sweep loses at most the run in progress.

    OMP_NUM_THREADS=1 python results/convergence/sweep.py                         # everything: days on 2 CPU cores
    OMP_NUM_THREADS=1 python results/convergence/sweep.py --settings ner-natural --seeds 42 --variants fedavg,ffa-lora
    OMP_NUM_THREADS=1 python results/convergence/sweep.py --pilot                 # minutes: the plumbing, tiny data
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CAP = 30
LOCAL_STEPS = 30  # train.local-steps in pyproject.toml, which the presets keep: a site's optimizer steps a round
COMMON = {"train.lr-schedule": "constant", "num-server-rounds": CAP, "evaluate.plateau-rounds": 3,
          "evaluate.plateau-delta": 0.003, "evaluate.checkpoint-every": 0, "data.max-eval-examples": 300}
SETTINGS: dict[str, dict[str, Any]] = {
    "ner-natural": {"conf": "conf/ner-natural.toml", "overrides": {}, "ranks": "8,4"},
    "ner-dirichlet": {"conf": "conf/ner-dirichlet.toml", "overrides": {}, "ranks": "8,4,2"},
    "re-chemprot": {"conf": "conf/re-chemprot.toml",
                    "overrides": {"train.learning-rate-max": 2e-3, "train.learning-rate-min": 2e-3},
                    "ranks": "8,4,2"},
}
# Pilot: the same code on a sliver of the data, to show the sweep works (not a result).
PILOT = {"num-server-rounds": 4, "evaluate.plateau-rounds": 1, "evaluate.plateau-delta": 0.05,
         "data.max-train-examples": 48, "data.max-eval-examples": 16, "train.local-steps": 3, "train.batch-size": 8,
         "data.max-length": 64}


def variants(setting: str) -> dict[str, dict[str, Any]]:
    """Federated variants (run config overrides) and the two baselines (kind in the value)."""
    ranks = SETTINGS[setting]["ranks"]
    out: dict[str, dict[str, Any]] = {
        "fedavg": {"strategy.name": "fedavg"},
        "fedavg (product)": {"strategy.name": "fedavg", "strategy.lora-aggregation": "product"},
        "fed-medlora-plus": {"strategy.name": "fed-medlora-plus"},
        "fedprox": {"strategy.name": "fedprox"},
        "fedadam": {"strategy.name": "fedadam"},
        "fedyogi": {"strategy.name": "fedyogi"},
        "fedadagrad": {"strategy.name": "fedadagrad"},
        "ffa-lora": {"strategy.name": "ffa-lora"},
        "fedsa-lora": {"strategy.name": "fedsa-lora"},
        "flexlora": {"strategy.name": "flexlora", "lora.site-ranks": ranks},  # ranks: SETTINGS
        "fed-sb (r=32)": {"strategy.name": "fed-sb", "lora.r": 32, "lora.alpha": 64.0},
        # both papers train their reduced parameter sets at larger learning rates than LoRA's (the default is 3e-3)
        "ffa-lora (lr 1e-2)": {"strategy.name": "ffa-lora", "train.learning-rate-max": 1e-2,
                               "train.learning-rate-min": 1e-2},
        "fed-sb (r=32 lr 1e-2)": {"strategy.name": "fed-sb", "lora.r": 32, "lora.alpha": 64.0,
                                   "train.learning-rate-max": 1e-2, "train.learning-rate-min": 1e-2},
        "fedavg int8": {"strategy.name": "fedavg", "strategy.wire-dtype": "int8"},
        "fedavg int4": {"strategy.name": "fedavg", "strategy.wire-dtype": "int4"},
        # tau near a LoRA round's median |update| (results/server-lr): the server optimisers that learn there
        "fedadam (tau 0.01 lr 0.1)": {"strategy.name": "fedadam", "strategy.server-learning-rate": 0.1,
                                       "strategy.tau": 0.01},
        "fedyogi (tau 0.01 lr 0.1)": {"strategy.name": "fedyogi", "strategy.server-learning-rate": 0.1,
                                       "strategy.tau": 0.01},
        # lr 0.1 peaks at round 7 and falls over 10 rounds: a smaller server step
        "fedadam (tau 0.01 lr 0.03)": {"strategy.name": "fedadam", "strategy.server-learning-rate": 0.03,
                                        "strategy.tau": 0.01},
        "fedyogi (tau 0.01 lr 0.03)": {"strategy.name": "fedyogi", "strategy.server-learning-rate": 0.03,
                                        "strategy.tau": 0.01},
        # the lr 0.1 run's fall after round 7: server momentum (beta_1 0.9) carrying it past the peak? Without it
        "fedadam (tau 0.01 lr 0.1 beta1 0)": {"strategy.name": "fedadam", "strategy.server-learning-rate": 0.1,
                                               "strategy.tau": 0.01, "strategy.beta-1": 0.0},
        "centralized": {"kind": "centralized"},
        "single-site": {"kind": "single-site"},
    }
    # each site as many steps a round as centralized takes on the pool (sites x the default 30): does a FedAvg round
    # then move as far as a centralized round? (one rank per site in `ranks`)
    steps = LOCAL_STEPS * len(ranks.split(","))
    out[f"fedavg {steps} local steps"] = {"strategy.name": "fedavg", "train.local-steps": steps}
    if setting == "re-chemprot":  # why does FedAvg predict the majority class here?
        out.update({
            "fedavg IID sites": {"strategy.name": "fedavg", "data.partitioning": "iid"},
            "fedavg lr 5e-4": {"strategy.name": "fedavg", "train.learning-rate-max": 5e-4,
                               "train.learning-rate-min": 5e-4},
            "fedavg 10 local steps": {"strategy.name": "fedavg", "train.local-steps": 10},
            "fedprox mu 0.1": {"strategy.name": "fedprox", "strategy.proximal-mu": 0.1},
        })
    return out


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").replace("--", "-")


def base_config(setting: str, pilot: bool) -> dict[str, Any]:
    from fedmedlora.settings import load_toml_overrides

    spec = SETTINGS[setting]
    config = {**load_toml_overrides(str(ROOT / spec["conf"])), **COMMON, **spec["overrides"]}
    lr = config.get("train.learning-rate-max", 3e-3)
    config["train.learning-rate-min"] = lr  # constant
    return {**config, **(PILOT if pilot else {})}


def majority_share(pooled: dict[str, Any]) -> float | None:
    """The share of predictions (relations, entities) of the most predicted type: 1.0 is one class for everything."""
    predicted = {k.split("/")[0]: v for k, v in pooled.items() if k.endswith("/strict-tp")}
    if not predicted:
        return None
    counts = {t: pooled[f"{t}/strict-tp"] + pooled[f"{t}/strict-fp"] for t in predicted}
    total = sum(counts.values())
    return max(counts.values()) / total if total else None


def summarise(records: list[dict[str, Any]], key: str, mib: list[float], capped: bool) -> dict[str, Any]:
    f1 = [r["server-eval"]["pooled"][key] for r in records]
    final = f1[-1]
    reach = next((i for i, v in enumerate(f1) if v >= 0.95 * final), len(f1) - 1) if final > 0 else 0
    sites = records[-1]["server-eval"].get("sites", {})  # each site's own test split, keyed by its place
    return {"metric": key, "f1-per-round": f1, "mib-per-round": mib, "rounds": len(f1) - 1, "capped": capped,
            "final-f1": final, "best-f1": max(f1), "round-95": reach, "mib-95": mib[reach],
            "final-site-f1": {k: sites[k][key] for k in sorted(sites, key=int) if key in sites[k]},
            "majority-share-per-round": [majority_share(r["server-eval"]["pooled"]) for r in records]}


BUDGET_KEYS = ("num-server-rounds", "data.max-eval-examples")


def same_budget(recorded: dict[str, Any], config: dict[str, Any]) -> bool:
    """A finished run is reused only under the cap and evaluation size asked for now (--cap, --eval-examples)."""
    return all(recorded.get(k) == config[k] for k in BUDGET_KEYS)


def federated(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    from fedmedlora.launch.grid import run_in_process
    from fedmedlora.recorder import read_metrics

    summary = run_dir / "summary.json"
    done = json.loads(summary.read_text()) if summary.exists() else {}
    if not (done.get("status") == "completed"
            and same_budget(json.loads((run_dir / "config.json").read_text())["run-config"], config)):
        if run_dir.exists():
            shutil.rmtree(run_dir)  # an interrupted run starts again
        run_in_process({**config, "run.name": run_dir.name, "run.results-dir": str(run_dir.parent)})
        done = json.loads(summary.read_text())
    records = read_metrics(run_dir)
    mib = [r["comm"]["total-sent-mib"] + r["comm"]["total-received-mib"] for r in records]
    row = summarise(records, done["primary-metric"], mib, capped="stopped-at-plateau" not in done)
    return {**row, "wall-seconds": done["wall-seconds"]}


def baseline(kind: str, config: dict[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """centralized (one row) or single-site (a row per site), stopped by the same plateau rule."""
    from fedmedlora.experiment.baselines import Baselines
    from fedmedlora.job import get_job
    from fedmedlora.recorder import read_metrics
    from fedmedlora.run_config import load_settings

    marker = run_dir / "done.json"
    if not (marker.exists() and same_budget(json.loads(marker.read_text()).get("budget", {}), config)):
        if run_dir.exists():
            shutil.rmtree(run_dir)
        start = time.time()
        job = get_job(load_settings(config))
        runner = Baselines(job, run_dir, log=print)
        results = [runner.centralized()] if kind == "centralized" else \
            [runner.single_site(k) for k in range(len(job.sites))]
        marker.write_text(json.dumps({"metric": job.task.primary_metric,
                                      "runs": [r.run_dir.removeprefix("runs/") for r in results],
                                      "models": [r.model for r in results], "wall-seconds": time.time() - start,
                                      "budget": {k: config[k] for k in BUDGET_KEYS}}))
    done = json.loads(marker.read_text())
    rows = []
    for name, model in zip(done["runs"], done["models"]):
        records = read_metrics(run_dir / name)
        row = summarise(records, done["metric"], [0.0] * len(records),
                        capped=len(records) - 1 >= config["num-server-rounds"])
        rows.append({**row, "model": model, "wall-seconds": done["wall-seconds"] / len(done["runs"])})
    return rows


def mean_std(values: list[float], digits: int = 4) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def per_site(rows: list[dict[str, Any]]) -> str:
    """Mean final F1 on each site's own test split, in site order ("0.710 / 0.705")."""
    sites = sorted({k for r in rows for k in r.get("final-site-f1", {})}, key=int)
    return " / ".join(f"{statistics.mean(r['final-site-f1'][k] for r in rows if k in r.get('final-site-f1', {})):.3f}"
                      for k in sites) or "–"


def row_key(row: dict[str, Any]) -> tuple[str, str, int]:
    """What a run of the sweep writes: a baseline's rows (one per site) share it."""
    return row["setting"], row["variant"], row["seed"]


def row_label(row: dict[str, Any]) -> str:
    """A row's line in the table and the plots: the variant, and for a baseline its model (e.g. one site)."""
    return row["variant"] + (f" {row['model']}" if "model" in row else "")


def table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        group = [r for r in rows if r["setting"] == setting]
        lines += [f"### {setting}", "",
                  f"Metric: pooled `{group[0]['metric']}` (server-side evaluation); rounds until the plateau rule "
                  f"(capped: the cap of {group[0].get('cap', CAP)} rounds came first); "
                  f"{group[0].get('eval-examples-per-site', COMMON['data.max-eval-examples'])} evaluation examples "
                  "per site; mean ± std over seeds. fedsa-lora is scored personalised (the global A with each "
                  "site's own B, on that site's test split: the run's federated evaluation). Per site: the mean "
                  "final F1 on each site's own test split, in site order (a single-site model's comparator is its own "
                  "site's).", "",
                  "| variant | seeds | final F1 | per site | rounds | capped | round to 95% of final | MiB to 95% "
                  "| MiB total | top-class share |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for variant in dict.fromkeys(row_label(r) for r in group):
            rs = [r for r in group if row_label(r) == variant]
            lines.append(f"| {variant} | {len(rs)} | {mean_std([r['final-f1'] for r in rs])} | {per_site(rs)} | "
                         f"{mean_std([r['rounds'] for r in rs], 1)} | {sum(r['capped'] for r in rs)}/{len(rs)} | "
                         f"{mean_std([r['round-95'] for r in rs], 1)} | {mean_std([r['mib-95'] for r in rs], 2)} | "
                         f"{mean_std([r['mib-per-round'][-1] for r in rs], 2)} | "
                         f"{mean_std([r['majority-share-per-round'][-1] for r in rs], 2)} |")
        central = [r["final-f1"] for r in group if r["variant"] == "centralized"]
        if central:
            gap = statistics.mean(central) - 0.02
            close = sorted({r["variant"] for r in group if r.get("kind") == "federated"
                            and statistics.mean([x["final-f1"] for x in group if x["variant"] == r["variant"]])
                            >= gap})
            lines += ["", f"Within 2 F1 points of centralized ({statistics.mean(central):.4f}): "
                      + (", ".join(close) if close else "none") + "."]
        lines.append("")
    return "\n".join(lines)


def plots(rows: list[dict[str, Any]], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for setting in dict.fromkeys(r["setting"] for r in rows):
        group = [r for r in rows if r["setting"] == setting]
        fig, (by_round, by_mib) = plt.subplots(1, 2, figsize=(13, 5))
        labels = list(dict.fromkeys(row_label(r) for r in group))
        for n, variant in enumerate(labels):
            rs = [r for r in group if row_label(r) == variant]
            length = min(len(r["f1-per-round"]) for r in rs)  # mean over seeds up to the shortest run
            f1 = [statistics.mean(r["f1-per-round"][i] for r in rs) for i in range(length)]
            mib = [statistics.mean(r["mib-per-round"][i] for r in rs) for i in range(length)]
            seeds = len({r["seed"] for r in rs})
            # one colour per line (the default cycle repeats after 10); baselines dashed
            style = {"color": plt.cm.tab20(n % 20), "marker": ".",
                     "linestyle": "-" if rs[0]["kind"] == "federated" else "--"}
            by_round.plot(range(length), f1, label=f"{variant} ({seeds} seed{'s' * (seeds > 1)})", **style)
            if rs[0]["kind"] == "federated":
                by_mib.plot(mib, f1, **style)
        by_round.set(xlabel="round", ylabel=f"pooled {group[0]['metric']}", title=f"{setting}: F1 vs round")
        by_mib.set(xlabel="MiB sent and received (cumulative)", ylabel=f"pooled {group[0]['metric']}",
                   title=f"{setting}: F1 vs MiB", xscale="symlog")
        by_round.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / f"{setting}.png", dpi=110)
        plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--seeds", default="42,7,1")
    parser.add_argument("--variants", default="all", help="comma-separated variant names, or all")
    parser.add_argument("--runs-dir", default=str(ROOT / "results" / "runs" / "convergence"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--pilot", action="store_true", help="tiny data and a cap of 4 rounds: checks the plumbing")
    parser.add_argument("--cap", type=int, help=f"at most this many rounds (default {CAP}); a shorter budget, "
                        "recorded in every row and table header")
    parser.add_argument("--eval-examples", type=int,
                        help=f"evaluation examples per site (default {COMMON['data.max-eval-examples']})")
    args = parser.parse_args(argv)
    from fedmedlora.recorder import write_text_atomic  # a sweep stopped mid-write keeps the previous results.json
    settings = [s for s in args.settings.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / ("pilot.json" if args.pilot else "results.json")
    rows: list[dict[str, Any]] = json.loads(results.read_text())["rows"] if results.exists() else []
    for setting in settings:
        if setting not in SETTINGS:
            raise SystemExit(f"unknown setting {setting!r}; known: {list(SETTINGS)}")
        chosen = variants(setting)
        names = list(chosen) if args.variants == "all" else [v.strip() for v in args.variants.split(",")]
        unknown = [v for v in names if v not in chosen]
        if unknown:  # variant names hold no commas, so a comma always separates two
            raise SystemExit(f"unknown variants {unknown} for {setting}; known: {list(chosen)}")
        for seed in seeds:
            for variant in names:
                spec = dict(chosen[variant])
                kind = spec.pop("kind", "federated")
                config = {**base_config(setting, args.pilot), **spec, "run.seed": seed}
                if args.cap:
                    config["num-server-rounds"] = args.cap
                if args.eval_examples:
                    config["data.max-eval-examples"] = args.eval_examples
                run_dir = Path(args.runs_dir) / ("pilot" if args.pilot else "") / setting / f"{slug(variant)}-s{seed}"
                run_dir.parent.mkdir(parents=True, exist_ok=True)
                start = time.time()
                new = ([{**federated(config, run_dir), "kind": kind}] if kind == "federated"
                       else [{**r, "kind": kind} for r in baseline(kind, config, run_dir)])
                key = (setting, variant, seed)
                at = next((i for i, r in enumerate(rows) if row_key(r) == key), len(rows))
                rows = [r for r in rows if row_key(r) != key]  # a rerun keeps its place
                rows[at:at] = [{"setting": setting, "variant": variant, "seed": seed,
                                "cap": config["num-server-rounds"],
                                "eval-examples-per-site": config["data.max-eval-examples"],
                                "run-dir": str(run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir),
                                **r} for r in new]
                write_text_atomic(results, json.dumps({"common": COMMON, "pilot": args.pilot, "rows": rows},
                                                     indent=2) + "\n")
                write_text_atomic(out_dir / ("pilot.md" if args.pilot else "table.md"), table(rows))
                if not args.pilot:
                    plots(rows, out_dir)
                print(f"[sweep] {setting} / {variant} / seed {seed}: final "
                      + ", ".join(f"{r['final-f1']:.4f}" for r in new) + f" after {new[0]['rounds']} rounds "
                      f"({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
