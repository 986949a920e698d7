"""From Flower's flat run config to `Settings`, or a `ConfigError` naming every bad key at once.

Flower hands the ServerApp and the ClientApps a flat dict (`context.run_config`, nested TOML tables joined with
dots). Checks run in two passes: each key alone (known, typed, allowed, in range), then the rules that relate
keys (`RULES`). Rules that belong to a strategy live with the strategies (`fedmedlora.strategies.settings_problems`)
and are applied by `fedmedlora.run_config.load_settings`, which is what the apps call.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from typing import Any

from .schema import KEY_BY_NAME, KEYS, SECTIONS, KeySpec, Settings


class ConfigError(ValueError):
    """A run config that cannot run. The message names each key, its value and what is allowed."""

    def __init__(self, problems: list[str], source: str = "run config"):
        self.problems = problems
        super().__init__(f"invalid {source}:\n" + "\n".join(f"  - {p}" for p in problems))


def _type_problem(key: KeySpec, value: Any) -> str | None:
    if key.type is bool:
        ok = isinstance(value, bool)
    elif key.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif key.type is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, str)
    if ok:
        return None
    example = {bool: "true or false", int: "an integer, e.g. 8", float: "a number, e.g. 0.5",
               str: 'a quoted string, e.g. "fedavg"'}[key.type]
    return f"key '{key.name}' = {value!r} ({type(value).__name__}): expected {example}"


def _key_problem(key: KeySpec, value: Any) -> str | None:
    if problem := _type_problem(key, value):
        return problem
    if key.choices is not None and value not in key.choices:
        return f"key '{key.name}' = {value!r}: allowed values are " + ", ".join(repr(c) for c in key.choices)
    if key.check is not None and (msg := key.check(value)):
        return f"key '{key.name}' = {value!r}: {msg}"
    return None


# --- rules that relate keys ------------------------------------------------------------------------------------

Rule = Callable[[Settings], list[str]]


def _local_work(s: Settings) -> list[str]:
    steps, epochs = s.train.local_steps, s.train.local_epochs
    if (steps > 0) == (epochs > 0):
        return [f"keys 'train.local-steps' = {steps} and 'train.local-epochs' = {epochs}: set exactly one of them "
                "> 0 (the amount of local work must be unambiguous)"]
    return []


def _sampling(s: Settings) -> list[str]:
    problems = []
    sites, per_round = s.data.num_sites, s.strategy.clients_per_round
    if per_round > sites:
        problems.append(f"key 'strategy.clients-per-round' = {per_round}: more than the {sites} sites "
                        "(data.num-sites); allowed 0 (all) to data.num-sites")
    if s.strategy.min_replies > (per_round or sites):
        problems.append(f"key 'strategy.min-replies' = {s.strategy.min_replies}: more than the "
                        f"{per_round or sites} clients sampled per round")
    if s.evaluate.sites > sites:
        problems.append(f"key 'evaluate.sites' = {s.evaluate.sites}: more than the {sites} sites (data.num-sites); "
                        "allowed 0 (all) to data.num-sites")
    return problems


def _splits(s: Settings) -> list[str]:
    if s.data.val_fraction + s.data.test_fraction >= 0.9:
        return [f"keys 'data.val-fraction' + 'data.test-fraction' = "
                f"{s.data.val_fraction + s.data.test_fraction:.2f}: leave at least 10% of each site to train"]
    return []


def _learning_rates(s: Settings) -> list[str]:
    if s.train.learning_rate_min > s.train.learning_rate_max:
        return [f"key 'train.learning-rate-min' = {s.train.learning_rate_min}: larger than "
                f"'train.learning-rate-max' = {s.train.learning_rate_max}"]
    return []


def _datasets(s: Settings) -> list[str]:
    return [] if s.datasets else ["key 'data.datasets' is empty: name at least one dataset"]


def _resume(s: Settings) -> list[str]:
    if s.run.resume and not s.run.name.strip():
        return ["key 'run.resume' = true needs key 'run.name' (the run folder to continue under run.results-dir; "
                "or use `fedmedlora run --resume RUN_DIR`)"]
    return []



def _privacy(s: Settings) -> list[str]:
    p = s.privacy
    problems = []
    if p.dp != "off" and (p.noise_multiplier > 0) == (p.target_epsilon > 0):
        problems.append(f"keys 'privacy.noise-multiplier' = {p.noise_multiplier} and 'privacy.target-epsilon' = "
                        f"{p.target_epsilon}: with privacy.dp = {p.dp!r} set exactly one of them > 0 (the noise, or "
                        "the epsilon the noise is calibrated to)")
    if p.dp == "example" and s.train.local_steps <= 0:
        problems.append(f"key 'train.local-steps' = {s.train.local_steps}: privacy.dp = 'example' accounts DP-SGD "
                        "steps; set train.local-steps > 0 (and train.local-epochs = 0)")
    return problems



def _site_ranks(s: Settings) -> list[str]:
    raw = s.lora.site_ranks
    if not raw.strip():
        return []
    try:
        ranks = s.site_ranks
    except ValueError:
        return [f"key 'lora.site-ranks' = {raw!r}: expected comma-separated integers, e.g. \"16,8,4\""]
    problems = []
    if len(ranks) != s.data.num_sites:
        problems.append(f"key 'lora.site-ranks' = {raw!r}: {len(ranks)} ranks for {s.data.num_sites} sites "
                        "(data.num-sites)")
    bad = [r for r in ranks if not 0 < r <= s.lora.r]
    if bad:
        problems.append(f"key 'lora.site-ranks' = {raw!r}: ranks must be in 1..lora.r = {s.lora.r} (the server's "
                        f"rank); got {bad}")
    return problems


def _plateau(s: Settings) -> list[str]:
    if s.evaluate.plateau_rounds and not s.evaluate.server:
        return [f"key 'evaluate.plateau-rounds' = {s.evaluate.plateau_rounds}: stopping at a plateau reads the "
                "server-side evaluation; set evaluate.server = true"]
    return []


RULES: tuple[Rule, ...] = (_local_work, _sampling, _splits, _learning_rates, _datasets, _resume, _privacy, _site_ranks,
                           _plateau)


def build_settings(values: Mapping[str, Any]) -> Settings:
    """`Settings` from a complete mapping of typed values (no checks)."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top: dict[str, Any] = {}
    for spec in KEYS:
        (sections[spec.section] if spec.section else top)[spec.attr] = values[spec.name]
    section_types = {f.name: f.default_factory for f in dataclasses.fields(Settings) if f.name in SECTIONS}
    return Settings(**top, **{name: section_types[name](**fields) for name, fields in sections.items()})


def parse_run_config(run_config: Mapping[str, Any], *, source: str = "run config") -> Settings:
    """Typed, validated settings from Flower's flat run config. Missing keys take their defaults."""
    problems: list[str] = []
    values = {k.name: k.default for k in KEYS}
    for name, value in run_config.items():
        key = KEY_BY_NAME.get(name)
        if key is None:
            close = difflib.get_close_matches(name, KEY_BY_NAME, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            problems.append(f"unknown key '{name}'{hint} (`fedmedlora config` lists every key)")
            continue
        if problem := _key_problem(key, value):
            problems.append(problem)
            continue
        values[name] = float(value) if key.type is float else value
    if problems:
        raise ConfigError(problems, source)
    settings = build_settings(values)
    for rule in RULES:
        problems.extend(rule(settings))
    if problems:
        raise ConfigError(problems, source)
    return settings


def with_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """A copy of `settings` with some dotted keys replaced, validated again."""
    return parse_run_config({**settings.as_dict(), **overrides})
