"""Run-config settings: the schema (schema.py), parsing and cross-key rules (parse.py), TOML in and out (toml.py)."""

from .parse import ConfigError, parse_run_config, with_overrides
from .schema import KEY_BY_NAME, KEYS, Settings, defaults
from .toml import describe, flatten_toml, load_toml_overrides, pyproject_block, toml_text, write_flat_toml

__all__ = ["KEYS", "KEY_BY_NAME", "ConfigError", "Settings", "defaults", "describe", "flatten_toml",
           "load_toml_overrides", "parse_run_config", "pyproject_block", "toml_text", "with_overrides",
           "write_flat_toml"]
