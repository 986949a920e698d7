"""TRL's SFTTrainer, with the model's own loss where TRL's fused LM head has no kernel (CPU).

TRL computes the SFT loss through a fused, chunked LM head that never materialises the (tokens x vocabulary) logits.
On CUDA/XPU it runs Triton kernels; elsewhere it falls back to torch ops on (tokens x 32768) tiles, scores every
position (prompt and padding too), recomputes the projection in backward and folds in the entropy and top-1 metrics.
On SmolLM2-135M (vocabulary 49,152) on a 2-core CPU, one forward and backward through it took 1.34x the model's own
loss on the same batches, with the same loss to 1e-4 (results/performance.md). So off Triton devices the loss is
Transformers' `Trainer.compute_loss`: the model's cross-entropy over labels != -100 (the completion-only labels are
built at tokenization), normalised by the items in the batch as TRL does. TRL's `entropy` and
`mean_token_accuracy` logs are not computed on that path; nothing here reads them.
"""

from __future__ import annotations

import functools
from typing import Any

from transformers import Trainer
from trl import SFTTrainer


@functools.cache  # asked every training step; the answer for a device does not change within a process
def fused_head_has_kernel(device: Any) -> bool:
    """Whether TRL's fused LM head runs its Triton kernels on `device` (its own test), rather than the torch fallback."""
    try:
        from trl.kernels.chunked_logprob import _use_triton
    except ImportError:  # a TRL without the fused head: its compute_loss is the plain one anyway
        return False
    return bool(_use_triton(device))


class SiteSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is the model's own where TRL's fused head would run its slow torch fallback."""

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None):
        if fused_head_has_kernel(next(model.parameters()).device):
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        inputs["use_cache"] = False
        return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)
