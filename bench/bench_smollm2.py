"""SmolLM2-135M-Instruct (builtin:smollm2-135m) on this machine: conversion, loading, a training step, QA scoring.

    python bench/bench_smollm2.py                          # everything (about 10 minutes on 2 busy CPU cores)
    python bench/bench_smollm2.py --skip conversion,qlora --qa-limit 20

Prints one JSON object:
  conversion   seconds to convert the wheel's GGUF into a float32 folder (into a fresh, temporary cache)
  load         seconds to load the converted folder, and the GGUF file directly (transformers de-quantizes it)
  train        seconds per optimizer step of LoRA r=8 on q_proj/v_proj at batch x tokens (default 4 x 128), through
               the project's training path (`train_locally`, TRL SFTTrainer), float32 and 4-bit NF4 (QLoRA on CPU);
               a 1-step warm-up round first, then the mean over `--steps`
  qa           prompts/s on a stratified sample of PubMedQA (default 50) per eval mode, batch 16
and the machine (the load average matters on a shared CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
MODEL = "builtin:smollm2-135m"


def conversion() -> dict:
    from fedmedlora.model.gguf import builtin_gguf_path, ensure_converted

    previous = os.environ.get("FEDMEDLORA_CACHE")
    with tempfile.TemporaryDirectory(prefix="bench-smollm2-") as tmp:
        os.environ["FEDMEDLORA_CACHE"] = tmp
        try:
            started = time.perf_counter()
            folder = ensure_converted(builtin_gguf_path("smollm2-135m"))
            seconds = time.perf_counter() - started
            size = sum(p.stat().st_size for p in folder.iterdir())
        finally:
            if previous is None:
                os.environ.pop("FEDMEDLORA_CACHE", None)
            else:
                os.environ["FEDMEDLORA_CACHE"] = previous
    return {"seconds": round(seconds, 1), "folder_mib": round(size / 2**20, 1)}


def load() -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from fedmedlora.model.gguf import builtin_gguf_path
    from fedmedlora.model.loading import resolve_model_source

    folder = resolve_model_source(MODEL)
    started = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(folder)
    from_folder = time.perf_counter() - started
    gguf = builtin_gguf_path("smollm2-135m")
    started = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return {"folder_seconds": round(from_folder, 2), "gguf_seconds": round(time.perf_counter() - started, 2)}


def train(quantization: int, batch: int, tokens: int, steps: int) -> dict:
    from fedmedlora.job import get_job
    from fedmedlora.settings import parse_run_config, with_overrides
    from fedmedlora.model.training import train_locally

    settings = parse_run_config({
        "data.task": "instruct", "data.datasets": "medquad", "data.num-sites": 1, "data.max-length": tokens,
        "data.max-train-examples": 64, "model.name": MODEL, "model.quantization": quantization,
        "lora.target-modules": "q_proj,v_proj", "train.batch-size": batch, "train.local-steps": 1,
    })
    started = time.perf_counter()
    job = get_job(settings)
    resident = job.resident()
    load_seconds = time.perf_counter() - started
    dataset = job.tokenized(0, "train")
    lengths = sorted(len(ids) for ids in dataset["input_ids"])
    train_locally(settings, job.task, resident, dataset, learning_rate=1e-4, seed=0)  # warm-up round of one step
    metrics = train_locally(with_overrides(settings, {"train.local-steps": steps}), job.task, resident, dataset,
                            learning_rate=1e-4, seed=1)
    return {"quantization": quantization, "batch": batch, "max_tokens": tokens,
            "median_row_tokens": lengths[len(lengths) // 2], "steps": steps,
            "seconds_per_step": round(metrics["train-seconds"] / steps, 2),
            "model_load_seconds": round(load_seconds, 1)}


def qa(limit: int, batch_size: int) -> dict:
    from fedmedlora.evaluation.eval_model import ModelRequest, load_model_for_eval
    from fedmedlora.data.qa_benchmarks import load_qa_datasets
    from fedmedlora.qa.scoring import evaluate_qa_dataset, evaluate_qa_dataset_modes

    (dataset,) = load_qa_datasets(["pubmedqa"], limit)
    model, tokenizer = load_model_for_eval(ModelRequest(MODEL, None, 0, "cpu", "float32"))
    evaluate_qa_dataset(model, tokenizer, dataset.limited(2), mode="loglik", batch_size=2, progress=False)  # warm-up
    out: dict = {"dataset": "pubmedqa", "questions": len(dataset.items), "batch_size": batch_size}
    for mode in ("generate", "loglik", "generate-loop"):
        result = evaluate_qa_dataset(model, tokenizer, dataset, mode=mode, batch_size=batch_size, progress=False)
        out[mode] = {"prompts_per_second": result.summary()["prompts_per_second"], "accuracy": result.accuracy,
                     "unparseable": result.unparseable}
    both = evaluate_qa_dataset_modes(model, tokenizer, dataset, ["generate", "loglik"], batch_size=batch_size,
                                     progress=False)
    out["generate+loglik"] = {"prompts_per_second_for_both": both["generate"].summary()["prompts_per_second"],
                              "one_pass": both["generate"].shared_pass,
                              "accuracies": {m: r.accuracy for m, r in both.items()}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: conversion, load, train, qlora, qa")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--qa-limit", type=int, default=50)
    parser.add_argument("--qa-batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    from fedmedlora.evaluation.machine_info import machine_info

    report: dict = {"model": MODEL, "machine_before": machine_info("cpu")}
    if "conversion" not in skip:
        report["conversion"] = conversion()
    if "load" not in skip:
        report["load"] = load()
    if "train" not in skip:
        report["train_float32"] = train(0, args.batch, args.tokens, args.steps)
    if "qlora" not in skip:
        report["train_4bit"] = train(4, args.batch, args.tokens, args.steps)
    if "qa" not in skip:
        report["qa"] = qa(args.qa_limit, args.qa_batch_size)
    report["machine_after"] = machine_info("cpu")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
