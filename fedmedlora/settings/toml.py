"""The run config as TOML: presets in, the pyproject block and flat run-config files out, and the key table.

Flattening and unflattening are Flower's own (`flwr.common.config`), so a preset means here exactly what it means to
`flwr run --run-config`; TOML text is written by `tomli_w` (a Flower dependency), one formatter for every file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w
from flwr.common.config import flatten_dict, unflatten_dict

from .parse import ConfigError
from .schema import KEYS


def flatten_toml(table: Mapping[str, Any]) -> dict[str, Any]:
    """Nested TOML tables as dotted keys, as Flower flattens run config."""
    return dict(flatten_dict(dict(table)))


def load_toml_overrides(path: str | Path) -> dict[str, Any]:
    """Read a run-config preset (conf/*.toml) as flat overrides; TOML errors name the file."""
    try:
        with open(path, "rb") as fh:
            return flatten_toml(tomllib.load(fh))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"{path}: {err}"], source=str(path)) from None


def toml_text(config: Mapping[str, Any]) -> str:
    """Flat dotted keys as TOML that Flower flattens back to the same keys (tables, not quoted dotted keys)."""
    return tomli_w.dumps(unflatten_dict(dict(config)))


def write_flat_toml(config: Mapping[str, Any], path: Path) -> None:
    Path(path).write_text(toml_text(config))


def toml_literal(value: Any) -> str:
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def pyproject_block() -> str:
    """The `[tool.flwr.app.config]` block matching the schema (printed by `fedmedlora config --pyproject`)."""
    return "\n".join(["[tool.flwr.app.config]", *(f"{k.name} = {toml_literal(k.default)}" for k in KEYS)])


def describe() -> str:
    """Every key with type, default, allowed values and meaning (the reference table in README)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key in KEYS:
        allowed = f" Allowed: {', '.join(map(str, key.choices))}." if key.choices else ""
        rows.append(f"| `{key.name}` | {key.type.__name__} | `{key.default!r}` | {key.help}.{allowed} |")
    return "\n".join(rows)
