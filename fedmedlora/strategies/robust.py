"""Byzantine-robust rules, Flower's own: Krum, MultiKrum and Bulyan with `LoraStrategyMixin` in front.

They compare whole client adapters (every LoRA factor and the head, flattened) and keep those closest to the others,
so a minority of poisoned updates is left out instead of averaged in. `strategy.malicious-nodes` is the f each
rule tolerates: Krum and MultiKrum score each update by its distance to its n - f - 2 nearest neighbours (sound for
n > 2f + 2 replies), Bulyan runs that selection and then a coordinate-wise trimmed mean around the median (it needs
n >= 4f + 3, and Flower skips the round otherwise). Which replies each round kept is recorded in metrics.jsonl
(`krum-selected`). The mixin screens the replies first (weight cap, norm bound), so these rules only see usable
adapters. Like FedMedian and FedTrimmedAvg they combine each LoRA factor on its own (no product aggregation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import RecordDict
from flwr.serverapp.strategy import Bulyan, Krum, MultiKrum
from flwr.serverapp.strategy.multikrum import select_multikrum

from ..settings import Settings
from .base import LoraStrategyMixin, Reply


def _selected_nodes(contents: list[RecordDict], selected: list[RecordDict], replies: list[Reply]) -> list[int]:
    by_content = {id(c): r.node for c, r in zip(contents, replies)}
    return [by_content[id(c)] for c in selected]


class _KrumFamily(LoraStrategyMixin):
    """Shared: the f key and its rule, and recording of the selected replies."""

    keys: tuple[str, ...] = ("strategy.malicious-nodes",)
    rule_name = "krum"

    @classmethod
    def settings_problems(cls, settings: Settings) -> list[str]:
        f, n = settings.strategy.malicious_nodes, settings.clients_per_round
        if n <= 2 * f + 2:
            return [f"key 'strategy.malicious-nodes' = {f}: {cls.rule_name} needs more than 2f + 2 = {2 * f + 2} "
                    f"replies a round, and {n} sites are sampled (strategy.clients-per-round, data.num-sites)"]
        return []

    def record_selection(self, server_round: int, replies: list[Reply], count: int) -> None:
        contents = [r.message.content for r in replies]
        selected = select_multikrum(contents, self.settings.strategy.malicious_nodes, count)
        self.recorder.round(server_round)["krum-selected"] = _selected_nodes(contents, selected, replies)


class LoraKrum(_KrumFamily, Krum):
    """Krum (Blanchard et al. 2017): the one update closest to its n - f - 2 nearest neighbours."""

    @classmethod
    def flower_arguments(cls, settings: Settings) -> dict[str, Any]:
        return {"num_malicious_nodes": settings.strategy.malicious_nodes}

    def aggregate_replies(self, server_round: int, replies: list[Reply]):
        result = super().aggregate_replies(server_round, replies)  # the mixin rebuilds the messages first
        self.record_selection(server_round, replies, 1)
        return result


class LoraMultiKrum(_KrumFamily, MultiKrum):
    """MultiKrum (Blanchard et al. 2017): the weighted average of the m best-scored updates."""

    keys = ("strategy.malicious-nodes", "strategy.krum-select")
    rule_name = "multikrum"

    @staticmethod
    def select_count(settings: Settings) -> int:
        return settings.strategy.krum_select or settings.clients_per_round - settings.strategy.malicious_nodes

    @classmethod
    def settings_problems(cls, settings: Settings) -> list[str]:
        problems = super().settings_problems(settings)
        f, n, m = settings.strategy.malicious_nodes, settings.clients_per_round, settings.strategy.krum_select
        if m > n - f:
            problems.append(f"key 'strategy.krum-select' = {m}: at most n - f = {n - f} (sites sampled a round "
                            "minus strategy.malicious-nodes)")
        return problems

    @classmethod
    def flower_arguments(cls, settings: Settings) -> dict[str, Any]:
        return {"num_malicious_nodes": settings.strategy.malicious_nodes,
                "num_nodes_to_select": cls.select_count(settings)}

    def aggregate_replies(self, server_round: int, replies: list[Reply]):
        result = super().aggregate_replies(server_round, replies)
        self.record_selection(server_round, replies, self.num_nodes_to_select)
        return result


class LoraBulyan(_KrumFamily, Bulyan):
    """Bulyan (El Mhamdi et al. 2018): MultiKrum selection of n - 2f updates, then per coordinate the mean of the
    n - 4f values closest to the median."""

    rule_name = "bulyan"

    @classmethod
    def settings_problems(cls, settings: Settings) -> list[str]:
        f, n = settings.strategy.malicious_nodes, settings.clients_per_round
        if n < 4 * f + 3:
            return [f"key 'strategy.malicious-nodes' = {f}: bulyan needs at least 4f + 3 = {4 * f + 3} replies a "
                    f"round, and {n} sites are sampled (strategy.clients-per-round, data.num-sites)"]
        return []

    @classmethod
    def flower_arguments(cls, settings: Settings) -> dict[str, Any]:
        return {"num_malicious_nodes": settings.strategy.malicious_nodes}

    def setup(self, job: Any) -> dict[str, Any]:
        self.selection_rule = self._recording(self.selection_rule)
        return {}

    def _recording(self, rule: Callable[..., list[RecordDict]]) -> Callable[..., list[RecordDict]]:
        """Flower's selection rule, remembering which replies it kept (Bulyan takes the rule as an argument)."""

        def select(contents: list[RecordDict], num_malicious: int, count: int) -> list[RecordDict]:
            selected = rule(contents, num_malicious, count)
            self._last_selection = [next(i for i, x in enumerate(contents) if x is c) for c in selected]
            return selected

        select.__name__ = rule.__name__
        return select

    def aggregate_replies(self, server_round: int, replies: list[Reply]):
        self._last_selection: list[int] = []
        result = super().aggregate_replies(server_round, replies)
        self.recorder.round(server_round)["krum-selected"] = [replies[i].node for i in self._last_selection]
        return result

