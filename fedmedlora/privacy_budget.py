"""(epsilon, delta) of site-level DP-FedAvg: the noise multiplier for a target epsilon, and what each round spends.

Accounting is Flower's `RdpAccountant` (Renyi DP over Google's `dp-accounting`, the `flwr[dp]` extra): each released
global adapter is one Gaussian mechanism with noise multiplier z (noise std z x clipping norm / sites averaged, for a
uniform mean of updates clipped to the clipping norm), composed over rounds. The privacy unit is a site: neighbouring
federations differ by one whole site's data (add-or-remove-one). No amplification by sampling is claimed, even when
fewer sites than all are sampled a round (the server picks them, so the sample is not secret): every release is
charged in full. The target epsilon is met by calibrating z with `dp_accounting.calibrate_dp_mechanism` over the
same accountant and event model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _flower_accountant(num_sites: int, delta: float) -> Any:
    from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

    return RdpAccountant(PrivacyConfig(target_delta=delta, population_size=num_sites,
                                       neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                       sampling_method=SamplingMethod.NO_AMPLIFICATION))


def epsilon_after(noise_multiplier: float, releases: int, delta: float) -> float:
    """epsilon spent by `releases` Gaussian releases with noise multiplier z, at delta (RDP accounting)."""
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier), releases)
    return float(accountant.get_epsilon(delta))


def calibrate_noise_multiplier(target_epsilon: float, delta: float, releases: int) -> float:
    """The smallest noise multiplier whose `releases` Gaussian releases spend at most `target_epsilon` at delta."""
    import dp_accounting
    from dp_accounting import rdp

    if not (target_epsilon > 0 and 0 < delta < 1 and releases > 0):
        raise ValueError(f"need target epsilon > 0, 0 < delta < 1, releases > 0; got {target_epsilon}, {delta}, "
                         f"{releases}")
    return float(dp_accounting.calibrate_dp_mechanism(
        rdp.RdpAccountant,
        lambda z: dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), releases),
        target_epsilon, delta, bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-3, 1.0)))


@dataclass
class PrivacyLedger:
    """The run's privacy spent so far: one entry per released global adapter."""

    num_sites: int
    delta: float

    def __post_init__(self) -> None:
        self.accountant = _flower_accountant(self.num_sites, self.delta)

    def release(self, noise_multiplier: float, sites: int) -> dict[str, Any]:
        """Charge one release of a mean over `sites` clipped updates with noise multiplier z; the run's total."""
        from flwr.serverapp import GaussianPrivacyEvent

        self.accountant.compose(GaussianPrivacyEvent(noise_multiplier=noise_multiplier, sample_size=sites,
                                                     population_size=self.num_sites))
        spent = self.accountant.get_privacy_spent()
        return {"epsilon": spent.epsilon, "delta": spent.delta, "releases": spent.num_releases,
                "round-epsilon": epsilon_after(noise_multiplier, 1, self.delta), "accounting": spent.accounting_method,
                "rdp-order": spent.optimal_order}
