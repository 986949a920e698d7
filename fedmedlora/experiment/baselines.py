"""The experiment's baselines, trained and scored in this process: zero-shot, single-site, centralized.

None of them is a federation, so none goes through Flower. They use the federation's own parts on the same job
(sites, task, resident model, tokenized splits): the round-0 adapter from `initial_adapter_state` with the run seed,
`train_locally` (a fresh Trainer and optimizer per round, the round's learning rate from `settings.learning_rate`,
the round's seed from `round_seed`), and `job.evaluate` (every site's evaluation split and the pooled split, scored
by the task's `score()`), exactly as the ServerApp scores a global adapter after each round.

- zero-shot: the round-0 adapter, scored once (an encoder: its untrained head; a causal LM: the base as prompted).
- single-site: for each site k, `num-server-rounds` rounds of the same local work as a federated client, on site k's
  training split only, scored after each round. Site k's round-r seed is the one federated client k uses.
- centralized: one client on the pooled training rows of every site. Each round it does the federation's total
  optimizer steps of a round, clients-per-round x train.local-steps; with train.local-epochs, that many epochs over
  the pool (which is what all clients together see when every site takes part). Its seed is that of a site n
  (one past the last real site).

Each model's rounds are appended to `runs/<model>/metrics.jsonl` as they finish, by the same `RunRecorder` the server
uses (the same "server-eval" field), and its final adapter is saved as `runs/<model>/peft_<round>/` (a PEFT folder
with the same `fedmedlora.json` as a federated run's).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from ..job import Job
from ..model.adapter import adapter_state, initial_adapter_state, load_adapter_state, lora_config, save_checkpoint
from ..model.training import round_seed, train_locally
from ..recorder import RunRecorder
from ..scoring.plateau import plateaued
from ..settings import Settings, with_overrides
from .report import ModelResult, RoundScores


def centralized_settings(settings: Settings) -> Settings:
    """The settings of the centralized client: a round's local work = the whole federation's in a round."""
    if settings.train.local_steps > 0:
        return with_overrides(settings, {"train.local-steps": settings.clients_per_round * settings.train.local_steps})
    return settings  # epochs over the pool: every example once per local epoch, as all the sites together


def round_scores(job: Job, server_round: int, result: dict[str, Any]) -> RoundScores:
    """`job.evaluate`'s output (sites keyed by index) as RoundScores keyed by site name."""
    names = [site.name for site in job.sites]
    return RoundScores(server_round, dict(result["pooled"]),
                       {names[int(k)]: dict(v) for k, v in result["sites"].items()},
                       dict(result.get("benchmarks", {})))


