"""Flower's own round loop, started after round k: how a resumed run plays its remaining rounds.

`Strategy.start` always counts rounds from 1 and evaluates the initial arrays as round 0. A run resumed after round k
starts Flower's loop for the N - k rounds left on the adapter saved after round k, through `RoundsAfter`, which hands
the strategy (and `evaluate_fn`) the true round number k + r: the learning-rate schedule, FedAdam's bias
correction, the clients' round seeds and metrics.jsonl all see the rounds they would have seen in an unbroken run.
Flower's round 0 evaluation is skipped: round k was evaluated and recorded before the run stopped. Flower's own log
lines number the remaining rounds 1..N-k.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp.strategy import Strategy


class RoundsAfter(Strategy):
    """`strategy` with Flower's round r presented as round `done` + r."""

    def __init__(self, strategy: Any, done: int):
        self.strategy = strategy
        self.done = done

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Any) -> Iterable[Message]:
        return self.strategy.configure_train(server_round + self.done, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.strategy.aggregate_train(server_round + self.done, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Any) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round + self.done, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round + self.done, replies)

    def summary(self) -> None:
        self.strategy.summary()

    def evaluate_fn(self, evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None]
                    ) -> Callable[[int, ArrayRecord], MetricRecord | None]:
        """`evaluate_fn` on true round numbers, without Flower's round 0 (round `done`, already recorded)."""
        def shifted(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            return None if server_round == 0 else evaluate_fn(server_round + self.done, arrays)
        return shifted
