"""Start a run in its folder, or continue a stopped one there: never overwrite a run, never resume a different one.

A folder with results is only ever continued, and only when asked (`run.resume = true`, which `fedmedlora run
--resume RUN_DIR` sets): a completed run is refused, an unfinished one is refused with the command that resumes it.
A resumed run must have the run config it started with (only `ADJUSTABLE` keys may change), continues from its
newest saved state (../run_state.py) with metrics.jsonl cut back to that round, and plays the remaining rounds
through Flower's own loop (strategies/resumed.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import run_folder
from .recorder import RunRecorder
from .run_state import RoundState, inspect_run, load_round_state, state_rounds
from .settings import Settings

# Keys a resumed run may change: where the folder is, and how long the server waits; nothing that changes results.
ADJUSTABLE = {"run.resume", "run.name", "run.results-dir", "strategy.round-timeout", "strategy.node-wait"}


def run_directory(settings: Settings, name: str) -> Path:
    """The run's folder: run.results-dir / run.name (`name`: run.name, or the default name made once for the run)."""
    return run_folder.run_dir(settings.run.results_dir, name)


def config_differences(run_dir: Path, settings: Settings) -> list[str]:
    """Keys whose value differs from the run config the stopped run started with (config.json)."""
    path = run_dir / "config.json"
    try:
        original = json.loads(path.read_text())["run-config"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        return [f"{path}: cannot be read ({err}); the run config it started with is unknown"]
    return [f"key '{key}' = {now!r}, but the run started with {then!r}"
            for key, now, then in changed_keys(original, settings.as_dict())]


def changed_keys(original: dict[str, Any], now: dict[str, Any], *, both_only: bool = False
                 ) -> list[tuple[str, Any, Any]]:
    """(key, now, then) for every key a resumed run may not change whose value differs; a key only one side has
    counts as None there, or is skipped with `both_only` (a folder written by older code)."""
    keys = set(now) & set(original) if both_only else set(now) | set(original)
    return [(key, now.get(key), original.get(key)) for key in sorted(keys)
            if key not in ADJUSTABLE and now.get(key) != original.get(key)]


def open_run(settings: Settings, run_dir: Path, info: dict[str, Any]) -> tuple[RunRecorder, RoundState | None]:
    """(the recorder, the state to resume from, None for a new run); a clear error for a folder that must not be
    used. The caller holds the folder's `RunLock`."""
    folder = inspect_run(run_dir)
    if folder.status == "completed":
        raise FileExistsError(f"key 'run.name' = {run_dir.name!r}: {run_dir} holds a completed run; choose another "
                              "run.name" + (" (nothing to resume)" if settings.run.resume else ""))
    if folder.status == "new":
        return RunRecorder.create(settings, info, run_dir), None
    if not settings.run.resume:
        raise FileExistsError(f"key 'run.name' = {run_dir.name!r}: {folder.describe()}: {folder.resume_hint}")
    if folder.state_round is None:
        raise FileExistsError(f"{folder.describe()}: it cannot be resumed; choose another run.name")
    problems = config_differences(run_dir, settings)
    if problems:
        raise ValueError(f"key 'run.resume' = true: {run_dir} was started with another run config:\n"
                         + "\n".join(f"  - {p}" for p in problems)
                         + f"\nresume with the run config it started with (only {', '.join(sorted(ADJUSTABLE))} "
                         "may change)")
    damaged = []
    for server_round in reversed(state_rounds(run_dir)):  # the newest state that reads back intact
        try:
            state = load_round_state(run_dir, server_round)
        except ValueError as err:
            damaged.append(str(err))
            continue
        return RunRecorder.reopen(run_dir, state.round), state
    raise ValueError(f"{run_dir}: no saved state can be read:\n" + "\n".join(f"  - {d}" for d in damaged))
