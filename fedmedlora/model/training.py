"""One client's local training round: the Trainer arguments and the run, shared by both trainer families.

A fresh Trainer (and so a fresh optimizer) is built on every call around the resident PEFT model; the learning rate is
the round's (constant within the round); the seed changes with the round and the site so every round draws fresh
local batches (FlowerTune's template re-seeds identically every round and so replays the same batches).
"""

from __future__ import annotations

import logging
import tempfile
import time
from typing import Any

from ..settings import Settings

LOG = logging.getLogger(__name__)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def round_seed(settings: Settings, server_round: int, site_id: int) -> int:
    return settings.run.seed + 10_007 * server_round + 101 * site_id


def training_arguments(settings: Settings, *, family: str, learning_rate: float, seed: int, output_dir: str) -> Any:
    common: dict[str, Any] = dict(
        output_dir=output_dir,
        per_device_train_batch_size=settings.train.batch_size,
        gradient_accumulation_steps=settings.train.grad_accum_steps,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=settings.train.weight_decay,
        max_grad_norm=settings.train.max_grad_norm or None,
        optim=settings.train.optimizer,
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        bf16=settings.model.dtype == "bfloat16",
        fp16=settings.model.dtype == "float16",
        gradient_checkpointing=settings.model.gradient_checkpointing,
        dataloader_num_workers=0,
        dataloader_pin_memory=_cuda_available(),
        # bf16 on a CPU (autocast; fast where the CPU has AVX512-BF16): Transformers refuses it unless told
        use_cpu=settings.model.dtype == "bfloat16" and not _cuda_available(),
    )
    if settings.train.local_steps > 0:
        common["max_steps"] = settings.train.local_steps
    else:
        common["num_train_epochs"] = settings.train.local_epochs
    if family == "causal":
        from trl import SFTConfig

        return SFTConfig(
            **common,
            max_length=settings.data.max_length,
            completion_only_loss=settings.train.completion_only_loss,
            dataset_kwargs={"skip_prepare_dataset": True},  # rows arrive tokenized once per worker
            remove_unused_columns=False,
        )
    from transformers import TrainingArguments

    return TrainingArguments(**common)


class ProximalTerm:
    """FedProx's client-side term: adds (mu / 2) * ||w - w_global||^2 over the trainable tensors to the loss.

    `attach(trainer)` snapshots the trainable tensors (the LoRA factors and any task head, as just loaded from the
    global adapter) and wraps the trainer's `compute_loss`, so it works for the Transformers Trainer and TRL's
    SFTTrainer alike. The term is added once per optimizer step: when the Trainer divides each micro-batch loss by
    the gradient-accumulation steps it divides the term too; when the loss comes already scaled for accumulation
    (normalised by the items in the whole step), the term is divided here instead.
    """

    def __init__(self, mu: float):
        if not mu >= 0:
            raise ValueError(f"proximal mu must be >= 0, got {mu}")
        self.mu = float(mu)
        self.params: list[Any] = []
        self.anchors: list[Any] = []

    def attach(self, trainer: Any) -> None:
        self.params = [p for p in trainer.model.parameters() if p.requires_grad]
        self.anchors = [p.detach().clone() for p in self.params]
        original = trainer.compute_loss

        def compute_loss(model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None):
            out = original(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            loss, outputs = out if return_outputs else (out, None)
            term = self.value()
            if _loss_scaled_for_accumulation(trainer, num_items_in_batch):
                term = term / getattr(trainer, "current_gradient_accumulation_steps",
                                      trainer.args.gradient_accumulation_steps)
            loss = loss + term.to(loss.dtype)
            return (loss, outputs) if return_outputs else loss

        trainer.compute_loss = compute_loss

    def squared_distance(self) -> Any:
        """||w - w_global||^2 over the trainable tensors (a tensor in the autograd graph)."""
        import torch

        total = torch.zeros((), device=self.params[0].device if self.params else "cpu")
        for param, anchor in zip(self.params, self.anchors):
            total = total + (param.float() - anchor.float()).pow(2).sum()
        return total

    def value(self) -> Any:
        return 0.5 * self.mu * self.squared_distance()

    def distance(self) -> float:
        """||w - w_global|| now (a number, for the round's metrics)."""
        import torch

        with torch.no_grad():
            return float(self.squared_distance()) ** 0.5


def _loss_scaled_for_accumulation(trainer: Any, num_items_in_batch: Any) -> bool:
    """Transformers' own rule (Trainer.training_step) for whether it divides the loss by the accumulation steps."""
    scaled = getattr(trainer, "loss_is_scaled_for_ga", None)
    if scaled is not None:
        return bool(scaled)
    return bool((getattr(trainer, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None)
                or getattr(trainer, "compute_loss_func", None) is not None)


def train_locally(settings: Settings, task: Any, resident: Any, train_dataset: Any, *, learning_rate: float,
                  seed: int, extra_loss: Any = None) -> dict[str, float]:
    """Train the resident adapter in place for one round's local work (`settings.train`); returns its metrics."""
    from transformers import PrinterCallback

    with tempfile.TemporaryDirectory(prefix="fedmedlora-trainer-") as tmp:
        args = training_arguments(settings, family=resident.family, learning_rate=learning_rate, seed=seed,
                                  output_dir=tmp)
        trainer = task.make_trainer(resident, train_dataset, args)
        trainer.remove_callback(PrinterCallback)  # it prints the end-of-training dict for every client
        if extra_loss is not None:
            extra_loss.attach(trainer)
        start = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - start
        state = trainer.state
    examples_seen = state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps
    if settings_epochs := settings.train.local_epochs:  # epochs: each example once per epoch
        examples_seen = int(round(len(train_dataset) * settings_epochs))
    LOG.info("local training: %d steps, loss %.4f, %.1f s", state.global_step, output.training_loss, seconds)
    metrics = {
        "train-loss": float(output.training_loss),
        "train-steps": int(state.global_step),
        "train-examples-seen": int(examples_seen),
        "train-tokens-seen": int(state.num_input_tokens_seen),
        "train-seconds": seconds,
        "learning-rate": learning_rate,
    }
    if isinstance(extra_loss, ProximalTerm):
        metrics["proximal-mu"] = extra_loss.mu
        metrics["proximal-distance"] = extra_loss.distance()
    return metrics
