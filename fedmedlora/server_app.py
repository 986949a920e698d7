"""The ServerApp: validate, learn the federation from its sites, start the strategy, and record every round.

Order matters: everything that can be wrong with the run config, the model or a site's data fails here, before any
ClientApp trains. The server reads no site's data: it asks every SuperNode to describe its site (a QUERY message,
answered with label names and counts only: federation/roster.py), which gives the label set, the site order and
`sites.json`. Each round ends in `RoundEnd` (Flower calls it as the strategy's `evaluate_fn` after the round):
federated evaluation where the round is evaluated (each sampled site scores the global adapter on its own held-out
split and sends counts: federation/evaluation.py), server-side evaluation on data the server holds
(`data.server-datasets`), a `peft_<round>/` checkpoint, one line in metrics.jsonl, then the state a resumed run needs
(run_state.py). A run holds its folder's lock while it runs, says "running" in summary.json from the start, and ends
"completed" only if some round aggregated.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from .data.server_site import SERVER_SITE, server_site
from .data.sites import load_sites
from .federation.evaluation import FederatedEvaluation
from .federation.process_stats import ProcessLedger
from .federation.roster import Roster, build_roster, query_sites
from .job import Job, resolve_family
from .model.adapter import load_adapter_state, lora_config, save_checkpoint
from .preflight import require
from .recorder import RunRecorder, default_run_name
from .resume import open_run, run_directory
from .run_config import load_settings
from .run_state import RunLock, restore_rng, save_round_state
from .scoring.plateau import Plateau, plateaued
from .settings import ConfigError, Settings
from .strategies import STRATEGIES, build_strategy
from .strategies.availability import connected_nodes
from .strategies.resumed import RoundsAfter
from .strategies.site_counts import ReportedCounts
from .tasks.registry import task_class
from .wire import from_array_record, to_array_record

LOG = logging.getLogger("fedmedlora")
app = ServerApp()


def wait_for_nodes(grid: Grid, settings: Settings) -> list[int]:
    """Wait up to strategy.node-wait for all data.num-sites SuperNodes; go on with at least strategy.min-replies."""
    wanted, needed, wait = settings.data.num_sites, settings.strategy.min_replies, settings.strategy.node_wait
    nodes = connected_nodes(grid, wanted, wait)
    if len(nodes) < needed:
        raise RuntimeError(
            f"key 'data.num-sites' = {wanted}, but {len(nodes)} SuperNodes connected within strategy.node-wait = "
            f"{wait:g} s (strategy.min-replies = {needed} needed to start): in a simulation run with "
            f"--federation-config \"num-supernodes={wanted}\" (`fedmedlora run` sets it for you); in a deployment "
            "start one SuperNode per site, or raise strategy.node-wait")
    if len(nodes) < wanted:
        print(f"[fedmedlora] {len(nodes)} of {wanted} sites connected within strategy.node-wait = {wait:g} s: "
              "starting with them (a site that connects later is not in this run's roster)", flush=True)
    return nodes


# What Flower logs of the evaluation (metrics.jsonl keeps everything).
HEADLINE = {"strict-f1", "lenient-f1", "typed-strict-micro-f1", "typed-strict-macro-f1", "loss", "perplexity"}


def server_sites(settings: Settings, roster: Roster) -> list:
    """The sites the server job holds: data the server holds (data.server-datasets), or, only when a strategy needs
    a validation set and none is named, the bundled pool the simulation's sites were cut from."""
    own = server_site(settings)
    if own is not None:
        return [own]
    if not STRATEGIES[settings.strategy.name].cls.needs_validation_set:
        return []
    if not roster.all_pool:
        raise ConfigError([f"key 'strategy.name' = {settings.strategy.name!r} scores client adapters on a "
                           "validation set the server holds, and the sites hold their own data (data-path), which "
                           "the server never reads: name public data in key 'data.server-datasets'"])
    return load_sites(settings)  # public: the simulation's sites are partitions of the bundled pool


