"""Aggregation strategies by name (`strategy.name`; docs/strategies.md describes each one).

Each is a Flower strategy class with `LoraStrategyMixin` in front; the class owns its keys, rules, Flower arguments
and set-up (see base.py). Add a strategy by writing its class and one `STRATEGIES` entry.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np

from ..recorder import RunRecorder
from ..settings import KEY_BY_NAME, ConfigError, Settings
from .base import announce, flower_sampling_kwargs
from .differential_privacy import SiteLevelDP
from .differential_privacy import settings_problems as privacy_problems
from .fed_medlora_plus import LoraFedMedLoRAPlus
from .fedavg import LoraFedAvg
from .fed_sb import LoraFedSB
from .fedavgopt import LoraFedAvgOpt
from .fedsa_lora import LoraFedSA
from .flexlora import LoraFlexLoRA
from .ffa_lora import LoraFFA
from .flower import (LoraFedAdagrad, LoraFedAdam, LoraFedAvgM, LoraFedMedian, LoraFedProx, LoraFedTrimmedAvg,
                     LoraFedYogi)
from .robust import LoraBulyan, LoraKrum, LoraMultiKrum
from .site_counts import SiteCounts


class StrategySpec(NamedTuple):
    cls: type
    description: str
    source: str
    weight_by: str = "examples"  # what `strategy.weight-by = "auto"` means for it


STRATEGIES: dict[str, StrategySpec] = {
    "fedavg": StrategySpec(
        LoraFedAvg, "weighted average of the client adapters (LoRA A and B separately, or their products)",
        "McMahan et al. 2017, arXiv 1602.05629"),
    "fed-medlora": StrategySpec(
        LoraFedAvg, "FedAvg over LoRA A and B separately, weighted by training tokens as the seed",
        "Fed-MedLoRA seed (distributed_LLM_learning_simulator)", weight_by="tokens"),
    "fed-medlora-plus": StrategySpec(
        LoraFedMedLoRAPlus, "clients weighted by softmax(-validation loss / T) on a server-held validation set",
        "Fed-MedLoRA+ seed (distributed_LLM_learning_simulator)", weight_by="tokens"),
    "fedavgopt": StrategySpec(
        LoraFedAvgOpt, "FedAvg with per-client coefficients alpha found by Nelder-Mead (Gram-matrix objective)",
        "FlowerTune medical seed; arXiv 2501.15949"),
    "ffa-lora": StrategySpec(
        LoraFFA, "LoRA A frozen at the shared initial adapter; only B (and a head) trained, sent and averaged",
        "Sun et al., ICLR 2024, arXiv 2403.12313"),
    "fedsa-lora": StrategySpec(
        LoraFedSA, "only LoRA A (and a head) shared and averaged; each site keeps its own B (personalised evaluation)",
        "Guo et al., ICLR 2025, arXiv 2410.01463"),
    "flexlora": StrategySpec(
        LoraFlexLoRA, "sites train at their own LoRA rank (lora.site-ranks); the server averages the products and "
        "sends each site its rank's truncated SVD factors", "Bai et al., NeurIPS 2024, arXiv 2402.11505"),
    "fed-sb": StrategySpec(
        LoraFedSB, "only an r x r core between fixed SVD factors trains and travels; its average is exact",
        "Singhal et al. 2025, arXiv 2502.15436"),
    "fedprox": StrategySpec(LoraFedProx, "Flower's FedProx: FedAvg plus a proximal term in the clients' loss",
                            "Li et al. 2020, arXiv 1812.06127"),
    "fedadam": StrategySpec(LoraFedAdam, "Flower's FedAdam: Adam on the server", "Reddi et al. 2021, arXiv 2003.00295"),
    "fedyogi": StrategySpec(LoraFedYogi, "Flower's FedYogi: Yogi on the server", "Reddi et al. 2021, arXiv 2003.00295"),
    "fedadagrad": StrategySpec(LoraFedAdagrad, "Flower's FedAdagrad: Adagrad on the server",
                               "Reddi et al. 2021, arXiv 2003.00295"),
    "fedavgm": StrategySpec(LoraFedAvgM, "Flower's FedAvgM: server momentum", "Hsu et al. 2019, arXiv 1909.06335"),
    "fedmedian": StrategySpec(LoraFedMedian, "Flower's FedMedian: coordinate-wise median",
                              "Yin et al. 2018, arXiv 1803.01498"),
    "fedtrimmedavg": StrategySpec(LoraFedTrimmedAvg, "Flower's FedTrimmedAvg: coordinate-wise trimmed mean",
                                  "Yin et al. 2018, arXiv 1803.01498"),
    "krum": StrategySpec(LoraKrum, "Flower's Krum: the one update closest to its n - f - 2 nearest neighbours",
                         "Blanchard et al. 2017, NeurIPS"),
    "multikrum": StrategySpec(LoraMultiKrum, "Flower's MultiKrum: average of the m best-scored Krum updates",
                              "Blanchard et al. 2017, NeurIPS"),
    "bulyan": StrategySpec(LoraBulyan, "Flower's Bulyan: MultiKrum selection, then a trimmed mean around the median",
                           "El Mhamdi et al. 2018, arXiv 1802.07927"),
}

# Keys of the screening every strategy applies (base.py) and of the privacy options (differential_privacy.py).
SCREENING_KEYS = ("strategy.weight-cap", "strategy.norm-bound", "strategy.norm-action")
PRIVACY_KEYS = ("privacy.dp", "privacy.clipping-norm", "privacy.noise-multiplier", "privacy.target-epsilon",
                "privacy.delta", "privacy.error-details")

# Keys that only some strategies read (for the "has no effect" warning).
SPECIFIC_KEYS = sorted({key for spec in STRATEGIES.values() for key in spec.cls.keys})


def resolve_weight_by(settings: Settings) -> str:
    """examples or tokens: `strategy.weight-by`, with auto resolved by the strategy (tokens for the Fed-MedLoRA pair)."""
    if settings.strategy.weight_by != "auto":
        return settings.strategy.weight_by
    spec = STRATEGIES.get(settings.strategy.name)
    return spec.weight_by if spec else "examples"


def settings_problems(settings: Settings) -> list[str]:
    """What is wrong with the strategy settings of a run config (the name, then the chosen strategy's own rules)."""
    name = settings.strategy.name
    if name not in STRATEGIES:
        return [f"key 'strategy.name' = {name!r}: allowed values are {', '.join(repr(n) for n in STRATEGIES)}"]
    cls = STRATEGIES[name].cls
    problems = []
    if settings.strategy.lora_aggregation == "product" and not cls.product:
        allowed = ", ".join(n for n, s in STRATEGIES.items() if s.cls.product)
        problems.append(f"key 'strategy.lora-aggregation' = 'product' with strategy.name = {name!r}: product "
                        f"aggregation applies to {allowed}; {name} combines the factors (use 'factors')")
    if settings.site_ranks and not getattr(cls, "site_ranks", False):
        allowed = ", ".join(n for n, s in STRATEGIES.items() if getattr(s.cls, "site_ranks", False))
        problems.append(f"key 'lora.site-ranks' = {settings.lora.site_ranks!r} with strategy.name = {name!r}: sites "
                        f"of different ranks need a strategy that aggregates them ({allowed})")
    if settings.adapter_kind == "rxr" and (cls.key_scheme != "all" or getattr(cls, "site_ranks", False)
                                           or settings.strategy.lora_aggregation == "product"):
        problems.append(f"key 'lora.adapter' = 'rxr' with strategy.name = {name!r}: the r x r adapter has no "
                        "A and B to freeze, keep, re-rank or multiply; use it with fed-sb (or fedavg and "
                        "Flower's strategies, factors aggregation)")
    if settings.privacy.dp == "site" and (settings.strategy.wire_dtype in ("int8", "int4") or cls.key_scheme != "all"
                                          or getattr(cls, "site_ranks", False)):
        problems.append(f"key 'privacy.dp' = 'site' with strategy.name = {name!r} and strategy.wire-dtype = "
                        f"{settings.strategy.wire_dtype!r}: a site clips the difference between the whole adapter "
                        "it trained and the one it received (Flower's fixedclipping_mod), which needs every tensor "
                        "sent as values at one rank: use float16 or float32 and a strategy that shares every tensor")
    return problems + cls.settings_problems(settings) + privacy_problems(settings)


def unused_settings(settings: Settings) -> list[str]:
    """Strategy-specific keys set away from their default that the chosen strategy does not read."""
    keys = STRATEGIES[settings.strategy.name].cls.keys
    return [key for key in SPECIFIC_KEYS if key not in keys and settings[key] != KEY_BY_NAME[key].default]


def build_strategy(settings: Settings, recorder: RunRecorder, initial_state: dict[str, np.ndarray],
                   job: Any = None, counts: SiteCounts | None = None) -> Any:
    """The chosen strategy, ready to `start`; `job` serves strategies whose set-up needs data or the model;
    `counts` is what the server holds of each site, for `strategy.weight-cap` (site_counts.py)."""
    name = settings.strategy.name
    spec = STRATEGIES[name]
    if settings.privacy.dp == "example" and job is not None and job.family != "encoder":
        raise ConfigError([f"key 'privacy.dp' = 'example': DP-SGD runs on encoder tasks (token or relation "
                           f"classification); {settings.model.name} is a {job.family} model"])
    weight_by = resolve_weight_by(settings)
    arguments = spec.cls.flower_arguments(settings)
    strategy = spec.cls(**{**flower_sampling_kwargs(settings, weight_by), **arguments})  # a strategy may resample
    strategy.setup_lora(settings, recorder, initial_state, counts)
    info: dict[str, Any] = {"name": name, "description": spec.description, "source": spec.source,
                            "weight-by": weight_by, "settings": {k: settings[k] for k in spec.cls.keys},
                            "flower-arguments": arguments,
                            "screening": {k: settings[k] for k in SCREENING_KEYS},
                            "privacy": {k: settings[k] for k in PRIVACY_KEYS}, **strategy.setup(job)}
    recorder.write_json("strategy.json", info)
    for key in unused_settings(settings):
        announce(f"key '{key}' = {settings[key]!r} has no effect with strategy.name = {name!r}", logging.WARNING)
    announce(f"strategy {name}: {spec.description} (client weights: {weight_by}"
             + "".join(f", {k.removeprefix('strategy.')} = {settings[k]}" for k in spec.cls.keys) + ")")
    if settings.privacy.dp == "site":
        return SiteLevelDP(strategy, settings, recorder)
    return strategy
