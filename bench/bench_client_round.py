"""A federated client round, measured three ways on the same config, site, adapter and batches.

1. resident: the real ClientApp `train` (fedmedlora.client_app) round after round in one process, as a Flower
   worker runs it: the base model and the site's tokenized data stay loaded; each call loads the global adapter and
   builds a fresh Trainer (fresh optimizer).
2. reload: the same ClientApp call, but the process forgets its model and data before every round, so each round
   loads the base model from disk, wraps it with PEFT, tokenizes the partition and builds the trainer, as
   FlowerTune's template does per round (on a CPU there is nothing to quantize; on a GPU 4-bit loading adds more).
3. plain loop: a hand-written PyTorch loop (AdamW, the same collator, batch size, steps, learning rate and clipping)
   over the same tokenized data on the same PEFT model: the throughput ceiling without Trainer or Flower.

For every round: wall seconds of the client call and the seconds inside optimizer steps (forward, backward, clip,
optimizer and scheduler step; measured from the Trainer's on_step_begin to on_step_end). Reported: warm-round
overhead = 1 - step seconds / client seconds (target <= 10%), and training throughput of the warm resident client
vs the plain loop (examples/s, target >= 95%; and tokens/s, non-padding input tokens, which is the fair measure when
examples differ in length, as SFT prompts do). Run to run, a 30-step round varies by several percent on a shared
CPU, so the throughput ratio compares the best warm round with the best of `--plain-repeats` plain loops (the
medians are reported too).

    python bench/bench_client_round.py                    # the embedded default: MiniLM NER, 30 steps x 16, ~4 min
    python bench/bench_client_round.py --rounds 4 --run-config "train.local-steps=10"
    python bench/bench_client_round.py --rounds 3 --run-config conf/llm-qa-smollm2.toml \
        --run-config 'model.dtype="float32" train.local-steps=4'      # SmolLM2 SFT (TRL SFTTrainer) client
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class StepTimer:
    """Seconds spent between the Trainer's on_step_begin and on_step_end (one optimizer step each)."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                timer.seconds += time.perf_counter() - timer._start
                timer.steps += 1

        self.callback = _Callback()
        self.seconds = 0.0
        self.steps = 0
        self._start = 0.0

    def reset(self) -> None:
        self.seconds, self.steps = 0.0, 0


def client_rounds(config: dict[str, Any], rounds: int, reload: bool) -> list[dict[str, Any]]:
    from flwr.app import ArrayRecord

    import fedmedlora.model.resident as resident_module
    from fedmedlora import client_app
    from fedmedlora.federation import node_site
    from fedmedlora.launch.grid import node_context, train_message
    from fedmedlora.model.adapter import adapter_state
    from fedmedlora.settings import parse_run_config
    from fedmedlora.job import get_job, resolve_family
    from fedmedlora.tasks.registry import task_class
    from fedmedlora.wire import to_array_record

    settings = parse_run_config(config)

    def forget() -> None:  # what a process that rebuilds every round starts from
        node_site.forget_sites()
        resident_module.forget_resident_model()

    forget()
    timer = StepTimer()
    # the ClientApp builds its own job per node (federation/node_site.py): time the trainers of the task's class
    cls = task_class(settings, resolve_family(settings))
    make_trainer = cls.make_trainer

    def timed_make_trainer(task: Any, *args: Any, **kwargs: Any) -> Any:
        trainer = make_trainer(task, *args, **kwargs)
        trainer.add_callback(timer.callback)
        return trainer

    # no site disk cache: the reload path re-reads and re-tokenizes, as a process without one does
    context = node_context(config, site=0, num_sites=settings.data.num_sites)
    context.node_config["cache"] = False
    # the same global adapter every round (the initial one), so both paths do identical work
    global_arrays: ArrayRecord = to_array_record(adapter_state(get_job(settings).resident().model), "float16")
    out = []
    cls.make_trainer = timed_make_trainer
    try:
        for server_round in range(1, rounds + 1):
            if reload:
                forget()
            timer.reset()
            loads_before = resident_module.base_model_loads()
            msg = train_message(global_arrays, node_id=1, server_round=server_round,
                                learning_rate=settings.learning_rate(server_round))
            start = time.perf_counter()
            reply = client_app.train(msg, context)
            seconds = time.perf_counter() - start
            assert not reply.has_error(), reply.error
            metrics = reply.content["metrics"]
            out.append({"round": server_round, "client_seconds": seconds, "step_seconds": timer.seconds,
                        "steps": timer.steps, "trainer_train_seconds": float(metrics["train-seconds"]),
                        "examples": int(metrics["train-examples-seen"]),
                        "tokens": int(metrics["train-tokens-seen"]),
                        "model_loaded_this_round": resident_module.base_model_loads() > loads_before})
    finally:
        cls.make_trainer = make_trainer
    assert all(r["steps"] == settings.train.local_steps for r in out), "the step timer missed the client's trainer"
    return out


