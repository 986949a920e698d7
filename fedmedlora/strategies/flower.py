"""Flower's own strategies, reused as they are: each class only puts `LoraStrategyMixin` in front.

The mixin screens and widens the replies to float32 before the Flower parent aggregates them, and the parent sees
the float32 global arrays in `configure_train` (FedOpt and FedAvgM keep them for their server step); only the
outgoing messages are cast to the wire dtype. These rules combine each tensor on its own (factor averaging for LoRA):
`strategy.lora-aggregation = "product"` does not apply to them. FedMedian and FedTrimmedAvg ignore client weights
for the arrays (Flower's behaviour); every strategy here weights the client metrics by `strategy.weight-by`.

The settings each one reads are in `FLOWER_KWARGS` (run-config key -> Flower argument).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvgM, FedMedian, FedProx, FedTrimmedAvg, FedYogi

from ..settings import Settings
from .base import LoraStrategyMixin


class LoraFedProx(LoraStrategyMixin, FedProx):
    """FedProx (Li et al. 2020): Flower sends `proximal-mu`; the client adds (mu/2)||w - w_global||^2 (training.py)."""


class LoraFedAdam(LoraStrategyMixin, FedAdam):
    """FedAdam (Reddi et al. 2021): Adam on the server with the averaged update as pseudo-gradient."""


class LoraFedYogi(LoraStrategyMixin, FedYogi):
    """FedYogi (Reddi et al. 2021)."""


class LoraFedAdagrad(LoraStrategyMixin, FedAdagrad):
    """FedAdagrad (Reddi et al. 2021)."""


class LoraFedAvgM(LoraStrategyMixin, FedAvgM):
    """FedAvgM (Hsu et al. 2019): server momentum on the averaged update."""


class LoraFedMedian(LoraStrategyMixin, FedMedian):
    """Coordinate-wise median (Yin et al. 2018)."""


class LoraFedTrimmedAvg(LoraStrategyMixin, FedTrimmedAvg):
    """Coordinate-wise trimmed mean (Yin et al. 2018): `strategy.trimmed-fraction` cut at each end."""


# Flower's default server learning rate of each strategy (`strategy.server-learning-rate = 0` keeps it).
FLOWER_SERVER_LR = {"fedadam": 0.1, "fedyogi": 0.01, "fedadagrad": 0.1, "fedavgm": 1.0}


def _server_lr(name: str) -> Callable[[Settings], float]:
    return lambda s: s.strategy.server_learning_rate or FLOWER_SERVER_LR[name]


# name -> {run-config key: (Flower argument, value from the settings)}
FLOWER_KWARGS: dict[str, dict[str, tuple[str, Callable[[Settings], Any]]]] = {
    "fedprox": {"strategy.proximal-mu": ("proximal_mu", lambda s: s.strategy.proximal_mu)},
    "fedadam": {"strategy.server-learning-rate": ("eta", _server_lr("fedadam")),
                "strategy.beta-1": ("beta_1", lambda s: s.strategy.beta_1),
                "strategy.beta-2": ("beta_2", lambda s: s.strategy.beta_2),
                "strategy.tau": ("tau", lambda s: s.strategy.tau)},
    "fedyogi": {"strategy.server-learning-rate": ("eta", _server_lr("fedyogi")),
                "strategy.beta-1": ("beta_1", lambda s: s.strategy.beta_1),
                "strategy.beta-2": ("beta_2", lambda s: s.strategy.beta_2),
                "strategy.tau": ("tau", lambda s: s.strategy.tau)},
    "fedadagrad": {"strategy.server-learning-rate": ("eta", _server_lr("fedadagrad")),
                   "strategy.tau": ("tau", lambda s: s.strategy.tau)},
    "fedavgm": {"strategy.server-learning-rate": ("server_learning_rate", _server_lr("fedavgm")),
                "strategy.server-momentum": ("server_momentum", lambda s: s.strategy.server_momentum)},
    "fedmedian": {},
    "fedtrimmedavg": {"strategy.trimmed-fraction": ("beta", lambda s: s.strategy.trimmed_fraction)},
}


def flower_kwargs(name: str, settings: Settings) -> dict[str, Any]:
    return {argument: value(settings) for argument, value in FLOWER_KWARGS[name].values()}
