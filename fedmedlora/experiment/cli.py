"""`fedmedlora experiment`: zero-shot, single-site, centralized and federated training side by side, one command.

    fedmedlora experiment --run-config conf/ner-natural.toml [--run-config "k=v ..."] --name NAME \\
        [--settings zero-shot,single-site,centralized,federated] [--strategies fedavg,fed-medlora-plus] \\
        [--output results] [--app-dir .] [--resume]
    python -m fedmedlora.experiment ...   (the same)

The run config is merged and validated exactly as `fedmedlora run` does it (app defaults, then each --run-config in
order; relative paths made absolute), and every setting runs on it: the same model, task, sites (partitioning and
seed), local work per round, learning-rate schedule and evaluation split. What each setting is:

- zero-shot: the round-0 adapter (`initial_adapter_state` with run.seed; an encoder's head is untrained), scored once.
- single-site: one model per site, trained on that site's training split only for num-server-rounds rounds of a
  federated client's local work (same trainer code, fresh optimizer each round, same per-round seeds), in process.
- centralized: one client on the pooled training rows of every site, in process; each round it takes the
  federation's total optimizer steps of a round (clients-per-round x train.local-steps), or with train.local-epochs
  that many epochs over the pool.
- federated: each strategy (--strategies, default strategy.name) as a real Flower simulation through
  `fedmedlora run`, scored by its server-side evaluation after every round (evaluate.server must be on).

Every model is scored after every round on each site's `evaluate.split` and on the pooled split, with the task's
`score()` (`job.evaluate`, the code that scores federated rounds). The final round's model is the one in the table.
Details: `baselines.py` (the baselines), `federated.py` (the strategies), `report.py`
(the outputs).

Output, `<output>/<name>/`, rewritten after each model so a late failure keeps what was done:
    config.json          the resolved run config, the command line, settings, strategies, sites, versions (at start)
    table.md             the command, the budget and one row per model: the table metrics per site and pooled
                         (the task's headline first, then strict-f1 and lenient-f1), rounds, wall seconds
    results.csv          long format: setting, model, eval_site, metric, value, round (every numeric score)
    f1_per_round.png     the pooled headline metric per round, one line per model
    runs/                raw records: <model>/metrics.jsonl and final peft_<round>/ for the in-process settings,
                         federated-<strategy>/ (a whole `fedmedlora run` results folder), its .toml and .log
    models.json          each model's status, wall seconds and raw-record folder (what --resume reads)
--resume continues or extends an experiment folder with the same run config: a model it completed is kept as
recorded and not run again; one that failed or was never run is run now (a stopped federated run continues from its
saved state; any other leftover folder of it is kept aside as `<name>.failed-<n>`). So settings or strategies can be
added to an experiment later, and a crash costs only the model it interrupted. table.md lists every command.
Wall seconds: an in-process model's training and scoring of its rounds (zero-shot: scoring it once); a federated
model's whole `fedmedlora run`, start-up and round-0 scoring included. Exit code 0 when every model completed,
1 when one failed (the others still run), 2 for a config error (before any work).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..settings import ConfigError, Settings

SETTINGS = ("zero-shot", "single-site", "centralized", "federated")


@dataclass
class Plan:
    """Everything an experiment will do, validated before any model is loaded."""

    name: str
    out_dir: Path
    app_dir: Path
    config: dict[str, Any]  # the resolved flat run config (what `fedmedlora run` would pass to Flower)
    settings: Settings
    which: list[str]  # chosen settings, in SETTINGS order
    strategies: list[str]
    command: str
    sites: Any = None  # the sites preflight formed (the job reuses them)
    resume: bool = False  # continue the experiment already in out_dir (same run config)
    earlier: dict[str, Any] | None = None  # that experiment's config.json


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def make_plan(args: argparse.Namespace, command: str) -> Plan:
    """Merge and validate the run config as `fedmedlora run` does, and every choice of the experiment."""
    from ..launch.launcher import absolutize_paths, app_defaults, parse_overrides
    from ..preflight import check_run
    from ..run_config import load_settings
    from ..strategies import STRATEGIES

    problems: list[str] = []
    name = args.name.strip()
    if not name or "/" in name or name in (".", ".."):
        problems.append(f"--name {args.name!r}: give a folder name (no '/')")
    which = _split_list(args.settings)
    unknown = [s for s in which if s not in SETTINGS]
    if unknown or not which:
        problems.append(f"--settings {args.settings!r}: allowed values are {', '.join(SETTINGS)} (comma-separated)")
    app_dir = Path(args.app_dir).resolve()
    config = absolutize_paths({**app_defaults(app_dir), **parse_overrides(args.run_config)}, Path.cwd())
    settings = load_settings(config)
    strategies = _split_list(args.strategies) if args.strategies else [settings.strategy.name]
    if "federated" in which:
        for strategy in strategies:  # each strategy's own rules (its keys) are checked now, not after the baselines
            if strategy not in STRATEGIES:
                problems.append(f"--strategies: unknown strategy {strategy!r}; registered: {', '.join(STRATEGIES)}")
                continue
            try:
                load_settings({**config, "strategy.name": strategy})
            except ConfigError as err:
                problems.extend(f"strategy {strategy}: {p}" for p in err.problems)
        if not settings.evaluate.server:
            problems.append("key 'evaluate.server' = false: the federated settings are scored by the server-side "
                            "evaluation of every round; set it to true")
        if len(set(strategies)) != len(strategies):
            problems.append(f"--strategies {args.strategies!r}: a strategy is named twice")
    out_dir = Path(args.output).resolve() / name
    earlier = None
    if args.resume:
        earlier, resume_problems = _earlier_experiment(out_dir, settings)
        problems.extend(resume_problems)
    elif out_dir.exists() and any(out_dir.iterdir()):
        problems.append(f"--name {name!r}: {out_dir} already holds an experiment; choose another name, remove it, or "
                        "add --resume to continue it with the same run config")
    # model, LoRA targets, every data file, the sites (the runs write under out_dir, checked above)
    checked = check_run(settings, where="this machine", results=False)
    problems.extend(checked.problems)
    if problems:
        raise ConfigError(problems, "experiment")
    return Plan(name, out_dir, app_dir, config, settings, [s for s in SETTINGS if s in which], strategies, command,
                checked.sites, resume=args.resume, earlier=earlier)


def _earlier_experiment(out_dir: Path, settings: Settings) -> tuple[dict[str, Any] | None, list[str]]:
    """(the config.json of the experiment --resume continues, problems): it must exist and have this run config
    (only the keys a resumed run may change can differ). A key only one of the two has (the code gained or dropped
    an option since) is named on stderr, not refused: its default is what the new models run with."""
    import json

    from ..resume import changed_keys

    path = out_dir / "config.json"
    if not path.is_file():
        if out_dir.exists() and any(out_dir.iterdir()):
            return None, [f"--resume: {out_dir} has no config.json: it is not an experiment folder"]
        return None, []  # nothing there yet: a new experiment
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        original = earlier["run-config"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        return None, [f"--resume: {path} cannot be read ({err})"]
    now = settings.as_dict()
    one_sided = sorted(set(now) ^ set(original))
    if one_sided:
        print(f"fedmedlora experiment --resume: keys {', '.join(one_sided)} are not in both this run config and "
              f"{path} (options added or removed since); the models run now use today's defaults", file=sys.stderr)
    return earlier, [f"--resume: key '{key}' = {value!r}, but {path} was run with {then!r}"
                     for key, value, then in changed_keys(original, now, both_only=True)]


def _local_work(settings: Settings) -> str:
    batch = settings.train.batch_size * settings.train.grad_accum_steps
    if settings.train.local_steps > 0:
        return f"{settings.train.local_steps} optimizer steps of {batch} examples"
    return f"{settings.train.local_epochs:g} epochs (batches of {batch} examples)"


def _cap(limit: int) -> str:
    return f"at most {limit}" if limit else "all"


def header(plan: Plan, job: Any, site_stats: list[dict[str, Any]]) -> str:
    """table.md's preamble: what was run, how, on what, with which budget, on which machine."""
    from ..recorder import _versions
    from .baselines import centralized_settings

    s = plan.settings
    versions = _versions()
    primary = job.task.primary_metric
    typed = "strict" in primary and primary != "strict-f1"  # RE's headline: the table shows it and its lenient twin
    sites = "; ".join(f"site {e['site']} `{e['name']}` (train {e['train-examples']}, {s.evaluate.split} "
                      f"{e[s.evaluate.split + '-examples']})" for e in site_stats)
    lr = (f"{s.train.learning_rate_max:g}" if s.train.lr_schedule == "constant" or
          s.train.learning_rate_max == s.train.learning_rate_min else
          f"{s.train.learning_rate_max:g} to {s.train.learning_rate_min:g} ({s.train.lr_schedule} across rounds)")
    lines = [
        f"# Experiment `{plan.name}`: {', '.join(all_settings(plan))}",
        "",
        *(f"Command (from the project root): `{command}`" if i == 0 else f"Continued with: `{command}`"
          for i, command in enumerate(commands(plan))),
        "",
        f"- Model `{s.model.name}` ({job.family}, {job.task.trainer_name}), LoRA r={s.lora.r}, alpha={s.lora.alpha:g} "
        f"on `{s['lora.target-modules']}`; task `{s.data.task}`; datasets `{s['data.datasets']}`.",
        f"- Sites (`data.partitioning = {s.data.partitioning}`, run.seed {s.run.seed}): {sites}.",
        f"- Budget: {s.num_server_rounds} rounds; a round is {_local_work(s)} per client "
        f"(single-site: the same on its own site; centralized: {_local_work(centralized_settings(s))} on the pool); "
        f"learning rate {lr}; federated: {s.clients_per_round} of {s.data.num_sites} sites per round"
        + (f"; strategies {', '.join(all_strategies(plan))}" if all_strategies(plan) else "") + ".",
        f"- Sizes: {s.data.max_length} tokens per example (longer ones cut), "
        f"{_cap(s.data.max_train_examples)} training and {_cap(s.data.max_eval_examples)} evaluation examples per "
        f"site; base weights {s.model.dtype}" + (f", {s.model.quantization}-bit" if s.model.quantization else "")
        + ".",
        *(["- QA benchmarks after every round (`evaluate.qa-benchmarks`): "
           + ", ".join(f"{name} {size or 'all'}" for name, size in s.qa_benchmarks)
           + " questions, fixed samples (`eval.py --limit`'s, seed 2024), FlowerTune's prompt; `acc` = generate "
           "accuracy (FlowerTune's protocol, unparseable answers wrong), `loglik acc` = most probable option; "
           "`accuracy_per_round.png`."] if s.qa_benchmarks else []),
        f"- Scores: the final round's model on each site's `{s.evaluate.split}` split and on the pooled split, by the "
        f"task's `score()`; primary metric `{primary}`. Every round of every model: `results.csv`, "
        "`f1_per_round.png`." + (f" Table columns: `{primary}` and `{primary.replace('strict', 'lenient')}`; the "
                                 "types-collapsed `strict-f1` and `lenient-f1` and every other score are in "
                                 "`results.csv`." if typed else ""),
        "- Wall s: an in-process model's training and scoring of its rounds (zero-shot: scoring it once); a federated "
        "model's whole `fedmedlora run` (start-up and round-0 scoring included).",
        f"- Measured on {platform.platform()}, {os.cpu_count()} CPUs (shared), {datetime.now():%Y-%m-%d}; "
        f"torch {versions.get('torch')}, transformers {versions.get('transformers')}, peft {versions.get('peft')}, "
        f"flwr {versions.get('flwr')}.",
    ]
    return "\n".join(lines)


