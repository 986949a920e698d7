"""Flower's own strategies, reused as they are: each class only puts `LoraStrategyMixin` in front and says which of
its constructor arguments come from which run-config keys.

The mixin screens and widens the replies to float32 before the Flower parent aggregates them, and the parent sees
the float32 global arrays in `configure_train` (FedOpt and FedAvgM keep them for their server step); only the
outgoing messages are cast to the wire dtype. These rules combine each tensor on its own (factor averaging for LoRA):
`strategy.lora-aggregation = "product"` does not apply to them. FedMedian and FedTrimmedAvg ignore client weights
for the arrays (Flower's behaviour); every strategy here weights the client metrics by `strategy.weight-by`.

Flower's server optimisers keep state across rounds (FedAdam/FedYogi/FedAdagrad: moments `m_t`, `v_t`; FedAvgM: its
momentum and its copy of the arrays): `state_dict` / `load_state` hand it to the per-round resume state, exactly
(dtype included), so a resumed run takes the same server steps as one never stopped.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvgM, FedMedian, FedProx, FedTrimmedAvg, FedYogi

from ..settings import Settings
from .base import LoraStrategyMixin, announce

# The median |update| of a FedAvg round's coordinate on the default NER task is 0.007 (results/server-lr): a tau well
# below it normalises every coordinate to a step of about the server learning rate.
SMALL_UPDATE = 0.005
_ADAM_KEYS = ("strategy.server-learning-rate", "strategy.beta-1", "strategy.beta-2", "strategy.tau")


def server_learning_rate(settings: Settings, flower_default: float) -> float:
    """`strategy.server-learning-rate`, or the Flower strategy's own default when it is 0."""
    return settings.strategy.server_learning_rate or flower_default


class LoraFedProx(LoraStrategyMixin, FedProx):
    """FedProx (Li et al. 2020): Flower sends `proximal-mu`; the client adds (mu/2)||w - w_global||^2 (training.py)."""

    keys = ("strategy.proximal-mu",)

    @classmethod
    def flower_arguments(cls, settings: Settings) -> dict[str, Any]:
        return {"proximal_mu": settings.strategy.proximal_mu}


def _prefixed(prefix: str, arrays: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": v for k, v in (arrays or {}).items()}


def _unprefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The arrays saved under `prefix/`, or None if none were (the parent had not made them yet)."""
    found = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.split("/", 1)[0] == prefix}
    return found or None


class _ServerMoments:
    """FedOpt's state: the moments m_t and v_t (None before the first aggregated round); its `current_arrays` is
    set from the global adapter at every configure_train, so it need not be kept."""

    m_t: dict[str, np.ndarray] | None
    v_t: dict[str, np.ndarray] | None

    def setup(self, job: Any) -> dict[str, Any]:
        tau = self.settings.strategy.tau  # type: ignore[attr-defined]
        if tau < SMALL_UPDATE:
            announce(f"strategy.tau = {tau:g} is below a LoRA round's typical update (~{SMALL_UPDATE:g} a coordinate "
                     "on the default task), so every coordinate moves by about the server learning rate: with "
                     "Flower's defaults these optimisers end at strict F1 0 on LoRA factors (results/server-lr/). "
                     "tau = 0.01 with server-learning-rate = 0.1 learns, but no setting measured holds up over 10 "
                     "rounds; fedavg is the rule to use (docs/strategies.md)", logging.WARNING)
        return {}

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {**_prefixed("m_t", self.m_t), **_prefixed("v_t", self.v_t)}, {}

    def load_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.m_t, self.v_t = _unprefixed("m_t", arrays), _unprefixed("v_t", arrays)


class _ServerAdam(_ServerMoments):
    """FedAdam and FedYogi read the same keys."""

    keys = _ADAM_KEYS
    flower_server_lr: float

    @classmethod
    def flower_arguments(cls, settings: Settings) -> dict[str, Any]:
        s = settings.strategy
        return {"eta": server_learning_rate(settings, cls.flower_server_lr), "beta_1": s.beta_1, "beta_2": s.beta_2,
                "tau": s.tau}


class LoraFedAdam(_ServerAdam, LoraStrategyMixin, FedAdam):
    """FedAdam (Reddi et al. 2021): Adam on the server with the averaged update as pseudo-gradient."""

    flower_server_lr = 0.1


class LoraFedYogi(_ServerAdam, LoraStrategyMixin, FedYogi):
    """FedYogi (Reddi et al. 2021)."""

    flower_server_lr = 0.01


class LoraFedAdagrad(_ServerMoments, LoraStrategyMixin, FedAdagrad):
    """FedAdagrad (Reddi et al. 2021)."""

    keys = ("strategy.server-learning-rate", "strategy.tau")
    flower_server_lr = 0.1

    @classmethod
    def flower_arguments(cls, settings: Settings) -> dict[str, Any]:
        return {"eta": server_learning_rate(settings, cls.flower_server_lr), "tau": settings.strategy.tau}


class LoraFedAvgM(LoraStrategyMixin, FedAvgM):
    """FedAvgM (Hsu et al. 2019): server momentum on the averaged update."""

    keys = ("strategy.server-learning-rate", "strategy.server-momentum")

    @classmethod
    def flower_arguments(cls, settings: Settings) -> dict[str, Any]:
        return {"server_learning_rate": server_learning_rate(settings, 1.0),
                "server_momentum": settings.strategy.server_momentum}

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        # FedAvgM keeps its momentum as a list in the order of its arrays' keys
        current = {k: a.numpy() for k, a in self.current_arrays.items()} if self.current_arrays is not None else {}
        momentum = dict(zip(current, self.momentum_vector)) if self.momentum_vector is not None else {}
        return {**_prefixed("current", current), **_prefixed("momentum", momentum)}, {}

    def load_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        current, momentum = _unprefixed("current", arrays), _unprefixed("momentum", arrays)
        order = list(self.global_keys)  # FedAvgM zips its arrays with the aggregate's, in the global key order
        self.current_arrays = (ArrayRecord({k: Array(np.asarray(current[k])) for k in order})
                               if current is not None else None)
        self.momentum_vector = [momentum[k] for k in order] if momentum is not None else None


class LoraFedMedian(LoraStrategyMixin, FedMedian):
    """Coordinate-wise median (Yin et al. 2018)."""


class LoraFedTrimmedAvg(LoraStrategyMixin, FedTrimmedAvg):
    """Coordinate-wise trimmed mean (Yin et al. 2018): `strategy.trimmed-fraction` cut at each end."""

    keys = ("strategy.trimmed-fraction",)

    @classmethod
    def flower_arguments(cls, settings: Settings) -> dict[str, Any]:
        return {"beta": settings.strategy.trimmed_fraction}

    def setup(self, job: Any) -> dict[str, Any]:
        fraction, per_round = self.settings.strategy.trimmed_fraction, self.settings.clients_per_round
        if int(fraction * per_round) == 0:
            announce(f"fedtrimmedavg: strategy.trimmed-fraction = {fraction} cuts no client of {per_round} a round: "
                     "it is an unweighted mean", logging.WARNING)
        return {}
