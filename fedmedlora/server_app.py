"""The ServerApp: validate, set up the run's results, start the strategy, and record every round.

Order matters: everything that can be wrong with the run config, the model or the data fails here, before any
ClientApp trains. Each round ends in `RoundEnd` (Flower calls it as the strategy's `evaluate_fn` after the round):
server-side evaluation on each site's held-out split, a `peft_<round>/` checkpoint, one line in metrics.jsonl.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from .data.sites import site_statistics
from .job import Job, get_job
from .model.adapter import initial_adapter_state, load_adapter_state, lora_config, save_checkpoint
from .model.loading import check_model_settings
from .recorder import RunRecorder
from .run_config import load_settings
from .settings import Settings
from .strategies import STRATEGIES, build_strategy
from .wire import from_array_record, to_array_record

LOG = logging.getLogger("fedmedlora")
app = ServerApp()


def wait_for_nodes(grid: Grid, settings: Settings, patience: float = 30.0) -> list[int]:
    """Wait until data.num-sites SuperNodes are connected; fail clearly if the federation is smaller."""
    wanted = settings.data.num_sites
    deadline = time.time() + max(patience, 0.0)
    nodes = list(grid.get_node_ids())
    while len(nodes) < wanted and time.time() < deadline:
        time.sleep(1.0)
        nodes = list(grid.get_node_ids())
    if len(nodes) < wanted:
        raise RuntimeError(
            f"key 'data.num-sites' = {wanted}, but only {len(nodes)} SuperNodes are connected: in a simulation run "
            f"with --federation-config \"num-supernodes={wanted}\" (`fedmedlora run` sets it for you); in a "
            "deployment start one SuperNode per site")
    return nodes


# What Flower logs of the server-side evaluation (metrics.jsonl keeps everything).
HEADLINE = {"strict-f1", "lenient-f1", "typed-strict-micro-f1", "typed-strict-macro-f1", "loss", "perplexity"}


class RoundEnd:
    """Flower's evaluate_fn: called with the global adapter at round 0 and after every round."""

    def __init__(self, settings: Settings, job: Job, recorder: RunRecorder):
        self.settings = settings
        self.job = job
        self.recorder = recorder
        self.peft_config = lora_config(settings, job.task.head, base_model_name_or_path=settings.model.name)
        self.history: list[dict[str, Any]] = []

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        state = from_array_record(arrays)
        fields: dict[str, Any] = {}
        metric_record = None
        if self.settings.evaluate.server:
            start = time.perf_counter()
            load_adapter_state(self.job.resident().model, state)
            result = self.job.evaluate(self.settings.evaluate.split)
            if benchmarks := self.job.benchmark_scores():  # evaluate.qa-benchmarks
                result["benchmarks"] = benchmarks
            fields["server-eval"] = {**result, "split": self.settings.evaluate.split,
                                     "seconds": time.perf_counter() - start}
            metric_record = MetricRecord({k: float(v) for k, v in result["pooled"].items() if k in HEADLINE})
        every = self.settings.evaluate.checkpoint_every
        last = server_round == self.settings.num_server_rounds
        # peft_0 is the initial adapter (the zero-shot model, re-scorable with eval.py); then every `every` rounds
        if last or (every and server_round % every == 0):
            path = save_checkpoint(self.recorder.run_dir / f"peft_{server_round}", state, self.peft_config,
                                   extra=self.job.checkpoint_info(server_round))
            fields["checkpoint"] = path.name
        record = self.recorder.end_round(server_round, **fields)
        self.history.append(record)
        self._log_round(record)
        return metric_record

    def _log_round(self, record: dict[str, Any]) -> None:
        parts = [f"round {record['round']}"]
        if "server-eval" in record:
            pooled = record["server-eval"]["pooled"]
            key = self.job.task.primary_metric
            per_site = ", ".join(f"site{s} {m[key]:.3f}" for s, m in record["server-eval"]["sites"].items())
            parts.append(f"{key} {pooled[key]:.4f} (pooled; {per_site})")
            if "lenient-f1" in pooled:
                parts.append(f"lenient-f1 {pooled['lenient-f1']:.4f}")
            for name, scores in record["server-eval"].get("benchmarks", {}).items():
                parts.append(f"{name} accuracy {scores['generate-accuracy']:.4f} "
                             f"(loglik {scores['loglik-accuracy']:.4f})")
        if "train-aggregated" in record:
            parts.append(f"train-loss {record['train-aggregated'].get('train-loss', float('nan')):.4f}")
        comm = record.get("comm", {})
        parts.append(f"comm {comm.get('sent-mib', 0) + comm.get('received-mib', 0):.2f} MiB "
                     f"(total {comm.get('total-sent-mib', 0) + comm.get('total-received-mib', 0):.2f})")
        LOG.info("[fedmedlora] %s", " | ".join(parts))
        print("[fedmedlora] " + " | ".join(parts), flush=True)


def run_server(grid: Grid, context: Context) -> dict[str, Any]:
    settings = load_settings(context.run_config)
    check_model_settings(settings, "the ServerApp")  # a bad model name or quantization fails before data is read
    job = get_job(settings)
    family = job.family
    initial_state = initial_adapter_state(settings, job.task.head, len(job.labels) or None, settings.run.seed)
    recorder = RunRecorder.create(settings, {
        "family": family,
        "trainer": job.task.trainer_name,
        "labels": job.labels,
        "strategy": {"name": settings.strategy.name, "description": STRATEGIES[settings.strategy.name][1]},
        "adapter": {"tensors": len(initial_state), "parameters": int(sum(v.size for v in initial_state.values()))},
    })
    stats = site_statistics(job.sites, settings.data.task)
    recorder.write_json("sites.json", stats)
    for entry in stats:
        print(f"[fedmedlora] site {entry['site']} ({entry['name']}): train {entry['train-examples']}, "
              f"val {entry['val-examples']}, test {entry['test-examples']}"
              + (f", train entities {entry['train-entities']}" if "train-entities" in entry else ""), flush=True)
    random.seed(settings.run.seed)  # Flower samples clients with the global `random`
    np.random.seed(settings.run.seed)
    wait_for_nodes(grid, settings)
    strategy = build_strategy(settings, recorder, initial_state, job)
    round_end = RoundEnd(settings, job, recorder)
    status = "failed"
    try:
        strategy.start(
            grid=grid,
            initial_arrays=to_array_record(initial_state, "float32"),
            num_rounds=settings.num_server_rounds,
            timeout=settings.strategy.round_timeout,
            train_config=ConfigRecord(),
            evaluate_config=ConfigRecord(),
            evaluate_fn=round_end,
        )
        status = "completed"
    finally:
        summary = {"run-dir": str(recorder.run_dir)}
        if round_end.history and "server-eval" in round_end.history[-1]:
            key = job.task.primary_metric
            summary["primary-metric"] = key
            summary[f"{key}-per-round"] = [r["server-eval"]["pooled"][key] for r in round_end.history]
            summary["final-server-eval"] = round_end.history[-1]["server-eval"]["pooled"]
        path = recorder.finish(status, **summary)
        print(f"[fedmedlora] {status}: results in {recorder.run_dir} (summary: {path.name})", flush=True)
    return {"run-dir": str(recorder.run_dir), "history": round_end.history}


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_server(grid, context)
