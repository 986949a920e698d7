"""An experiment's final models on bigger QA samples, scored by eval.py, side by side in one table.

    python -m fedmedlora.experiment.qa_eval results/llm-qa-smollm2 \\
        --benchmarks pubmedqa,medqa:300,medmcqa:300,careqa:300 [--models zero-shot,federated-fedavg]

The per-round accuracy of `evaluate.qa-benchmarks` uses small samples so every round of every model can be scored;
this scores each model's final adapter once on bigger ones. Every model the experiment completed is found in its
`runs/` folder: `zero-shot` is the base model alone, every other model its last `peft_<round>/`. Each benchmark is
scored by `fedmedlora-eval` itself (the same flags, code path and output files as `eval.py`), in generate+loglik
mode with the experiment's dtype and evaluation batch size (as its rounds were scored), into `runs/qa-eval/<model>/{generate,loglik}/`; a benchmark already in a model's summaries with the same sample
is skipped, so an interrupted run picks up where it stopped. Then `qa_table.md` and `qa_results.csv` in the
experiment folder: accuracy per benchmark and mode, unparseable generations, and FlowerTune's four-dataset average.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..recorder import write_text_atomic
from ..settings.schema import benchmark_sizes

MODES = ("generate", "loglik")
# Which models first: the base, then the federated ones (the comparison the experiment is about), then the rest.
ORDER = ("zero-shot", "federated", "centralized", "single-site")


@dataclass
class FinalModel:
    run: str  # its folder under runs/
    setting: str
    model: str
    peft: Path | None  # None: the base model (zero-shot)


def final_models(experiment: Path) -> list[FinalModel]:
    """Every completed model of the experiment, base first, each with its last checkpoint."""
    runs = experiment / "runs"
    found = []
    for run_dir in sorted(p for p in runs.iterdir() if p.is_dir() and p.name != "qa-eval"):
        name = run_dir.name
        if name == "zero-shot":
            found.append(FinalModel(name, "zero-shot", "-", None))
            continue
        checkpoints = sorted(run_dir.glob("peft_*"), key=lambda p: int(p.name.split("_")[1]))
        if not checkpoints:
            continue  # a model that failed before its final round: nothing to score
        if name.startswith("federated-"):
            setting, model = "federated", name.removeprefix("federated-")
        elif name.startswith("single-site-"):
            setting, model = "single-site", name.split("-", 3)[3]
        else:
            setting, model = name, "all sites pooled" if name == "centralized" else name
        found.append(FinalModel(name, setting, model, checkpoints[-1]))
    return sorted(found, key=lambda m: ORDER.index(m.setting) if m.setting in ORDER else len(ORDER))


def _summary(folder: Path, mode: str) -> dict[str, Any]:
    path = folder / mode / "summary.json"
    return json.loads(path.read_text()).get("datasets", {}) if path.is_file() else {}


def dataset_name(spec: str) -> str:
    """The name eval.py files a benchmark under (a bundled name, or a JSONL file's stem)."""
    from ..data.qa_benchmarks import BUNDLED, load_qa_dataset

    return spec if spec in BUNDLED else load_qa_dataset(spec).name


def _done(folder: Path, name: str, size: int) -> bool:
    """Both modes hold this benchmark's result on the sample asked for (size 0: the whole set)."""
    for mode in MODES:
        entry = _summary(folder, mode).get(dataset_name(name))
        if not entry or entry.get("limit") != (size or None):
            return False
    return True


def score_model(model: FinalModel, base: str, benchmarks: list[tuple[str, int]], out_root: Path, *, dtype: str,
                batch_size: int) -> None:
    from ..evaluation.cli import main as eval_main

    folder = out_root / model.run
    for name, size in benchmarks:
        if _done(folder, name, size):
            print(f"[qa-eval] {model.run}: {name} already scored", flush=True)
            continue
        argv = ["--base-model-name-path", base, "--quantization", "0", "--datasets", name, "--limit", str(size),
                "--mode", "generate+loglik", "--batch-size", str(batch_size), "--dtype", dtype,
                "--run-name", model.run, "--output-dir", str(folder), "--no-progress"]
        if model.peft is not None:
            argv[2:2] = ["--peft-path", str(model.peft)]
        print(f"[qa-eval] {model.run}: fedmedlora eval {shlex.join(argv)}", flush=True)
        started = time.perf_counter()
        code = eval_main(argv)
        if code != 0:
            raise RuntimeError(f"fedmedlora eval exited with {code} on {model.run} / {name}")
        print(f"[qa-eval] {model.run}: {name} done in {time.perf_counter() - started:.0f} s", flush=True)


COMMANDS_FILE = "commands.json"


def recorded_commands(out_root: Path, command: str) -> list[str]:
    """Every qa_eval command that scored models into this folder, in the order first run, this one added: the table
    holds rows from all of them, so its header names them all (a repeated command is listed once)."""
    path = out_root / COMMANDS_FILE
    commands = json.loads(path.read_text()) if path.exists() else []
    if command not in commands:
        commands.append(command)
        out_root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(commands, indent=2) + "\n")
    return commands


def _command_lines(commands: Sequence[str]) -> list[str]:
    if len(commands) == 1:
        return [f"Command (from the project root): `{commands[0]}`"]
    return ["Commands (from the project root), in the order first run:", "",
            *(f"- `{command}`" for command in commands)]


