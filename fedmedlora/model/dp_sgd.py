"""DP-SGD on a site (`privacy.dp = "example"`): each training example's influence on the adapter is bounded and
noised, so what a site sends is differentially private with respect to every one of its examples (records).

Opacus does the work: `GradSampleModule` computes per-example gradients of the trainable tensors (LoRA factors and
the task head), `DPOptimizer` clips each to `privacy.clipping-norm` and adds Gaussian noise of std z x C to their
sum, and `DPDataLoader` draws Poisson-sampled batches (each example with probability batch / site examples), which
is what the accounting (privacy_budget.py) assumes. The Trainer's own data pipeline feeds it (its dataset with the
unused columns removed, its collator), so the batches hold what the Trainer's would, only sampled differently. As
on the Trainer path the optimizer is fresh every round; the hooks are removed afterwards, so the resident model is a
plain PEFT model again for the next call.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from typing import Any

from ..privacy_budget import calibrate_dp_sgd, dp_sgd_epsilon
from ..settings import Settings
from .training import training_arguments

LOG = logging.getLogger(__name__)


def logical_batch(settings: Settings) -> int:
    """Examples expected in one DP-SGD step: the Trainer's batch times its accumulation steps."""
    return settings.train.batch_size * settings.train.grad_accum_steps


def site_noise_multiplier(settings: Settings, examples: int) -> float:
    """privacy.noise-multiplier, or the one that spends privacy.target-epsilon over the whole run at this site."""
    p = settings.privacy
    if p.noise_multiplier > 0:
        return p.noise_multiplier
    steps = settings.train.local_steps * settings.num_server_rounds
    return calibrate_dp_sgd(p.target_epsilon, p.delta, min(1.0, logical_batch(settings) / examples), steps)


def train_privately(settings: Settings, task: Any, resident: Any, train_dataset: Any, *, learning_rate: float,
                    seed: int, server_round: int) -> dict[str, float]:
    """One round of DP-SGD, with what it spent: `dp-epsilon` after `server_round` rounds at this site (as if it
    trained in every one: an upper bound when sampling skipped it) and `dp-noise-multiplier`."""
    examples = len(train_dataset)
    z = site_noise_multiplier(settings, examples)
    metrics = train_locally_dp(settings, task, resident, train_dataset, learning_rate=learning_rate, seed=seed,
                               noise_multiplier=z)
    steps = settings.train.local_steps * server_round
    metrics["dp-epsilon"] = dp_sgd_epsilon(z, min(1.0, logical_batch(settings) / examples), steps,
                                           settings.privacy.delta)
    metrics["dp-noise-multiplier"] = z
    return metrics


def train_locally_dp(settings: Settings, task: Any, resident: Any, train_dataset: Any, *, learning_rate: float,
                     seed: int, noise_multiplier: float) -> dict[str, float]:
    """`train.local-steps` DP-SGD steps on the resident adapter, in place; returns the round's metrics."""
    import torch
    from opacus import GradSampleModule
    from opacus.data_loader import DPDataLoader
    from opacus.optimizers import DPOptimizer

    with tempfile.TemporaryDirectory(prefix="fedmedlora-dp-") as tmp:
        args = training_arguments(settings, family=resident.family, learning_rate=learning_rate, seed=seed,
                                  output_dir=tmp)
        loader = task.make_trainer(resident, train_dataset, args).get_train_dataloader()
    batch = logical_batch(settings)
    examples = len(loader.dataset)
    data = DPDataLoader(loader.dataset, sample_rate=min(1.0, batch / examples), collate_fn=loader.collate_fn,
                        generator=torch.Generator().manual_seed(seed))
    model = resident.model
    # strict=False: the frozen base holds buffers (position ids) that Opacus refuses in strict mode; they carry no
    # gradient, and every trainable tensor sits in an nn.Linear, which Opacus supports
    sampled = GradSampleModule(model, strict=False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = DPOptimizer(torch.optim.AdamW(params, lr=learning_rate, weight_decay=settings.train.weight_decay),
                            noise_multiplier=noise_multiplier, max_grad_norm=settings.privacy.clipping_norm,
                            expected_batch_size=batch, generator=torch.Generator().manual_seed(seed + 1))
    model.train()
    losses: list[float] = []
    seen = tokens = 0
    start = time.perf_counter()
    batches = iter(data)
    try:
        with warnings.catch_warnings():
            # the first adapted layer's input needs no gradient; Opacus only needs the gradient of its output
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for _ in range(settings.train.local_steps):
                try:
                    inputs = next(batches)
                except StopIteration:
                    batches = iter(data)
                    inputs = next(batches)
                optimizer.zero_grad()
                loss = sampled(**inputs).loss
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                seen += int(inputs["input_ids"].shape[0])
                tokens += int(inputs["attention_mask"].sum())
    finally:
        sampled.to_standard_module()  # hooks and per-example gradients off the resident model
        for p in params:
            p.grad = None
    seconds = time.perf_counter() - start
    LOG.info("DP-SGD: %d steps, loss %.4f, %.1f s", len(losses), sum(losses) / max(len(losses), 1), seconds)
    return {
        "train-loss": sum(losses) / max(len(losses), 1),
        "train-steps": len(losses),
        "train-examples-seen": seen,
        "train-tokens-seen": tokens,
        "train-seconds": seconds,
        "learning-rate": learning_rate,
    }
