"""A run config checked by every rule: the settings' own (settings/), the chosen strategy's (strategies/) and those
of the per-round QA benchmarks (qa/suite.py).

This is what the apps, the launcher and the experiment call; `settings.parse_run_config` alone knows nothing of
strategies, so the settings layer does not depend on the layers above it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .qa.suite import benchmark_problems
from .settings import ConfigError, Settings, parse_run_config
from .strategies import settings_problems


def load_settings(run_config: Mapping[str, Any], *, source: str = "run config") -> Settings:
    settings = parse_run_config(run_config, source=source)
    problems = settings_problems(settings) + benchmark_problems(settings)
    if problems:
        raise ConfigError(problems, source)
    return settings