def table(experiment: Path, models: list[FinalModel], benchmarks: list[tuple[str, int]],
          commands: Sequence[str]) -> str:
    names = [dataset_name(name) for name, _ in benchmarks]
    sizes = ", ".join(f"{n} {s or 'all'}" for n, s in zip(names, (s for _, s in benchmarks)))
    head = ["setting", "model", *(f"{n} {label}" for n in names for label in ("acc", "loglik acc", "unparseable")),
            "average acc", "average loglik acc"]
    lines = [f"# QA accuracy of the final models: `{experiment.name}`", "",
             *_command_lines(commands), "",
             f"- Questions: {sizes} (`--limit` samples, seed 2024; stratified by gold answer and subject); "
             "FlowerTune's prompt; `acc` = generate accuracy (FlowerTune's protocol: greedy, its token budget and "
             "answer rule, an unparseable answer counts as wrong), `loglik acc` = the most probable option's first "
             "token; both modes from one forward pass.",
             "- Average: the unweighted mean over the benchmarks above (FlowerTune's leaderboard average when they "
             "are its four; here on samples, not the full sets).",
             "- Each model: `runs/qa-eval/<model>/{generate,loglik}/summary.json` (ids, answer distributions, "
             "seconds, machine).", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for model in models:
        folder = experiment / "runs" / "qa-eval" / model.run
        summaries = {mode: _summary(folder, mode) for mode in MODES}
        if not any(summaries.values()):
            continue  # not scored (yet)
        cells = [model.setting, model.model]
        averages: dict[str, list[float]] = {mode: [] for mode in MODES}
        for name in names:
            for mode in MODES:
                entry = summaries[mode].get(name)
                cells.append(f"{entry['accuracy']:.4f}" if entry else "n/a")
                if entry:
                    averages[mode].append(entry["accuracy"])
            entry = summaries["generate"].get(name)
            cells.append(f"{entry['unparseable']}/{entry['total']}" if entry else "n/a")
        for mode in MODES:
            values = averages[mode]
            cells.append(f"{sum(values) / len(values):.4f}" if len(values) == len(names) else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(experiment: Path, models: list[FinalModel]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("setting", "model", "benchmark", "mode", "accuracy", "correct", "total", "unparseable"))
    for model in models:
        folder = experiment / "runs" / "qa-eval" / model.run
        for mode in MODES:
            for name, entry in _summary(folder, mode).items():
                writer.writerow((model.setting, model.model, name, mode, repr(float(entry["accuracy"])),
                                 entry["correct"], entry["total"], entry["unparseable"]))
    return buffer.getvalue()


def write_outputs(experiment: Path, models: list[FinalModel], benchmarks: list[tuple[str, int]],
                  commands: Sequence[str]) -> None:
    write_text_atomic(experiment / "qa_table.md", table(experiment, models, benchmarks, commands))
    write_text_atomic(experiment / "qa_results.csv", csv_text(experiment, models))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m fedmedlora.experiment.qa_eval", description=__doc__.split("\n")[0])
    p.add_argument("experiment", help="the experiment folder (results/<name>)")
    p.add_argument("--benchmarks", default="pubmedqa,medqa:300,medmcqa:300,careqa:300",
                   help="<name>[:<size>] list as evaluate.qa-benchmarks takes it (no size: the whole set)")
    p.add_argument("--models", default="", help="comma-separated run folders to score (default: every model)")
    p.add_argument("--dtype", default="", choices=("", "auto", "float32", "bfloat16", "float16"),
                   help="eval.py's --dtype (default: the experiment's model.dtype, as its rounds were scored)")
    p.add_argument("--batch-size", type=int, default=0,
                   help="eval.py's --batch-size (default: the experiment's evaluate.batch-size; FlowerTune's token "
                        "budget depends on it)")
    args = p.parse_args(argv)
    experiment = Path(args.experiment)
    try:
        benchmarks = benchmark_sizes(args.benchmarks)
        config = json.loads((experiment / "config.json").read_text())
    except (ValueError, OSError) as err:
        print(f"qa_eval: {err}", file=sys.stderr)
        return 2
    run_config = config["run-config"]
    base = run_config["model.name"]
    dtype = args.dtype or run_config["model.dtype"]
    batch_size = args.batch_size or run_config["evaluate.batch-size"]
    models = final_models(experiment)
    if args.models:
        wanted = {m.strip() for m in args.models.split(",") if m.strip()}
        unknown = wanted - {m.run for m in models}
        if unknown:
            print(f"qa_eval: --models {sorted(unknown)}: no such completed model in {experiment / 'runs'} "
                  f"(found {[m.run for m in models]})", file=sys.stderr)
            return 2
        models = [m for m in models if m.run in wanted]
    out_root = experiment / "runs" / "qa-eval"
    commands = recorded_commands(out_root, shlex.join(["python", "-m", "fedmedlora.experiment.qa_eval", *argv]))
    for model in models:
        score_model(model, base, benchmarks, out_root, dtype=dtype, batch_size=batch_size)
        write_outputs(experiment, final_models(experiment), benchmarks, commands)  # after every model: nothing lost
    if not models:  # nothing to score: the table is still (re)written from what earlier runs scored
        write_outputs(experiment, final_models(experiment), benchmarks, commands)
    print(f"[qa-eval] {experiment / 'qa_table.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
