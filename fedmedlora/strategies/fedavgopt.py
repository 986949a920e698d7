"""FedAvgOpt (FlowerTune medical seed, arXiv 2501.15949): FedAvg with per-client coefficients from Nelder-Mead.

The rule itself is `aggregation/fedavgopt.py` (Gram-matrix objective, same alpha as the seed's direct objective).
Here: n_i is each client's weight metric (examples by default, as the seed), alpha starts at 1, is unbounded and
not normalised, and the iteration cap is `strategy.fedavgopt-max-iter` (0: scipy's default, as the seed). The
aggregate combines the LoRA factors, as the seed does: the objective is defined on the factor tensors and alpha
need not be positive or sum to 1, so `strategy.lora-aggregation = "product"` is refused for it.
alpha, the objective before/after and the optimiser's work are recorded per round and printed.
"""

from __future__ import annotations

import numpy as np
from flwr.app import MetricRecord
from flwr.serverapp.strategy import FedAvg

from ..aggregation.fedavgopt import client_coefficients, fedavgopt
from .base import LoraStrategyMixin, Reply, State, announce


class LoraFedAvgOpt(LoraStrategyMixin, FedAvg):
    keys = ("strategy.fedavgopt-max-iter",)

    def aggregate_replies(self, server_round: int, replies: list[Reply]) -> tuple[State, MetricRecord]:
        n = np.asarray([float(r.metrics[self.weighted_by_key]) for r in replies])
        max_iter = self.settings.strategy.fedavgopt_max_iter or None
        aggregate, alpha, info = fedavgopt([r.state for r in replies], n, maxiter=max_iter)
        nodes = [str(r.node) for r in replies]
        coefficients = client_coefficients(alpha, n)
        self.recorder.round(server_round)["fedavgopt"] = {
            "alpha": dict(zip(nodes, map(float, alpha))),
            "coefficients": dict(zip(nodes, map(float, coefficients))),
            "n": dict(zip(nodes, map(float, n))),
            "objective-fedavg": info["objective_start"],
            "objective": info["objective_end"],
            "iterations": info["iterations"],
            "evaluations": info["evaluations"],
            "converged": info["success"],
            "seconds": info["gram_seconds"] + info["optimise_seconds"] + info["aggregate_seconds"],
        }
        self.recorder.round(server_round)["weights"] = dict(zip(nodes, map(float, coefficients)))
        announce(f"round {server_round} fedavgopt: alpha "
                 + ", ".join(f"{r.label} {a:.4f}" for r, a in zip(replies, alpha))
                 + f" | objective {info['objective_start']:.4f} (FedAvg) -> {info['objective_end']:.4f} "
                 f"in {info['evaluations']} evaluations")
        return aggregate, self.client_metrics(replies)
