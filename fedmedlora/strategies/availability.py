"""Who can take part: the SuperNodes connected now, waited for with a deadline, never forever.

Flower's `sample_nodes` waits without a deadline until `min_available_nodes` nodes are connected, asks
`grid.get_node_ids()` more than once, and its FedAvg samples `max(int(connected * fraction), min_train_nodes)` nodes.
With those fixed at the number of sites, one lost site (a killed SuperNode) hangs every later round. Here a phase
first waits, at most `strategy.node-wait` seconds, for enough nodes, then hands Flower one snapshot of the connected
nodes (`NodeSnapshot`), so a node lost between Flower's calls cannot make it wait, and Flower's own sampling (and
its use of the global `random`) picks `min(clients-per-round, connected)` of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class NodeSnapshot:
    """A Grid whose `get_node_ids` is a fixed list (taken once per phase); everything else is the real grid's."""

    def __init__(self, grid: Any, nodes: list[int]):
        self._grid = grid
        self.nodes = list(nodes)

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class OnlyNodes:
    """A Grid that shows only the given nodes among those connected (the sites in the run's roster)."""

    def __init__(self, grid: Any, nodes: set[int]):
        self._grid = grid
        self.nodes = set(nodes)

    def get_node_ids(self) -> list[int]:
        return [n for n in self._grid.get_node_ids() if n in self.nodes]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def connected_nodes(grid: Any, wanted: int, wait: float, *, poll: float = 1.0,
                    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
                    ) -> list[int]:
    """The connected node ids as soon as there are `wanted` of them, or whatever is connected after `wait` seconds."""
    deadline = clock() + max(wait, 0.0)
    nodes = list(grid.get_node_ids())
    while len(nodes) < wanted and (left := deadline - clock()) > 0:
        sleep(min(poll, left))
        nodes = list(grid.get_node_ids())
    return nodes
