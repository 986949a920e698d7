"""Where a run writes (`run.results-dir`/`run.name`) and whether that folder may take a new run.

`run.name` is a single folder name (the schema refuses '/', '\\', '.' and '..'), so a run never writes outside
`run.results-dir`. A folder is taken only when it is new: absent or empty. One that holds a run (`metrics.jsonl`)
or the start of one (a run that stopped before round 0 ended leaves config.json, sites.json, summary.json, no
metrics) is refused with what it holds, so nothing a run wrote is overwritten. `run_dir_state` is the one place that
tells these apart (resume can build on it); the recorder, the preflight and the launcher ask it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .settings import Settings

NEW, HALF_WRITTEN, HOLDS_RUN, NOT_A_FOLDER = "new", "half-written", "holds-run", "not-a-folder"


def run_dir(results_dir: str, name: str) -> Path:
    """The run folder: `name` (one folder name, checked by the schema) under the absolute results dir."""
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"key 'run.name' = {name!r}: not a single folder name")
    return Path(os.path.expanduser(results_dir)).resolve() / name


def run_dir_state(path: Path) -> tuple[str, list[str]]:
    """(state, the names it holds): NEW (absent or empty), HOLDS_RUN (metrics.jsonl: at least round 0 was recorded),
    HALF_WRITTEN (anything else: a run that stopped before round 0 ended, or files that are not a run's) or
    NOT_A_FOLDER."""
    if not path.exists():
        return NEW, []
    if not path.is_dir():
        return NOT_A_FOLDER, []
    names = sorted(p.name for p in path.iterdir() if p.name != ".lock")  # the ServerApp's lock (run_state.RunLock)
    if not names:
        return NEW, []
    return (HOLDS_RUN if "metrics.jsonl" in names else HALF_WRITTEN), names


def _listing(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def run_dir_problem(path: Path) -> str | None:
    """Why a new run cannot use `path`, naming run.name and what the folder holds; None when it can."""
    state, names = run_dir_state(path)
    name = path.name
    if state == NOT_A_FOLDER:
        return f"key 'run.name' = {name!r}: {path} is a file, not a folder"
    if state == HOLDS_RUN:
        status = ""
        try:
            status = f" (status {json.loads((path / 'summary.json').read_text())['status']!r})"
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return (f"key 'run.name' = {name!r}: {path} already holds a run{status}; choose another name or remove "
                "the folder")
    if state == HALF_WRITTEN:
        return (f"key 'run.name' = {name!r}: {path} holds the start of a run that stopped before round 0 ended "
                f"({_listing(names)}; no metrics.jsonl); choose another name, or remove the folder after reading "
                "what it holds (config.json, summary.json)")
    return None


def settings_run_dir(settings: Settings) -> Path | None:
    """The run folder the settings name, or None while run.name is empty (the run picks a fresh timestamped name)."""
    if not settings.run.name:
        return None
    return run_dir(settings.run.results_dir, settings.run.name)