class Baselines:
    """The in-process settings of one experiment, sharing one job, one resident model and one round-0 score."""

    def __init__(self, job: Job, runs_dir: Path, log: Callable[[str], None] = print):
        self.job = job
        self.settings = job.settings
        self.runs_dir = Path(runs_dir)
        self.log = log
        self.split = self.settings.evaluate.split
        self.initial = initial_adapter_state(self.settings, job.task.head, len(job.labels) or None,
                                             self.settings.run.seed)
        self._round_zero: tuple[dict[str, Any], float] | None = None

    # --- shared pieces -----------------------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        return self.job.resident().model

    def _evaluate(self) -> tuple[dict[str, Any], float]:
        start = time.perf_counter()
        result = self.job.evaluate(self.split)
        if benchmarks := self.job.benchmark_scores():  # evaluate.qa-benchmarks, as the server scores them
            result["benchmarks"] = benchmarks
        return result, time.perf_counter() - start

    def round_zero(self) -> tuple[dict[str, Any], float]:
        """The initial adapter's scores: zero-shot's result and every trained model's round 0 (computed once)."""
        if self._round_zero is None:
            load_adapter_state(self.model, self.initial)
            self._round_zero = self._evaluate()
        return self._round_zero

    def _record(self, recorder: RunRecorder, server_round: int, result: dict[str, Any], seconds: float,
                train: dict[str, Any] | None = None) -> None:
        fields: dict[str, Any] = {"server-eval": {**result, "split": self.split, "seconds": seconds}}
        if train is not None:
            fields["train"] = train
        recorder.end_round(server_round, **fields)

    def _recorder(self, name: str) -> RunRecorder:
        path = self.runs_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return RunRecorder(path)

    def _checkpoint(self, run_dir: Path, server_round: int, setting: str) -> None:
        save_checkpoint(run_dir / f"peft_{server_round}", adapter_state(self.model),
                        lora_config(self.settings, self.job.task.head, base_model_name_or_path=self.settings.model.name),
                        extra=self.job.checkpoint_info(server_round, setting=setting))

    def _log_round(self, label: str, server_round: int, result: dict[str, Any], train: dict[str, Any] | None) -> None:
        key = self.job.task.primary_metric
        pooled = result["pooled"]
        parts = [f"[experiment] {label} round {server_round}/{self.settings.num_server_rounds}"]
        if train is not None:
            parts.append(f"train-loss {train['train-loss']:.4f} ({train['train-steps']} steps, "
                         f"{train['train-seconds']:.0f} s)")
        parts.append(f"pooled {key} {pooled[key]:.4f}"
                     + (f", lenient-f1 {pooled['lenient-f1']:.4f}" if "lenient-f1" in pooled else ""))
        self.log(" | ".join(parts))

    def _train_rounds(self, *, label: str, setting: str, model_name: str, run_name: str, settings: Settings,
                      dataset: Any, seed_site: int) -> ModelResult:
        """`num-server-rounds` rounds of local work (`settings.train`) from the round-0 adapter, scored after each."""
        recorder = self._recorder(run_name)
        zero, zero_seconds = self.round_zero()
        self._record(recorder, 0, zero, zero_seconds)
        start = time.perf_counter()  # the model's own work: its rounds of training and scoring
        result = ModelResult(setting, model_name, [round_scores(self.job, 0, zero)], run_dir=f"runs/{run_name}")
        load_adapter_state(self.model, self.initial)
        rounds = self.settings.num_server_rounds
        key, plateau = self.job.task.primary_metric, self.settings.evaluate
        for server_round in range(1, rounds + 1):
            train = train_locally(settings, self.job.task, self.job.resident(), dataset,
                                  learning_rate=self.settings.learning_rate(server_round),
                                  seed=round_seed(self.settings, server_round, seed_site))
            train["num-examples"] = len(dataset)
            evaluation, seconds = self._evaluate()
            self._record(recorder, server_round, evaluation, seconds, train)
            self._log_round(label, server_round, evaluation, train)
            result.rounds.append(round_scores(self.job, server_round, evaluation))
            if plateaued([r.pooled[key] for r in result.rounds], plateau.plateau_rounds, plateau.plateau_delta):
                rounds = server_round  # converged: evaluate.plateau-rounds, as a federated run stops
                break
        self._checkpoint(recorder.run_dir, rounds, setting)
        result.wall_seconds = time.perf_counter() - start
        return result

    # --- the three settings --------------------------------------------------------------------------------------
    def zero_shot(self) -> ModelResult:
        recorder = self._recorder("zero-shot")
        result, seconds = self.round_zero()
        self._record(recorder, 0, result, seconds)
        self._log_round("zero-shot", 0, result, None)
        return ModelResult("zero-shot", "-", [round_scores(self.job, 0, result)], wall_seconds=seconds,
                           run_dir="runs/zero-shot")

    def single_site_run_name(self, site_id: int) -> str:
        return f"single-site-{site_id}-{self.job.sites[site_id].name}"

    def single_site(self, site_id: int) -> ModelResult:
        site = self.job.sites[site_id]
        return self._train_rounds(label=f"single-site {site.name}", setting="single-site", model_name=site.name,
                                  run_name=self.single_site_run_name(site_id), settings=self.settings,
                                  dataset=self.job.tokenized(site_id, "train"), seed_site=site_id)

    def centralized(self) -> ModelResult:
        import datasets

        pool = datasets.concatenate_datasets([self.job.tokenized(k, "train") for k in range(len(self.job.sites))])
        return self._train_rounds(label="centralized", setting="centralized", model_name="all sites pooled",
                                  run_name="centralized", settings=centralized_settings(self.settings), dataset=pool,
                                  seed_site=len(self.job.sites))

