"""The server-held validation set of Fed-MedLoRA+ and the loss of one client adapter on it.

The set is the val split of every site the server job holds: the server's own data (`data.server-datasets`,
data/server_site.py), or, in a simulation over the bundled pool only, every site's val split (the seed's server holds
one validation file per site); optionally capped by `strategy.validation-max-examples` with a sample drawn from
`run.seed` (site shares kept in expectation).
Rows are tokenized once, through the job's per-process cache. Scoring loads the client's adapter into the job's
resident model (`load_adapter_state`): one base model in memory however many clients reply. The resident model is
left holding the last scored adapter; `RoundEnd` loads the global adapter before it evaluates.

The loss is the mean token cross-entropy over the pooled set: labelled tokens for a token classifier; for a causal
model all tokens (the seed, prompt included) or completion tokens only (`strategy.validation-loss`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..model.adapter import load_adapter_state
from ..settings import ConfigError

LOG = logging.getLogger(__name__)


class ServerValidation:
    def __init__(self, job: Any):
        settings = job.settings
        self.job = job
        self.batch_size = settings.evaluate.batch_size
        self.completion_only = settings.strategy.validation_loss == "completion"
        sizes = [len(site.split("val")) for site in job.sites]
        total = sum(sizes)
        if total == 0:
            raise ConfigError([f"key 'strategy.name' = 'fed-medlora-plus' needs a server validation set, but "
                               f"data.server-datasets = {settings.data.server_datasets!r} and the pool's val "
                               f"splits are empty (data.val-fraction = {settings.data.val_fraction}, "
                               f"data.max-eval-examples = {settings.data.max_eval_examples})"])
        cap = settings.strategy.validation_max_examples
        picked = range(total) if not cap or cap >= total else sorted(random.Random(settings.run.seed).sample(
            range(total), cap))
        per_site: dict[int, list[int]] = {i: [] for i in range(len(sizes))}
        offsets = np.cumsum([0] + sizes)
        for index in picked:
            site = int(np.searchsorted(offsets, index, side="right") - 1)
            per_site[site].append(index - int(offsets[site]))
        self.parts: list[tuple[int, list[dict[str, Any]], Any]] = []
        for position, indices in per_site.items():
            if not indices:
                continue
            site = job.sites[position].site_id
            rows = job.sites[position].split("val")
            dataset = job.tokenized(site, "val")
            if len(indices) < len(rows):
                rows, dataset = [rows[i] for i in indices], dataset.select(indices)
            self.parts.append((site, rows, dataset))
        self.examples = sum(len(rows) for _, rows, _ in self.parts)
        self.site_examples = {str(site): len(rows) for site, rows, _ in self.parts}

    def describe(self) -> dict[str, Any]:
        return {"examples": self.examples, "sites": self.site_examples,
                "loss": "completion tokens" if self.completion_only and self.job.family == "causal" else
                ("labelled tokens" if self.job.family == "encoder" else "all tokens")}

    def loss(self, state: Mapping[str, np.ndarray]) -> float:
        """Mean token cross-entropy of the adapter `state` on the pooled validation set."""
        start = time.perf_counter()
        resident = self.job.resident()
        load_adapter_state(resident.model, state)
        nll, tokens = 0.0, 0
        for _, rows, dataset in self.parts:
            part_nll, part_tokens = self.job.task.validation_loss(resident, rows, dataset, self.batch_size,
                                                                  completion_only=self.completion_only)
            nll += part_nll
            tokens += part_tokens
        self.tokens = tokens
        LOG.debug("validation loss over %d tokens in %.2f s", tokens, time.perf_counter() - start)
        return nll / tokens if tokens else float("nan")
