"""QA scoring speed: batched generation and option log-likelihood against FlowerTune's one-prompt-at-a-time loop.

    python bench/bench_qa_eval.py                       # tiny-llama, 64 questions of each benchmark, batch 16
    python bench/bench_qa_eval.py --model builtin:tiny-llama-micro --limit 32 --threads 1

All three modes score the same questions with the same model in this process (a short warm-up first, so no mode
pays for first-call setup). Prints one JSON object: prompts/second per mode, the speedups over the loop, whether
batched generation reproduced the loop's generations and predictions exactly, and the machine it ran on (the load
average matters on shared CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny-llama")
    parser.add_argument("--datasets", default="medqa,medmcqa,pubmedqa")
    parser.add_argument("--limit", type=int, default=64,
                        help="questions per dataset (a sample stratified by answer, as eval's --limit draws it)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each mode this many times and keep the fastest (steadier on a shared CPU)")
    args = parser.parse_args(argv)

    import torch

    from fedmedlora.evaluation.eval_model import ModelRequest, load_model_for_eval, resolve_device, resolve_dtype
    from fedmedlora.evaluation.machine_info import machine_info
    from fedmedlora.data.qa_benchmarks import load_qa_datasets
    from fedmedlora.qa.scoring import evaluate_qa_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    datasets = load_qa_datasets(args.datasets.split(","), args.limit)
    model, tokenizer = load_model_for_eval(ModelRequest(args.model, None, 0, device, resolve_dtype("auto", 0, device)))
    machine_before = machine_info(device)

    warm = datasets[0].limited(2)
    for mode in ("generate", "generate-loop", "loglik"):
        evaluate_qa_dataset(model, tokenizer, warm, mode=mode, batch_size=2, progress=False)

    modes = ("generate-loop", "generate", "loglik")
    seconds = dict.fromkeys(modes, 0.0)
    per_dataset = {}
    mismatched_generations = mismatched_predictions = 0
    total = 0
    for dataset in datasets:
        records = {}
        entry = {"questions": len(dataset.items)}
        for mode in modes:
            fastest = float("inf")
            for _ in range(max(1, args.repeats)):
                collected: list[dict] = []
                result = evaluate_qa_dataset(model, tokenizer, dataset, mode=mode, batch_size=args.batch_size,
                                             on_records=collected.extend, progress=False)
                fastest = min(fastest, result.seconds)
            seconds[mode] += fastest
            records[mode] = {r["index"]: r for r in collected}
            entry[mode] = {"prompts_per_second": round(result.total / fastest, 2),
                           "accuracy": round(result.accuracy, 4), "unparseable": result.unparseable}
        loop, batched = records["generate-loop"], records["generate"]
        gen_diff = sum(loop[i]["generation"] != batched[i]["generation"] for i in loop)
        pred_diff = sum(loop[i]["prediction"] != batched[i]["prediction"] for i in loop)
        entry["generate_vs_loop_mismatches"] = {"generations": gen_diff, "predictions": pred_diff}
        mismatched_generations += gen_diff
        mismatched_predictions += pred_diff
        total += len(dataset.items)
        per_dataset[dataset.name] = entry

    rate = {mode: total / seconds[mode] for mode in modes}
    print(json.dumps({
        "model": args.model,
        "parameters": sum(p.numel() for p in model.parameters()),
        "datasets": [d.name for d in datasets],
        "questions": total,
        "batch_size": args.batch_size,
        "repeats": max(1, args.repeats),
        "prompts_per_second": {mode: round(rate[mode], 2) for mode in modes},
        "speedup_vs_loop": {
            "generate": round(rate["generate"] / rate["generate-loop"], 2),
            "loglik": round(rate["loglik"] / rate["generate-loop"], 2),
        },
        "generate_predictions_identical_to_loop": mismatched_predictions == 0,
        "generate_generations_identical_to_loop": mismatched_generations == 0,
        "per_dataset": per_dataset,
        "machine": {**machine_before, "load_average_1min_after": machine_info(device).get("load_average_1min")},
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
