"""Every cheap check of a run before anything expensive starts, all problems in one message.

Under `flwr run`, a SuperLink, Ray and the ServerApp start before the first line that reads the model or the data:
a mistake found there costs about a minute and shows as the last line of a traceback. `preflight(settings)` makes
every check that needs no weights and no training, in seconds, and returns every problem it finds (one line each,
naming the key, file and line):

- model: the name resolves (built-in, a local folder holding a config and weights, a GGUF file, converted once, or
  a hub id in the cache), the config loads, the family is known, quantization can run here for that family,
  `data.task` runs on that family, the tokenizer loads, and every `lora.target-modules` name matches a module of
  the model built on the meta device (no weights, no memory);
- data: every `data.datasets` entry is checked and read once (a bundled name of the task, a file that parses, a hub
  id that loads: `data/entries.py`), then the sites are formed as the run forms them (partitioning, site sizes);
- results: `run.results-dir` is a folder this process can write (or create), and the run folder is new
  (`run_folder.py`); nothing is created.

`fedmedlora run` and `fedmedlora experiment` call it before Flower or any training starts and exit 2 with the
message; the ServerApp calls it first (`require`, without the data checks: it reads no site's data) for plain
`flwr run`; each site's data is checked where it lives, when the server asks it to describe its site.
Each part is a function of its own, so a site can check its own data files the same way (`data.entries`).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data.entries import entry_rows
from .data.files import DataFormatError
from .data.sites import Site, load_sites
from .run_folder import HOLDS_RUN, run_dir_problem, run_dir_state, settings_run_dir
from .settings import ConfigError, Settings

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


class PreflightError(ConfigError):
    """A run that cannot start; the message lists every problem."""

    def __init__(self, problems: list[str]):
        super().__init__(problems, "run")
        self.args = (f"the run cannot start ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n"
                     + "\n".join(f"  - {p}" for p in problems),)


@dataclass
class Preflight:
    """What the checks found: every problem, and the sites the data checks formed (None if they could not)."""

    problems: list[str] = field(default_factory=list)
    sites: list[Site] | None = None


def _folder_problem(name: str, folder: str) -> str | None:
    """A local model folder must hold what from_pretrained() reads: config.json and weights."""
    if not (Path(folder) / "config.json").is_file():
        return (f"key 'model.name' = {name!r}: the folder {folder} has no config.json: not a saved model (save one "
                "there with save_pretrained())")
    if any(next(Path(folder).glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        return None
    return (f"key 'model.name' = {name!r}: the folder {folder} has no weights ({', '.join(WEIGHT_PATTERNS)}); "
            "save the model there with save_pretrained()")


def model_problems(settings: Settings, where: str = "this machine") -> list[str]:
    """Model source, config, family against data.task, quantization in `where` for that family, tokenizer and LoRA
    targets (the model on the meta device)."""
    from .model.adapter import meta_base_model, target_modules_problem
    from .model.loading import load_config, load_tokenizer, model_family, resolve_model_source
    from .model.quantization import quantization_problem
    from .tasks.registry import task_class

    name = settings.model.name
    key = f"key 'model.name' = {name!r}"
    family = settings.model.family if settings.model.family != "auto" else None
    problems = []
    try:
        source = resolve_model_source(name)  # a GGUF file is converted here, once per machine
        if os.path.isdir(source) and (problem := _folder_problem(name, source)):
            problems.append(problem)
        else:
            config = load_config(name)
            family = family or model_family(config)
    except Exception as err:  # transformers and the hub raise OSError, ValueError and their own errors
        problems.append(f"{key}: {err}")
    # quantization can run here for this family (when the family is unknown, for either)
    if problem := quantization_problem(settings.model.quantization, where, family):
        problems.append(problem)
    if problems or family is None:
        return problems
    try:
        head = task_class(settings, family).head
    except ConfigError as err:
        return list(err.problems)
    try:
        load_tokenizer(name, family)
    except Exception as err:  # a folder without tokenizer files, a broken tokenizer.json, ...
        problems.append(f"{key}: cannot load its tokenizer: {err}")
    try:
        if problem := target_modules_problem(settings, meta_base_model(settings, head)):
            problems.append(problem)
    except Exception as err:  # a config transformers cannot build a model from
        problems.append(f"{key}: cannot build the model from its config: {type(err).__name__}: {err}")
    return problems


def data_problems(settings: Settings) -> tuple[list[str], list[Site] | None]:
    """Each data.datasets entry read once (every bad entry reported), then the sites formed from the rows."""
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name in settings.datasets:
        if name in seen:
            problems.append(f"key 'data.datasets': {name!r} is named twice (its rows would be in two sites, or in "
                            "a site's training and test rows)")
            continue
        seen.add(name)
        try:
            rows.extend(entry_rows(settings.data.task, name))
        except DataFormatError as err:
            problems.append(str(err))
    if problems:
        return problems, None
    try:
        return [], load_sites(settings, rows=rows)
    except ConfigError as err:
        return list(err.problems), None


def results_problems(settings: Settings) -> list[str]:
    """run.results-dir is (or can be made) a folder this process writes in; the run folder is new. Nothing is left
    behind: the probe is a temporary file in the nearest folder that exists, removed at once."""
    results_dir = settings.run.results_dir
    key = f"key 'run.results-dir' = {results_dir!r}"
    root = Path(os.path.expanduser(results_dir)).absolute()
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        return [f"{key}: cannot write there: {existing} is a file, not a folder"]
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".fedmedlora-write-check-"):
            pass  # root may bypass permission bits, so write a file rather than ask os.access
    except OSError as err:
        return [f"{key}: cannot write there: {err.strerror or err} ({existing})"]
    folder = settings_run_dir(settings)
    if folder is None or settings.run.resume:  # a resumed run's folder is checked by resume.open_run
        return []
    if run_dir_state(folder)[0] == HOLDS_RUN:  # resume.open_run answers: completed, or how to resume it
        return []
    problem = run_dir_problem(folder)
    return [problem] if problem else []


def check_run(settings: Settings, *, where: str = "this machine", results: bool = True,
              data: bool = True) -> Preflight:
    """Every check, every problem (the model's, the data's and the results folder's are independent). `data=False`
    where the data is not this process's to read (the ServerApp: each site checks its own when asked)."""
    report = Preflight()
    report.problems += model_problems(settings, where)
    if data:
        found, report.sites = data_problems(settings)
        report.problems += found
    if results:
        report.problems += results_problems(settings)
    return report


def preflight(settings: Settings, *, where: str = "this machine", results: bool = True,
              data: bool = True) -> list[str]:
    """Every problem that would stop the run later, found now (empty: the run can start)."""
    return check_run(settings, where=where, results=results, data=data).problems


def require(settings: Settings, *, where: str = "this machine", results: bool = True,
            data: bool = True) -> Preflight:
    """`check_run`, raising one `PreflightError` (a `ConfigError`) with every problem."""
    report = check_run(settings, where=where, results=results, data=data)
    if report.problems:
        raise PreflightError(report.problems)
    return report