def reported_counts(roster: Roster, settings: Settings, training_items: str) -> ReportedCounts:
    """What each site said it holds before round 1 (its QUERY reply), for `strategy.weight-cap`: a reply may not
    claim more training examples than its site reported, nor more tokens than those examples can hold
    (data.max-length each). An example is what the task trains on (`training_items`: a sentence, or for relation
    classification a candidate pair), the unit of the reply's `num-examples`."""
    counts = {}
    for site in roster.sites:
        items = float(site.statistics[f"train-{training_items}"])
        counts[site.node] = {"num-examples": items, "num-tokens": items * settings.data.max_length}
    return ReportedCounts(counts)


class RoundEnd:
    """Flower's evaluate_fn: called with the global adapter at round 0 and after every round."""

    def __init__(self, settings: Settings, job: Job, recorder: RunRecorder, roster: Roster,
                 evaluation: FederatedEvaluation, strategy: Any = None):
        self.settings = settings
        self.job = job
        self.recorder = recorder
        self.roster = roster
        self.evaluation = evaluation
        self.strategy = strategy  # its state is saved with every round's
        self.peft_config = lora_config(settings, job.task.head, base_model_name_or_path=settings.model.name)
        self.history: list[dict[str, Any]] = [recorder.rounds[r] for r in sorted(recorder.rounds)]  # resumed: kept
        self.ledger = ProcessLedger()
        self.last_end = time.time()

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        state = from_array_record(arrays)
        fields: dict[str, Any] = {}
        metric_record = None
        if self.settings.evaluates(server_round):
            result = self.evaluation(server_round, arrays)
            fields["server-eval"] = result
            if "pooled" in result:
                metric_record = MetricRecord({k: float(v) for k, v in result["pooled"].items() if k in HEADLINE})
            if any(site.site_id == SERVER_SITE for site in self.job.sites):
                fields["server-dataset-eval"] = self._server_side(state)
            if self.job.task.family == "causal" and self.settings.qa_benchmarks:  # public data the server holds
                fields.setdefault("server-eval", {})["benchmarks"] = self._benchmarks(state)
        every = self.settings.evaluate.checkpoint_every
        stop = self._plateau(server_round, fields)
        last = server_round == self.settings.num_server_rounds or stop is not None
        # peft_0 is the initial adapter (the zero-shot model, re-scorable with eval.py); then every `every` rounds
        if last or (every and server_round % every == 0):
            path = save_checkpoint(self.recorder.run_dir / f"peft_{server_round}", state, self.peft_config,
                                   extra=self.job.checkpoint_info(server_round))
            fields["checkpoint"] = path.name
        fields["processes"] = self._processes(server_round, fields.get("server-eval", {}).get("clients", []))
        record = self.recorder.end_round(server_round, **fields)
        self.history.append(record)
        if self.strategy is not None:  # after the metrics line: a state never runs ahead of metrics.jsonl
            save_round_state(self.recorder.run_dir, server_round, state, *self.strategy.state_dict())
        self._log_round(record)
        if stop is not None:
            raise stop
        return metric_record

    def _benchmarks(self, state: dict) -> dict[str, Any]:
        """evaluate.qa-benchmarks: the global adapter's accuracy on fixed samples of public QA sets (FlowerTune's
        leaderboard protocol, generate and loglik mode from one pass), scored by the server."""
        load_adapter_state(self.job.resident().model, state)
        return self.job.benchmark_scores()

    def _server_side(self, state: dict) -> dict[str, Any]:
        """The global adapter scored by the server on data it holds (data.server-datasets)."""
        start = time.perf_counter()
        load_adapter_state(self.job.resident().model, state)
        result = self.job.evaluate(self.settings.evaluate.split, [SERVER_SITE])
        return {"pooled": result["sites"][str(SERVER_SITE)], "datasets": self.settings.server_datasets,
                "seconds": time.perf_counter() - start}

    def _processes(self, server_round: int, eval_clients: list[dict[str, Any]]) -> dict[str, Any]:
        """What this round's messages cost the sites besides their work (federation/process_stats.py)."""
        replies = list(self.recorder.round(server_round).get("clients", [])) + list(eval_clients)
        if server_round == 0:
            replies += [{**site.metrics, "site": site.index} for site in self.roster.sites]
        for reply in replies:
            self.ledger.add(str(reply.get("site", reply.get("node"))), reply)
        now = time.time()
        figures = ProcessLedger.round_figures(replies, now - self.last_end)
        self.last_end = now
        return figures

    def _plateau(self, server_round: int, fields: dict[str, Any]) -> Plateau | None:
        """The stop, when evaluate.plateau-rounds is on and this round's pooled score says the run has converged."""
        rounds, delta = self.settings.evaluate.plateau_rounds, self.settings.evaluate.plateau_delta
        if not rounds or "server-eval" not in fields:
            return None
        key = self.job.task.primary_metric
        if "pooled" not in fields["server-eval"]:
            return None
        evaluated = [r for r in self.history if "pooled" in r.get("server-eval", {})]  # evaluate.every may skip
        scores = [r["server-eval"]["pooled"][key] for r in evaluated] + [fields["server-eval"]["pooled"][key]]
        if not plateaued(scores, rounds, delta):
            return None
        stop = Plateau(server_round, max(scores[:-rounds]), rounds, delta)
        fields["plateau"] = stop.as_dict()
        return stop

    def _log_round(self, record: dict[str, Any]) -> None:
        parts = [f"round {record['round']}"]
        evaluation = record.get("server-eval", {})
        if "pooled" in evaluation:
            pooled = evaluation["pooled"]
            key = self.job.task.primary_metric
            per_site = ", ".join(f"site{s} {m[key]:.3f}" for s, m in evaluation["sites"].items())
            parts.append(f"{key} {pooled[key]:.4f} (pooled; {per_site})")
            if "lenient-f1" in pooled:
                parts.append(f"lenient-f1 {pooled['lenient-f1']:.4f}")
        if evaluation.get("failures"):
            parts.append(f"{len(evaluation['failures'])} sites did not evaluate")
        if "server-dataset-eval" in record:
            key = self.job.task.primary_metric
            parts.append(f"server data {key} {record['server-dataset-eval']['pooled'][key]:.4f}")
        for name, scores in evaluation.get("benchmarks", {}).items():
            parts.append(f"{name} accuracy {scores['generate-accuracy']:.4f} (loglik {scores['loglik-accuracy']:.4f})")
        if "train-aggregated" in record:
            parts.append(f"train-loss {record['train-aggregated'].get('train-loss', float('nan')):.4f}")
        comm = record.get("comm", {})
        parts.append(f"comm {comm.get('sent-mib', 0) + comm.get('received-mib', 0):.2f} MiB "
                     f"(total {comm.get('total-sent-mib', 0) + comm.get('total-received-mib', 0):.2f})")
        LOG.info("[fedmedlora] %s", " | ".join(parts))
        print("[fedmedlora] " + " | ".join(parts), flush=True)


