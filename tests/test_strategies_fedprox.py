"""FedProx on the client: the proximal term (mu/2)||w - w_global||^2 is in the loss and holds the update back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedmedlora.model.training import ProximalTerm


class Line(torch.nn.Module):
    """loss = mean((w x - y)^2): one trainable number, like a one-parameter adapter."""

    def __init__(self, w: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([w]))
        self.frozen = torch.nn.Parameter(torch.tensor([7.0]), requires_grad=False)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, **loss_kwargs: object) -> dict[str, torch.Tensor]:
        return {"loss": ((self.w * x - labels) ** 2).mean()}


def trainer_for(model: torch.nn.Module, tmp_path: Path, steps: int = 1, grad_accum: int = 1):
    from transformers import Trainer, TrainingArguments

    rows = [{"x": torch.tensor([1.0]), "labels": torch.tensor([5.0])} for _ in range(8)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=2,
                             gradient_accumulation_steps=grad_accum, learning_rate=0.1, optim="sgd",
                             lr_scheduler_type="constant", report_to="none", use_cpu=True, save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, max_grad_norm=0.0)
    return Trainer(model=model, args=args, train_dataset=rows)


def test_term_is_added_to_the_loss(tmp_path: Path) -> None:
    model = Line(3.0)
    trainer = trainer_for(model, tmp_path)
    term = ProximalTerm(0.5)
    term.attach(trainer)  # w_global = 3 (the frozen tensor is not part of the term)
    with torch.no_grad():
        model.w.fill_(5.0)
    inputs = {"x": torch.tensor([[1.0]]), "labels": torch.tensor([[5.0]])}
    # data loss (5 - 5)^2 = 0; term 0.5 / 2 * (5 - 3)^2 = 1
    assert float(trainer.compute_loss(model, inputs).detach()) == pytest.approx(1.0)
    loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True)
    assert float(loss.detach()) == pytest.approx(1.0) and "loss" in outputs
    assert term.distance() == pytest.approx(2.0)


def test_term_counted_once_per_step_when_the_loss_is_scaled_for_accumulation(tmp_path: Path) -> None:
    model = Line(3.0)
    trainer = trainer_for(model, tmp_path, grad_accum=4)
    ProximalTerm(0.5).attach(trainer)
    with torch.no_grad():
        model.w.fill_(5.0)
    inputs = {"x": torch.tensor([[1.0]]), "labels": torch.tensor([[5.0]])}
    trainer.model_accepts_loss_kwargs = True  # the loss arrives normalised over the whole step's items
    trainer.current_gradient_accumulation_steps = 4
    # Trainer will not divide by 4, so the term is divided here: 1 / 4 per micro-batch, 1 per step
    assert float(trainer.compute_loss(model, inputs, num_items_in_batch=8).detach()) == pytest.approx(0.25)
    # without num_items_in_batch the Trainer divides the whole loss by 4 itself: the term stays whole here
    assert float(trainer.compute_loss(model, inputs).detach()) == pytest.approx(1.0)


def test_large_mu_keeps_the_adapter_near_the_global_one(tmp_path: Path) -> None:
    # SGD, lr 0.1, data pulls w from 3 towards 5 (gradient 2 (w - 5)); with mu = 10 the term pulls back
    # with mu (w - 3): one step from w = 3 moves by 0.1 * 4 = 0.4 either way, the next ones differ
    finals = {}
    for mu in (0.0, 10.0):
        model = Line(3.0)
        trainer = trainer_for(model, tmp_path, steps=5)
        term = ProximalTerm(mu)
        term.attach(trainer)
        trainer.train()
        finals[mu] = term.distance()
    assert finals[0.0] == pytest.approx(2 - 2 * 0.8 ** 5, abs=1e-4)  # w = 0.8 w + 1 each step: 4.34
    assert finals[10.0] < 0.5 * finals[0.0]  # w settles at (2*5 + 10*3) / 12 = 3.33
    assert finals[10.0] == pytest.approx(1 / 3, abs=0.05)


def test_negative_mu_is_refused() -> None:
    with pytest.raises(ValueError, match="mu"):
        ProximalTerm(-1.0)