def commands(plan: Plan) -> list[str]:
    """Every command that wrote the experiment folder, the first first."""
    earlier = (plan.earlier or {}).get("commands") or ([plan.earlier["command"]] if plan.earlier else [])
    return [*earlier, plan.command]


def _merged(earlier: list[str], now: list[str], order: tuple[str, ...] | None = None) -> list[str]:
    merged = [*earlier, *(x for x in now if x not in earlier)]
    return sorted(merged, key=order.index) if order else merged


def all_settings(plan: Plan) -> list[str]:
    """The settings the folder holds once this command is done: the earlier commands' and this one's."""
    return _merged((plan.earlier or {}).get("settings", []), plan.which, SETTINGS)


def all_strategies(plan: Plan) -> list[str]:
    return _merged((plan.earlier or {}).get("strategies", []), plan.strategies if "federated" in plan.which else [])


def _write_config(plan: Plan, job: Any, site_stats: list[dict[str, Any]]) -> None:
    from ..recorder import _versions, write_json_atomic
    from .baselines import centralized_settings

    central = centralized_settings(plan.settings)
    write_json_atomic(plan.out_dir / "config.json", {
        "name": plan.name,
        "command": commands(plan)[0],
        "commands": commands(plan),
        "argv": sys.argv,
        "cwd": str(Path.cwd()),
        "app-dir": str(plan.app_dir),
        "settings": all_settings(plan),
        "strategies": all_strategies(plan),
        "run-config": plan.settings.as_dict(),
        "federated-overrides": "strategy.name, run.results-dir and run.name per strategy: runs/federated-<s>.toml",
        "centralized": {"train.local-steps": central.train.local_steps,
                        "train.local-epochs": central.train.local_epochs},
        "family": job.family,
        "trainer": job.task.trainer_name,
        "labels": job.labels,
        "primary-metric": job.task.primary_metric,
        "sites": site_stats,
        "versions": _versions(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "started": (plan.earlier or {}).get("started") or datetime.now().isoformat(timespec="seconds"),
        **({"continued": [*(plan.earlier or {}).get("continued", []), datetime.now().isoformat(timespec="seconds")]}
           if plan.earlier else {}),
    })


def run_experiment(plan: Plan, job: Any = None) -> int:
    """Run every chosen setting in turn, rewriting the outputs after each model. Returns the exit code."""
    from ..data.sites import site_statistics
    from ..job import Job
    from .baselines import Baselines
    from .federated import run_federated
    from .report import ModelResult, plot_title, recorded_models, set_aside, write_report

    started = time.perf_counter()
    job = job if job is not None else Job(plan.settings)
    site_stats = site_statistics(job.sites, plan.settings.data.task)
    site_names = [site.name for site in job.sites]
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    runs_dir = plan.out_dir / "runs"
    runs_dir.mkdir(exist_ok=True)
    _write_config(plan, job, site_stats)
    preamble = header(plan, job, site_stats)
    # --resume: the models the folder records stay in the table; the completed ones are not run again
    results: list[ModelResult] = recorded_models(plan.out_dir, site_names) if plan.resume else []
    done = {(r.setting, r.model) for r in results if r.status == "completed"}
    strategies = all_strategies(plan)

    def place(r: ModelResult) -> tuple[int, int]:  # the table's order: settings, then sites or strategies
        within = (site_names.index(r.model) if r.setting == "single-site" and r.model in site_names else
                  strategies.index(r.model) if r.setting == "federated" and r.model in strategies else 0)
        return SETTINGS.index(r.setting) if r.setting in SETTINGS else len(SETTINGS), within

    def report() -> None:
        write_report(plan.out_dir, results, site_names=site_names, primary=job.task.primary_metric,
                     header=preamble, title=plot_title(plan.name, plan.settings.data.task, plan.settings.model.name),
                     rounds=plan.settings.num_server_rounds)

    if plan.resume:  # the header names every command and setting even if every model is done already
        report()

    def attempt(setting: str, model: str, work: Any, run_name: str = "") -> None:
        if (setting, model) in done:
            print(f"[experiment] {setting} {model}: completed earlier; kept as recorded", flush=True)
            return
        if plan.resume and run_name and (aside := set_aside(runs_dir / run_name)):
            print(f"[experiment] {setting} {model}: its earlier attempt kept as {aside}", flush=True)
        try:
            result = work()
        except Exception as err:  # one model failing must not lose the others; the traceback says why
            traceback.print_exc()
            result = ModelResult(setting, model, status=f"failed: {type(err).__name__}: {err}".splitlines()[0])
        results[:] = sorted([*(r for r in results if (r.setting, r.model) != (setting, model)), result], key=place)
        report()
        print(f"[experiment] {setting} {model}: {result.status} ({result.wall_seconds:.0f} s); "
              f"{plan.out_dir / 'table.md'} updated", flush=True)

    print(f"[experiment] {plan.name}: {', '.join(plan.which)}; results in {plan.out_dir}", flush=True)
    baselines = None
    if {"zero-shot", "single-site", "centralized"} & set(plan.which):
        baselines = Baselines(job, runs_dir)
    if "zero-shot" in plan.which:
        attempt("zero-shot", "-", baselines.zero_shot, "zero-shot")
    if "single-site" in plan.which:
        for site_id, site_name in enumerate(site_names):
            attempt("single-site", site_name, lambda k=site_id: baselines.single_site(k),
                    baselines.single_site_run_name(site_id))
    if "centralized" in plan.which:
        attempt("centralized", "all sites pooled", baselines.centralized, "centralized")
    if "federated" in plan.which:
        for strategy in plan.strategies:  # a leftover run folder is handled by run_federated (it may continue)
            attempt("federated", strategy, lambda s=strategy: run_federated(
                plan.app_dir, plan.config, s, runs_dir, site_names, resume=plan.resume))
    failed = [f"{r.setting} {r.model}" for r in results if r.status != "completed"]
    print(f"[experiment] done in {time.perf_counter() - started:.0f} s: {len(results) - len(failed)} models completed"
          + (f", failed: {', '.join(failed)}" if failed else "") + f"; see {plan.out_dir / 'table.md'}", flush=True)
    return 1 if failed else 0


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Zero-shot, single-site, centralized and federated training "
                                "side by side on the same model, task, sites and seeds (see fedmedlora/experiment/).")
    p.add_argument("--run-config", "-c", action="append", default=[],
                   help="a preset TOML file or \"key=value ...\" pairs; repeatable, later ones win (as fedmedlora run)")
    p.add_argument("--name", required=True, help="experiment folder name under --output")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma-separated settings to run (default: {','.join(SETTINGS)})")
    p.add_argument("--strategies", default="",
                   help="comma-separated federated strategies (default: the run config's strategy.name)")
    p.add_argument("--output", default="results", help="parent folder of the experiment folder (default: results)")
    p.add_argument("--app-dir", default=".", help="the Flower app folder for the federated runs (default: .)")
    p.add_argument("--resume", action="store_true",
                   help="continue or extend the experiment in the folder (same run config): models it completed are "
                        "kept, the others run")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m fedmedlora.experiment") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(prog).parse_args(argv)
    try:
        plan = make_plan(args, shlex.join([*prog.split(), *argv]))
        from ..job import Job

        job = Job(plan.settings, plan.sites)  # the model's config and the sites preflight formed
    except (ConfigError, RuntimeError, ValueError) as err:
        print(f"fedmedlora experiment: {err}", file=sys.stderr)
        return 2
    return run_experiment(plan, job)


if __name__ == "__main__":
    sys.exit(main())