def run_server(grid: Grid, context: Context) -> dict[str, Any]:
    settings = load_settings(context.run_config)
    # every cheap check first, every problem in one message; the sites check their own data when asked (QUERY)
    require(settings, where="the ServerApp", data=False)
    family = resolve_family(settings)
    run_dir = run_directory(settings, settings.run.name or default_run_name(settings))
    with RunLock(run_dir):
        nodes = wait_for_nodes(grid, settings)
        replies = query_sites(grid, nodes, settings.strategy.round_timeout)
        roster = build_roster(settings, replies, nodes, task_class(settings, family).union_vocabulary)
        job = Job(settings, sites=server_sites(settings, roster), vocabulary=roster.vocabulary)
        initial_state = job.initial_adapter()
        recorder, resumed = open_run(settings, run_dir, {
            "family": family,
            "trainer": job.task.trainer_name,
            "labels": job.labels,
            "strategy": {"name": settings.strategy.name, "description": STRATEGIES[settings.strategy.name][1]},
            "adapter": {"tensors": len(initial_state),
                        "parameters": int(sum(v.size for v in initial_state.values()))},
            "sites": [{"site": s.index, "name": s.name, "kind": s.kind, "node": str(s.node)} for s in roster.sites],
        })
        return _run(grid, settings, job, roster, initial_state, recorder, resumed)


