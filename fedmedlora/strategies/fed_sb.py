"""Fed-SB (Singhal et al. 2025, arXiv 2502.15436): every site trains only an r x r core R between LoRA factors that are
fixed and identical everywhere (lora.adapter "rxr", model/adapter.py); the server averages R. The update
(alpha / r) B (R - I) A is linear in R, so the average of the cores is exactly the average of the updates, and only
r^2 values a layer travel (64 for r = 8, against 6,144 for LoRA A and B at r = 8 on a 384-wide layer).

Why this and not FedEx-LoRA (exact averaging of ordinary LoRA by folding the residual sum_i w_i B_i A_i - B A into
the base weights): here the frozen base is loaded once and shared by every site a worker plays, and in a deployment
each message runs in a fresh process that loads the base again. FedEx-LoRA's residual changes every round and is a
dense out x in matrix per layer (rank up to (K + 1) r): every site would need the running sum of all past residuals
sent to it or stored beside its base (for Llama-3-8B q/v: 671 M values a round, 50x the LoRA adapter), and the
resident base would differ between rounds. Fed-SB keeps the base frozen and identical and the wire tiny.

A and B here come from the truncated SVD of each frozen weight (PEFT's PSOFT initialisation: the principal
subspace); Fed-SB/LoRA-SB initialise them from an approximation of the first full-gradient step instead, which needs
data and a site to compute it. The aggregation and what travels are the same.
"""

from __future__ import annotations

from ..settings import Settings
from .fedavg import LoraFedAvg


class LoraFedSB(LoraFedAvg):
    keys = ()
    product = False

    @classmethod
    def settings_problems(cls, settings: Settings) -> list[str]:
        if settings.adapter_kind != "rxr":
            return [f"key 'lora.adapter' = {settings.lora.adapter!r} with strategy.name = 'fed-sb': Fed-SB trains "
                    "the r x r core only (use 'auto' or 'rxr')"]
        return []
