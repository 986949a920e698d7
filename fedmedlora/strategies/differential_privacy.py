"""Site-level differential privacy (DP-FedAvg, McMahan et al. 2018): `privacy.dp = "site"`.

Flower's `DifferentialPrivacyClientSideFixedClipping` wraps the chosen strategy: it puts the clipping norm in every
training message, where each site's `fixedclipping_mod` (client_dp.py) clips its update (adapter - global adapter
as received) to that norm before it leaves the site; the server adds Gaussian noise to the aggregate. The accounting
(privacy_budget.py) reports (epsilon, delta) after every round in metrics.jsonl (`privacy`), on the console and in
summary.json.

`aggregate_train` is ours, built from Flower's own noise function, because Flower's version does not fit this app:
- it drops the whole round when any site sent an error, before the LoRA front screens and records the replies;
- its noise std is z x C / (sites sampled), not / (updates actually averaged): when a reply is excluded, the mean
  of fewer updates would get too little noise for the privacy promised;
- its accountant refuses strategies that override `aggregate_train` (the LoRA front does).
Here the LoRA front screens, re-clips on the server (a site that did not clip cannot break the guarantee) and
averages uniformly; noise with std z x C / (updates averaged) is added to that mean; the ledger charges the release.

Only rules whose aggregate is a uniform mean of the updates qualify: fedavg and fed-medlora (weights set uniform,
factors averaged). A server optimizer, a robust rule, validation weights or the SVD refactoring of product
aggregation would change the sensitivity the noise is calibrated to.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping
from flwr.supercore.differential_privacy import add_gaussian_noise_inplace, compute_stdv

from ..privacy_budget import PrivacyLedger, calibrate_noise_multiplier
from ..recorder import RunRecorder
from ..settings import Settings
from ..wire import from_array_record, to_array_record
from .base import announce

DP_STRATEGIES = ("fedavg", "fed-medlora")


def settings_problems(settings: Settings) -> list[str]:
    """Run-config rules of differential privacy that involve the strategy."""
    if settings.privacy.dp == "example" and settings.strategy.name == "fedprox":
        return ["key 'strategy.name' = 'fedprox' with privacy.dp = 'example': DP-SGD clips per-example gradients, "
                "and FedProx's proximal term is not one; use another strategy"]
    if settings.privacy.dp != "site":
        return []
    problems = []
    if settings.strategy.name not in DP_STRATEGIES:
        problems.append(f"key 'strategy.name' = {settings.strategy.name!r} with privacy.dp = 'site': the noise is "
                        "calibrated to a uniform mean of clipped updates; use "
                        + " or ".join(repr(n) for n in DP_STRATEGIES))
    if settings.strategy.lora_aggregation != "factors":
        problems.append("key 'strategy.lora-aggregation' = 'product' with privacy.dp = 'site': the SVD refactoring "
                        "changes the sensitivity; use 'factors'")
    return problems


def noise_multiplier(settings: Settings) -> float:
    """privacy.noise-multiplier, or the one calibrated to privacy.target-epsilon over num-server-rounds releases."""
    p = settings.privacy
    if p.noise_multiplier > 0:
        return p.noise_multiplier
    return calibrate_noise_multiplier(p.target_epsilon, p.delta, settings.num_server_rounds)


class SiteLevelDP(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed-clipping wrapper around a LoRA strategy, with noise on the mean actually taken."""

    def __init__(self, strategy: Any, settings: Settings, recorder: RunRecorder):
        z = noise_multiplier(settings)
        super().__init__(strategy, noise_multiplier=z, clipping_norm=settings.privacy.clipping_norm,
                         num_sampled_clients=settings.clients_per_round)
        self.settings = settings
        self.recorder = recorder
        self.ledger = PrivacyLedger(settings.data.num_sites, settings.privacy.delta)
        self.info = {"unit": "site", "clipping-norm": self.clipping_norm, "noise-multiplier": z,
                     "target-epsilon": settings.privacy.target_epsilon or None, "delta": settings.privacy.delta,
                     "accounting": "rdp (Flower RdpAccountant, dp-accounting), no sampling amplification"}
        announce(f"privacy: site-level DP, clipping norm {self.clipping_norm:g}, noise multiplier {z:.4f}"
                 + (f" (calibrated to epsilon {settings.privacy.target_epsilon:g} after "
                    f"{settings.num_server_rounds} rounds at delta {settings.privacy.delta:g})"
                    if not settings.privacy.noise_multiplier else ""))
        recorder.summary_fields["privacy"] = {**self.info, "epsilon": 0.0, "releases": 0}
        self.releases: list[tuple[float, int]] = []  # (noise multiplier, sites averaged) of each release: resumable

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        log = self.recorder.round(server_round)
        if arrays is None:
            log["privacy"] = {**self.ledger_state(), "released": False}
            return None, metrics
        averaged = int(log["usable"])
        state = from_array_record(arrays)
        values = list(state.values())
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, averaged)
        add_gaussian_noise_inplace(values, std)
        spent = self.ledger.release(self.noise_multiplier, averaged)
        self.releases.append((float(self.noise_multiplier), averaged))
        log["privacy"] = {**self.info, **spent, "released": True, "sites-averaged": averaged, "noise-std": std}
        self.recorder.summary_fields["privacy"] = {**self.info, **spent}
        announce(f"round {server_round}: privacy spent epsilon = {spent['epsilon']:.4f} at delta = "
                 f"{spent['delta']:g} after {spent['releases']} release(s) (this round {spent['round-epsilon']:.4f};"
                 f" noise std {std:.3g} on the mean of {averaged} clipped updates)")
        return to_array_record(dict(zip(state, values)), "float32"), metrics

    def limit_to_nodes(self, nodes: Any) -> None:
        self.strategy.limit_to_nodes(nodes)

    def node_rank(self, node: int) -> int | None:
        return self.strategy.node_rank(node)

    # --- resume (server_app, run_state.py): the wrapped strategy's state and the releases charged so far ----------
    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:
        arrays, info = self.strategy.state_dict()
        return arrays, {**info, "site-dp-releases": [list(r) for r in self.releases]}

    def load_state(self, arrays: dict[str, Any], info: dict[str, Any]) -> None:
        info = dict(info)
        for z, sites in info.pop("site-dp-releases", []):  # the accountant composes the same releases again
            spent = self.ledger.release(float(z), int(sites))
            self.releases.append((float(z), int(sites)))
            self.recorder.summary_fields["privacy"] = {**self.info, **spent}
        self.strategy.load_state(arrays, info)

    def ledger_state(self) -> dict[str, Any]:
        spent = self.ledger.accountant.get_privacy_spent()
        return {**self.info, "epsilon": spent.epsilon, "delta": spent.delta, "releases": spent.num_releases}
