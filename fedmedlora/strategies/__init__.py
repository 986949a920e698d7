"""Aggregation strategies chosen by name: the registry (registry.py), the front every strategy shares (base.py) and
one file per rule family. The maths lives in ../aggregation/ as pure functions."""

from .registry import STRATEGIES, build_strategy, resolve_weight_by, settings_problems, unused_settings

__all__ = ["STRATEGIES", "build_strategy", "resolve_weight_by", "settings_problems", "unused_settings"]