def _run(grid: Grid, settings: Settings, job: Job, roster: Roster, initial_state: dict[str, np.ndarray],
         recorder: RunRecorder, resumed: Any) -> dict[str, Any]:
    round_end = RoundEnd(settings, job, recorder, roster, FederatedEvaluation(settings, roster, job.task, grid,
                                                                             recorder, initial_state))
    status, reason, stopped = "failed", "", None
    try:
        recorder.write_json("sites.json", roster.statistics())
        for entry in roster.statistics():
            print(f"[fedmedlora] site {entry['site']} ({entry['name']}): train {entry['train-examples']}, "
                  f"val {entry['val-examples']}, test {entry['test-examples']}"
                  + (f", train entities {entry['train-entities']}" if "train-entities" in entry else ""), flush=True)
        random.seed(settings.run.seed)  # Flower samples clients with the global `random`
        np.random.seed(settings.run.seed)
        strategy = build_strategy(settings, recorder, initial_state, job,
                                  reported_counts(roster, settings, job.task.training_items))
        strategy.limit_to_nodes(roster.nodes)  # a node that connects later described no site: it is not sampled
        round_end.strategy = strategy
        round_end.evaluation.rank_of = strategy.node_rank  # FlexLoRA: evaluate each site at its rank
        arrays, done, driver, evaluate_fn = initial_state, 0, strategy, round_end
        if resumed is not None:
            if {k: v.shape for k, v in resumed.adapter.items()} != {k: v.shape for k, v in initial_state.items()}:
                raise ValueError(f"{recorder.run_dir}: the saved adapter does not fit this model's adapter")
            strategy.load_state(resumed.strategy_arrays, resumed.strategy_info)
            arrays, done = resumed.adapter, resumed.round
            driver = RoundsAfter(strategy, done)
            evaluate_fn = driver.evaluate_fn(round_end)
            restore_rng(resumed)  # last: the next draw is round done + 1's sampling, as in an unbroken run
            print(f"[fedmedlora] resuming {recorder.run_dir.name} after round {done} of "
                  f"{settings.num_server_rounds} (Flower numbers the remaining rounds from 1)", flush=True)
        driver.start(
            grid=grid,
            initial_arrays=to_array_record(arrays, "float32"),
            num_rounds=settings.num_server_rounds - done,
            timeout=settings.strategy.round_timeout,
            train_config=ConfigRecord(roster.message_config()),
            evaluate_config=ConfigRecord(roster.message_config()),
            evaluate_fn=evaluate_fn,
        )
        if any(r.get("aggregated") for k, r in recorder.rounds.items() if k > 0):
            status = "completed"
        else:
            reason = ("no round aggregated: every round had fewer usable replies than strategy.min-replies = "
                      f"{settings.strategy.min_replies} (metrics.jsonl says why, round by round)")
    except Plateau as stop:  # converged before num-server-rounds: a completed run
        status, stopped = "completed", stop.as_dict()
        print(f"[fedmedlora] {stop}", flush=True)
    except (KeyboardInterrupt, SystemExit):
        status = "interrupted"
        raise
    except Exception as err:
        reason = f"{type(err).__name__}: {str(err)[:2000]}"
        raise
    finally:
        summary: dict[str, Any] = {"run-dir": str(recorder.run_dir), "processes-per-site": round_end.ledger.sites,
                                   **({"reason": reason} if reason else {})}
        if stopped is not None:
            summary["stopped-at-plateau"] = stopped
        evaluated = [r for r in round_end.history if "pooled" in r.get("server-eval", {})]
        if evaluated:
            key = job.task.primary_metric
            summary["primary-metric"] = key
            summary[f"{key}-per-round"] = [r["server-eval"]["pooled"][key] for r in evaluated]
            summary["evaluated-rounds"] = [r["round"] for r in evaluated]
            summary["final-server-eval"] = evaluated[-1]["server-eval"]["pooled"]
        path = recorder.finish(status, **summary)
        print(f"[fedmedlora] {status}: results in {recorder.run_dir} (summary: {path.name})"
              + (f": {reason}" if reason else ""), flush=True)
    if status == "failed":  # no round aggregated: the run must not look like it worked
        raise RuntimeError(f"run {recorder.run_dir.name} failed: {reason}")
    return {"run-dir": str(recorder.run_dir), "history": round_end.history}


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_server(grid, context)
