"""A run config checked by every rule: the settings' own (settings/) and the chosen strategy's (strategies/).

This is what the apps, the launcher and the experiment call; `settings.parse_run_config` alone knows nothing of
strategies, so the settings layer does not depend on the layers above it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .settings import ConfigError, Settings, parse_run_config
from .strategies import settings_problems


def load_settings(run_config: Mapping[str, Any], *, source: str = "run config") -> Settings:
    settings = parse_run_config(run_config, source=source)
    problems = settings_problems(settings)
    if problems:
        raise ConfigError(problems, source)
    return settings
