"""Aggregation strategies, chosen by name with `strategy.name` (docs/strategies.md describes each one).

Each is a Flower strategy class with `LoraStrategyMixin` in front (wire dtype, screening, bookkeeping). Add a
strategy by writing its class and one `STRATEGIES` entry; validation of `strategy.name` follows automatically.
The settings a strategy reads are validated with the rest of the run config (`register_rule` below), before any
model is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from ..results import RunRecorder
from ..settings import KEY_BY_NAME, Settings, register_rule
from .base import announce, flower_sampling_kwargs
from .fed_medlora_plus import LoraFedMedLoRAPlus
from .fedavg import LoraFedAvg
from .fedavgopt import LoraFedAvgOpt
from .flower import (FLOWER_KWARGS, LoraFedAdagrad, LoraFedAdam, LoraFedAvgM, LoraFedMedian, LoraFedProx,
                     LoraFedTrimmedAvg, LoraFedYogi, flower_kwargs)

LOG = logging.getLogger(__name__)


class StrategySpec(NamedTuple):
    cls: type
    description: str
    source: str
    keys: tuple[str, ...] = ()  # the strategy-specific run-config keys it reads
    weight_by: str = "examples"  # what `strategy.weight-by = "auto"` means for it
    product: bool = False  # accepts strategy.lora-aggregation = "product"


_PLUS_KEYS = ("strategy.validation-weighting", "strategy.temperature", "strategy.validation-loss",
              "strategy.validation-max-examples")

STRATEGIES: dict[str, StrategySpec] = {
    "fedavg": StrategySpec(
        LoraFedAvg, "weighted average of the client adapters (LoRA A and B separately, or their products)",
        "McMahan et al. 2017, arXiv 1602.05629", ("strategy.lora-aggregation",), product=True),
    "fed-medlora": StrategySpec(
        LoraFedAvg, "FedAvg over LoRA A and B separately, weighted by training tokens as the seed",
        "Fed-MedLoRA seed (distributed_LLM_learning_simulator)", ("strategy.lora-aggregation",),
        weight_by="tokens", product=True),
    "fed-medlora-plus": StrategySpec(
        LoraFedMedLoRAPlus, "clients weighted by softmax(-validation loss / T) on a server-held validation set",
        "Fed-MedLoRA+ seed (distributed_LLM_learning_simulator)", ("strategy.lora-aggregation", *_PLUS_KEYS),
        weight_by="tokens", product=True),
    "fedavgopt": StrategySpec(
        LoraFedAvgOpt, "FedAvg with per-client coefficients alpha found by Nelder-Mead (Gram-matrix objective)",
        "FlowerTune medical seed; arXiv 2501.15949", ("strategy.fedavgopt-max-iter",)),
    "fedprox": StrategySpec(LoraFedProx, "Flower's FedProx: FedAvg plus a proximal term in the clients' loss",
                            "Li et al. 2020, arXiv 1812.06127", tuple(FLOWER_KWARGS["fedprox"])),
    "fedadam": StrategySpec(LoraFedAdam, "Flower's FedAdam: Adam on the server", "Reddi et al. 2021, arXiv "
                            "2003.00295", tuple(FLOWER_KWARGS["fedadam"])),
    "fedyogi": StrategySpec(LoraFedYogi, "Flower's FedYogi: Yogi on the server", "Reddi et al. 2021, arXiv "
                            "2003.00295", tuple(FLOWER_KWARGS["fedyogi"])),
    "fedadagrad": StrategySpec(LoraFedAdagrad, "Flower's FedAdagrad: Adagrad on the server", "Reddi et al. 2021, "
                               "arXiv 2003.00295", tuple(FLOWER_KWARGS["fedadagrad"])),
    "fedavgm": StrategySpec(LoraFedAvgM, "Flower's FedAvgM: server momentum", "Hsu et al. 2019, arXiv 1909.06335",
                            tuple(FLOWER_KWARGS["fedavgm"])),
    "fedmedian": StrategySpec(LoraFedMedian, "Flower's FedMedian: coordinate-wise median", "Yin et al. 2018, "
                              "arXiv 1803.01498"),
    "fedtrimmedavg": StrategySpec(LoraFedTrimmedAvg, "Flower's FedTrimmedAvg: coordinate-wise trimmed mean",
                                  "Yin et al. 2018, arXiv 1803.01498", tuple(FLOWER_KWARGS["fedtrimmedavg"])),
}

# Keys that only some strategies read (for the "has no effect" warning).
SPECIFIC_KEYS = sorted({key for spec in STRATEGIES.values() for key in spec.keys})


def resolve_weight_by(values: Mapping[str, Any]) -> str:
    """examples or tokens: `strategy.weight-by`, with auto resolved by the strategy (tokens for the Fed-MedLoRA pair)."""
    weight_by = values["strategy.weight-by"]
    if weight_by != "auto":
        return weight_by
    spec = STRATEGIES.get(values["strategy.name"])
    return spec.weight_by if spec else "examples"


@register_rule
def _strategy_rules(values: Mapping[str, Any]) -> list[str]:
    name = values["strategy.name"]
    if name not in STRATEGIES:
        return [f"key 'strategy.name' = {name!r}: allowed values are {', '.join(repr(n) for n in STRATEGIES)}"]
    spec = STRATEGIES[name]
    problems = []
    if values["strategy.lora-aggregation"] == "product" and not spec.product:
        allowed = ", ".join(n for n, s in STRATEGIES.items() if s.product)
        problems.append(f"key 'strategy.lora-aggregation' = 'product' with strategy.name = {name!r}: product "
                        f"aggregation applies to {allowed}; {name} combines the factors (use 'factors')")
    if name == "fed-medlora-plus" and values["data.val-fraction"] <= 0:
        problems.append(f"key 'data.val-fraction' = {values['data.val-fraction']}: strategy.name = "
                        "'fed-medlora-plus' scores clients on a server validation set pooled from the sites' val "
                        "splits; set data.val-fraction > 0 (e.g. 0.1)")
    return problems


def unused_settings(settings: Settings) -> list[str]:
    """Strategy-specific keys set away from their default that the chosen strategy does not read."""
    spec = STRATEGIES[settings.strategy.name]
    return [key for key in SPECIFIC_KEYS
            if key not in spec.keys and settings[key] != KEY_BY_NAME[key].default]


def build_strategy(settings: Settings, recorder: RunRecorder, initial_state: dict[str, np.ndarray],
                   job: Any = None) -> Any:
    """The chosen strategy, ready to `start`. Fed-MedLoRA+ needs `job` (its validation set and resident model)."""
    name = settings.strategy.name
    spec = STRATEGIES[name]
    weight_by = resolve_weight_by(settings.values)
    kwargs = flower_sampling_kwargs(settings, weight_by)
    specific = flower_kwargs(name, settings) if name in FLOWER_KWARGS else {}
    strategy = spec.cls(**kwargs, **specific)
    strategy.setup_lora(settings, recorder, initial_state)
    info: dict[str, Any] = {"name": name, "description": spec.description, "source": spec.source,
                            "weight-by": weight_by, "settings": {k: settings[k] for k in spec.keys},
                            "flower-arguments": specific}
    if isinstance(strategy, LoraFedMedLoRAPlus):
        if job is None:
            raise ValueError("strategy 'fed-medlora-plus' needs the job (server validation set, resident model)")
        from .server_validation import ServerValidation

        validation = ServerValidation(job)
        strategy.setup_validation(validation.loss, validation.describe())
        info["validation-set"] = validation.describe()
    recorder.write_json("strategy.json", info)
    for key in unused_settings(settings):
        announce(f"key '{key}' = {settings[key]!r} has no effect with strategy.name = {name!r}", logging.WARNING)
    if name == "fedtrimmedavg" and int(settings.strategy.trimmed_fraction * settings.clients_per_round) == 0:
        announce(f"fedtrimmedavg: strategy.trimmed-fraction = {settings.strategy.trimmed_fraction} cuts no client of "
                 f"{settings.clients_per_round} a round: it is an unweighted mean", logging.WARNING)
    announce(f"strategy {name}: {spec.description} (client weights: {weight_by}"
             + "".join(f", {k.removeprefix('strategy.')} = {settings[k]}" for k in spec.keys) + ")")
    return strategy
