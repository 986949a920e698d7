"""Tasks: how rows become tensors, which trainer trains them, and how a split is predicted and scored. The contract
is base.py; registry.py picks the class for a run."""

from .registry import TASKS, build_task, task_class

__all__ = ["TASKS", "build_task", "task_class"]
