"""`fedmedlora-eval` (and `eval/eval.py`): score a checkpoint on medical QA with FlowerTune's flags and protocol.

    python eval.py --base-model-name-path=ContactDoctor/Bio-Medical-Llama-3-8B --peft-path=results/runs/x/peft_10 \\
        --run-name=fl --batch-size=16 --quantization=4 --datasets=pubmedqa,medmcqa,medqa,careqa

Quantization 4 or 8 needs a CUDA GPU; `--quantization 0` scores the unquantized model on the CPU. Results go to
--output-dir (default: eval/results/<run-name>/ under the current folder for `fedmedlora-eval`, the results/ folder
next to eval.py for `python eval.py`); see qa_outputs.py for the files.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from ..data.files import DataFormatError
from ..data.qa_benchmarks import SAMPLE_SEED as DEFAULT_SEED  # --limit's sample
from .errors import EvalInputError

TASKS = ("qa", "ner", "re")
DEFAULT_DATASETS = {"qa": "pubmedqa,medmcqa,medqa,careqa", "ner": "ncbi_disease,bc5cdr", "re": "chemprot"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedmedlora-eval",
        description="Score a base model, optionally with a PEFT adapter, on medical QA benchmarks the way "
                    "FlowerTune's medical leaderboard does.",
    )
    parser.add_argument("--base-model-name-path", required=True,
                        help="hub id, local folder, .gguf file (converted once), or builtin:smollm2-135m / "
                             "builtin:tiny-llama / builtin:tiny-llama-micro")
    parser.add_argument("--peft-path", default=None, help="PEFT adapter folder (save_pretrained); omit for the base")
    parser.add_argument("--run-name", default="fl", help="names the output folder and files (default: fl)")
    parser.add_argument("--datasets", default=None,
                        help="comma-separated. qa: pubmedqa, medmcqa, medqa, careqa (default: all four, the "
                             "leaderboard's) or paths to "
                             "multiple-choice JSONL files; ner: ncbi_disease, bc5cdr (default: both) or CoNLL files; "
                             "re: bundled RE corpora or files in their formats")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quantization", type=int, default=4, choices=(0, 4, 8),
                        help="4 (the leaderboard setting) or 8 need CUDA; 0 = unquantized (default: 4)")
    parser.add_argument("--mode", default="generate", choices=("generate", "generate-loop", "loglik",
                                                               "generate+loglik"),
                        help="generate: FlowerTune's protocol, batched; generate-loop: the same one prompt at a "
                             "time (slow reference); loglik: most probable option after the prompt; "
                             "generate+loglik: both, into <output-dir>/generate and <output-dir>/loglik, from one "
                             "forward pass per batch when every answer is one token (else one mode after the other)")
    parser.add_argument("--output-dir", default=None, help="default: eval/results/<run-name>")
    parser.add_argument("--limit", type=int, default=0,
                        help="qa: score a seeded sample of N questions of each dataset, stratified by gold answer "
                             "(and subject/category where the data has one), in dataset order; ner/re: the first N "
                             "examples")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"qa: the seed of --limit's sample: the same seed scores the same questions "
                             f"(default: {DEFAULT_SEED})")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="auto: FlowerTune's (float32 for 4-bit, float16 for 8-bit), else float32 on CPU and "
                             "bfloat16 on CUDA")
    parser.add_argument("--task", default="qa", choices=TASKS,
                        help="qa: multiple-choice QA (this module); ner/re: entity and relation scoring")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="ner/re: the official split of bundled corpora to score (users' files are scored whole)")
    parser.add_argument("--max-length", type=int, default=256,
                        help="ner/re: tokens per example when the checkpoint does not record it")
    return parser


def main(argv: Sequence[str] | None = None, results_root: str | Path = Path("eval") / "results") -> int:
    """Exit code 0 when done, 2 for bad input (message on stderr). Without --output-dir, results go to
    `<results_root>/<run-name>`; eval/eval.py passes its own folder's results/ so running it from inside eval/
    does not nest an eval/eval/."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in summary.json
    args.results_root = Path(results_root)
    if args.datasets is None:
        args.datasets = DEFAULT_DATASETS[args.task]
    try:
        return TASK_RUNNERS.get(args.task, task_not_available)(args)
    except (EvalInputError, DataFormatError) as err:  # the user's input (flags, files), not a crash
        print(f"fedmedlora-eval: error: {err}", file=sys.stderr)
        return 2


# --- task: multiple-choice QA ---------------------------------------------------------------------------------------

