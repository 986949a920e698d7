"""(epsilon, delta) of differential privacy: the noise multiplier for a target epsilon, and what is spent so far.

Site-level DP-FedAvg (`privacy.dp = "site"`):

Accounting is Flower's `RdpAccountant` (Renyi DP over Google's `dp-accounting`, the `flwr[dp]` extra): each released
global adapter is one Gaussian mechanism with noise multiplier z (noise std z x clipping norm / sites averaged, for a
uniform mean of updates clipped to the clipping norm), composed over rounds. The privacy unit is a site: neighbouring
federations differ by one whole site's data (add-or-remove-one). No amplification by sampling is claimed, even when
fewer sites than all are sampled a round (the server picks them, so the sample is not secret): every release is
charged in full. The target epsilon is met by calibrating z with `dp_accounting.calibrate_dp_mechanism` over the
same accountant and event model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@contextmanager
def _quiet_absl() -> Iterator[None]:
    """dp-accounting warns (through absl) each time it drops an RDP order it cannot evaluate; the order is simply
    not used for the bound, so the warning is noise to a user."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


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


# --- example-level DP-SGD on a site (privacy.dp = "example") ---------------------------------------------------------
# The unit is one training example of a site; each DP-SGD step is a Poisson-sampled Gaussian mechanism (sampling
# rate q = batch / site examples), composed over every step the site has taken. Sites hold disjoint data, so an
# example's guarantee is its own site's epsilon (parallel composition); the federation's is the largest of them.

def _dp_sgd_event(noise_multiplier: float, sample_rate: float, steps: int) -> Any:
    import dp_accounting

    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)


def dp_sgd_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """epsilon after `steps` DP-SGD steps at sampling rate q and noise multiplier z, at delta (RDP accounting)."""
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(_dp_sgd_event(noise_multiplier, sample_rate, steps))
    with _quiet_absl():
        return float(accountant.get_epsilon(delta))


def calibrate_dp_sgd(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier whose `steps` DP-SGD steps at rate q spend at most `target_epsilon`."""
    import dp_accounting
    from dp_accounting import rdp

    if not (target_epsilon > 0 and 0 < delta < 1 and 0 < sample_rate <= 1 and steps > 0):
        raise ValueError(f"need target epsilon > 0, 0 < delta < 1, 0 < q <= 1, steps > 0; got {target_epsilon}, "
                         f"{delta}, {sample_rate}, {steps}")
    with _quiet_absl():
        return float(dp_accounting.calibrate_dp_mechanism(
            rdp.RdpAccountant, lambda z: _dp_sgd_event(z, sample_rate, steps), target_epsilon, delta,
            bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-2, 1.0)))
