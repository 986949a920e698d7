"""When a run has converged: the pooled score has stopped improving (`evaluate.plateau-rounds`, `-delta`).

A run that still improves is cut short by a fixed round budget; a comparison at convergence needs each strategy run
until its score stops rising. The rule: the best score of the last `rounds` rounds is at most `delta` above the best
score before them (e.g. 0.3 F1 points over 3 rounds). Round 0 (the initial adapter) counts as "before".
"""

from __future__ import annotations

from collections.abc import Sequence


class Plateau(Exception):
    """Raised by the server's round end when the score has plateaued: the run stops there, completed."""

    def __init__(self, server_round: int, best: float, rounds: int, delta: float):
        self.server_round, self.best, self.rounds, self.delta = server_round, best, rounds, delta
        super().__init__(f"round {server_round}: the best score of the last {rounds} rounds is within {delta:g} of "
                         f"the best before them ({best:.4f}): stopping")

    def as_dict(self) -> dict[str, float]:
        return {"round": self.server_round, "best-before": self.best, "rounds": self.rounds, "delta": self.delta}


def plateaued(scores: Sequence[float], rounds: int, delta: float) -> bool:
    """True when scores (round 0 first) end in `rounds` rounds none of which beat the earlier best by more than
    `delta`; False while there are not yet `rounds` rounds after round 0, or when `rounds` is 0 (off)."""
    if rounds <= 0 or len(scores) < rounds + 2:
        return False
    return max(scores[-rounds:]) - max(scores[:-rounds]) <= delta