def run_qa(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from .eval_model import ModelRequest, check_model_request, load_model_for_eval, resolve_device, resolve_dtype
    from .machine_info import machine_info
    from ..data.qa_benchmarks import load_qa_datasets
    from .qa_outputs import QAOutputs
    from ..qa.scoring import COMBINED_MODES, QAScoringError, evaluate_qa_dataset_modes

    _check_common_flags(args)
    # Cheap checks first: every dataset file and every model flag, before any weights load.
    datasets = load_qa_datasets([s.strip() for s in args.datasets.split(",") if s.strip()], args.limit or None,
                                args.seed)
    device = resolve_device(args.device)
    request = ModelRequest(
        base=args.base_model_name_path,
        peft_path=args.peft_path,
        quantization=args.quantization,
        device=device,
        dtype=resolve_dtype(args.dtype, args.quantization, device),
    )
    check_model_request(request)
    # One output folder per mode; a combined mode writes each mode's complete folder under <output-dir>/<mode>/.
    modes = list(COMBINED_MODES.get(args.mode, (args.mode,)))
    out_dir = Path(args.output_dir or args.results_root / args.run_name)
    outputs = {mode: QAOutputs(out_dir / mode if len(modes) > 1 else out_dir, args.run_name) for mode in modes}

    model, tokenizer = load_model_for_eval(request)
    runs = {mode: {
        "task": "qa",
        "protocol": "flowertune-medical",
        "mode": mode,
        "requested_mode": args.mode,
        "base_model": request.base,
        "peft_path": request.peft_path,
        "quantization": request.quantization,
        "dtype": request.dtype,
        "batch_size": args.batch_size,
        "limit": args.limit or None,
        "seed": args.seed if args.limit else None,
        "argv": args.argv,
        "machine": machine_info(device),
        "started_at": datetime.now().isoformat(timespec="seconds"),
        "status": "running",
    } for mode in modes}
    for mode in modes:
        outputs[mode].update_summary(runs[mode])
        print(f"results{f' ({mode})' if len(modes) > 1 else ''}: {outputs[mode].dir.resolve()}")
    started = time.perf_counter()
    for dataset in datasets:
        try:
            with ExitStack() as stack:
                sinks = {mode: stack.enter_context(outputs[mode].generations(dataset.name)).write for mode in modes}
                results = evaluate_qa_dataset_modes(model, tokenizer, dataset, modes, batch_size=args.batch_size,
                                                    on_records=sinks, progress=not args.no_progress)
        except BaseException as err:
            for mode in modes:
                outputs[mode].update_summary({**runs[mode], "status": f"failed on {dataset.name}: "
                                                                      f"{type(err).__name__}: {err}"})
            if isinstance(err, QAScoringError):
                raise EvalInputError(str(err)) from None
            raise
        for mode in modes:
            result = results[mode]
            accuracy_file = outputs[mode].write_accuracy(dataset.name, result.accuracy)
            outputs[mode].update_summary(runs[mode], dataset.name, {
                **result.summary(),
                "source": dataset.source,
                "base_model": request.base,
                "peft_path": request.peft_path,
                "quantization": request.quantization,
                "batch_size": args.batch_size,
                "limit": args.limit or None,
                "sample": dataset.sample_record(),
                "accuracy_file": accuracy_file.name,
                "generations_file": outputs[mode].generations_path(dataset.name).name,
                "finished_at": datetime.now().isoformat(timespec="seconds"),
            })
            label = f"{dataset.name}{f' [{mode}]' if len(modes) > 1 else ''}"
            shared = ", one pass for both modes" if result.shared_pass else ""
            print(f"{label}: Accuracy: {result.accuracy}. ({result.correct}/{result.total}, "
                  f"{result.unparseable} unparseable, {result.summary()['prompts_per_second']} prompts/s{shared})")
    for mode in modes:
        summary = outputs[mode].update_summary({**runs[mode], "status": "done",
                                                "seconds": round(time.perf_counter() - started, 3)})
        label = f" [{mode}]" if len(modes) > 1 else ""
        if summary["average_accuracy"] is not None:
            print(f"average accuracy{label} over {len(summary['datasets'])} dataset(s) in {outputs[mode].dir}: "
                  f"{summary['average_accuracy']:.4f}")
        if summary["leaderboard_average"] is not None:
            sampled = " (on --limit samples, not the full sets)" if summary["leaderboard_sampled"] else ""
            print(f"FlowerTune leaderboard average{label} ({', '.join(summary['leaderboard_datasets'])}): "
                  f"{summary['leaderboard_average']:.4f}{sampled}")
    return 0


def _check_common_flags(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise EvalInputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.limit < 0:
        raise EvalInputError(f"--limit must be 0 (all) or positive, got {args.limit}")
    if not args.run_name or any(c in args.run_name for c in "/\\") or args.run_name in (".", ".."):
        raise EvalInputError(f"--run-name {args.run_name!r} must be a plain name: it is used in file names")


# --- tasks: entity and relation extraction (ie_eval.py) -------------------------------------------------------------

def run_ie(args: argparse.Namespace) -> int:
    from .ie_eval import run_ie as run

    _check_common_flags(args)
    return run(args)


def task_not_available(args: argparse.Namespace) -> int:
    raise EvalInputError(f"--task {args.task} is not available in fedmedlora-eval")


TASK_RUNNERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "qa": run_qa,
    "ner": run_ie,
    "re": run_ie,
}


if __name__ == "__main__":
    raise SystemExit(main())