def plain_loop(config: dict[str, Any]) -> dict[str, Any]:
    """The same steps as a client round in a bare PyTorch loop on the resident PEFT model and tokenized data."""
    import torch

    from fedmedlora.model.adapter import adapter_state, load_adapter_state
    from fedmedlora.job import get_job
    from fedmedlora.settings import parse_run_config
    from fedmedlora.model.training import training_arguments

    settings = parse_run_config(config)
    job = get_job(settings)
    resident = job.resident()
    dataset = job.tokenized(0, "train")
    initial = adapter_state(resident.model)
    with_tmp = training_arguments(settings, family=resident.family, learning_rate=settings.learning_rate(1),
                                  seed=settings.run.seed, output_dir="/tmp/fedmedlora-bench-plain")
    trainer = job.task.make_trainer(resident, dataset, with_tmp)  # only for its collator and column choice
    loader = trainer.get_train_dataloader()
    model = resident.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate(1), weight_decay=settings.train.weight_decay)
    steps, batch = settings.train.local_steps, settings.train.batch_size
    batches = iter(loader)
    done, examples, tokens = 0, 0, 0
    # what the Trainer does for model.dtype = bfloat16 (autocast); nothing otherwise
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.model.dtype == "bfloat16")
    start = time.perf_counter()
    while done < steps:
        try:
            inputs = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        with autocast:
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done += 1
        examples += int(inputs["input_ids"].shape[0])
        tokens += int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else inputs["input_ids"].numel()
    seconds = time.perf_counter() - start
    load_adapter_state(model, initial)
    return {"seconds": seconds, "steps": done, "examples": examples, "examples_per_s": examples / seconds,
            "tokens": tokens, "tokens_per_s": tokens / seconds, "batch_size": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="client rounds per path (the first resident one is cold)")
    parser.add_argument("--plain-repeats", type=int, default=3)
    parser.add_argument("--run-config", action="append", default=[],
                        help='a preset file or "key=value ..." over the embedded default; repeatable, later ones win')
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fedmedlora.evaluation.machine_info import machine_info
    from fedmedlora.launch.launcher import parse_overrides

    config = parse_overrides(args.run_config)
    config.setdefault("run.results-dir", "/tmp/fedmedlora-bench")

    reload = client_rounds(config, args.rounds, reload=True)
    resident = client_rounds(config, args.rounds, reload=False)
    plains = [plain_loop(config) for _ in range(args.plain_repeats)]
    warm = resident[1:]  # round 1 of the resident path is its one cold start

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    def median(values: list[float]) -> float:
        return statistics.median(values)

    best_warm = min(warm, key=lambda r: r["client_seconds"])
    best_plain = max(plains, key=lambda r: r["examples_per_s"])
    client_rates = [r["examples"] / r["client_seconds"] for r in warm]
    plain_rates = [r["examples_per_s"] for r in plains]
    client_token_rates = [r["tokens"] / r["client_seconds"] for r in warm]
    step_token_rates = [r["tokens"] / r["step_seconds"] for r in warm]  # inside optimizer steps only
    plain_token_rates = [r["tokens_per_s"] for r in plains]

    warm_client = mean(warm, "client_seconds")
    warm_steps = mean(warm, "step_seconds")
    result = {
        "benchmark": "client_round",
        "config": config,
        "machine": machine_info("cpu"),
        "resident_rounds": resident,
        "reload_rounds": reload,
        "plain_loops": plains,
        "summary": {
            "resident_warm_round_seconds": warm_client,
            "reload_round_seconds": mean(reload, "client_seconds"),
            "reload_vs_resident_warm": mean(reload, "client_seconds") / warm_client,
            "resident_warm_step_share": warm_steps / warm_client,
            "resident_warm_overhead_share": 1 - warm_steps / warm_client,
            "reload_step_share": mean(reload, "step_seconds") / mean(reload, "client_seconds"),
            "resident_cold_round_seconds": resident[0]["client_seconds"],
            "client_examples_per_s_best": best_warm["examples"] / best_warm["client_seconds"],
            "client_examples_per_s_median": median(client_rates),
            "plain_loop_examples_per_s_best": best_plain["examples_per_s"],
            "plain_loop_examples_per_s_median": median(plain_rates),
            "client_vs_plain_throughput_best": (best_warm["examples"] / best_warm["client_seconds"])
            / best_plain["examples_per_s"],
            "client_vs_plain_throughput_median": median(client_rates) / median(plain_rates),
            "client_tokens_per_s_best": max(client_token_rates),
            "client_tokens_per_s_median": median(client_token_rates),
            "client_step_tokens_per_s_median": median(step_token_rates),
            "plain_loop_tokens_per_s_best": max(plain_token_rates),
            "plain_loop_tokens_per_s_median": median(plain_token_rates),
            "client_vs_plain_tokens_per_s_best": max(client_token_rates) / max(plain_token_rates),
            "client_vs_plain_tokens_per_s_median": median(client_token_rates) / median(plain_token_rates),
            "targets": {"warm_overhead_share_max": 0.10, "client_vs_plain_min": 0.95},
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
