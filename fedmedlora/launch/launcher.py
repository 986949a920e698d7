"""`fedmedlora run`: `flwr run` with the pitfalls handled (see ../shared/notes/flower.md and README "Running").

- The run config is merged (presets and key=value pairs, in order; Flower itself takes one TOML file *or* pairs),
  validated, and preflighted here (model, LoRA targets, every data file, the sites, the results folder: see
  ../preflight.py), so a mistake fails in seconds with every problem named, before Flower starts anything.
- Relative paths in the run config (data files, model folders, results dir) become absolute: the SuperLink and
  its ClientApps do not run in the user's working directory.
- A private SuperLink is started on free ports, with its own FLWR_HOME, with runtime dependency installation,
  telemetry and update checks off (offline machines), and stopped by its PID when the run ends. A SuperLink the
  user started is never touched.
- The federation gets one SuperNode per site (`num-supernodes = data.num-sites`).
- The exit code tells the truth: `flwr run --stream` exits 0 even when the ServerApp crashed, so the run's final
  status is read back with `flwr ls` and from summary.json (0 only if both say completed), and the ServerApp's log is
  shown on failure. A ServerApp that died without a word (killed) leaves summary.json "running": it is marked
  "interrupted", with the command that resumes it.
- A run folder that holds results is never reused: a completed run is refused, an unfinished one is refused with the
  command that resumes it, `--resume RUN_DIR` continues it with the run config it started with (../resume.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..preflight import require
from ..recorder import default_run_name, read_summary, write_json_atomic
from ..resume import config_differences
from ..run_config import load_settings
from ..run_state import RunLock, inspect_run
from ..settings import ConfigError, flatten_toml, load_toml_overrides, write_flat_toml
from ..settings.pairs import parse_pairs

OFFLINE_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_defaults(app_dir: Path) -> dict[str, Any]:
    import tomllib

    pyproject = app_dir / "pyproject.toml"
    if not pyproject.is_file():
        raise ConfigError([f"{pyproject}: no pyproject.toml (is {app_dir} a Flower app?)"])
    with open(pyproject, "rb") as fh:
        data = tomllib.load(fh)
    try:
        return flatten_toml(data["tool"]["flwr"]["app"]["config"])
    except KeyError:
        raise ConfigError([f"{pyproject}: no [tool.flwr.app.config] table"]) from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Overrides from `--run-config` arguments: preset files (*.toml) and "k=v k2=v2" strings, later wins."""
    merged: dict[str, Any] = {}
    for item in items:
        if item.strip().endswith(".toml"):
            if not Path(item).is_file():
                raise ConfigError([f"--run-config {item}: no such file"])
            merged.update(load_toml_overrides(item))
        else:
            merged.update(parse_pairs(item))
    return merged


def absolutize_paths(config: dict[str, Any], cwd: Path) -> dict[str, Any]:
    out = dict(config)

    def absolute(value: str) -> str:
        path = Path(os.path.expanduser(value))
        return str((cwd / path).resolve()) if not path.is_absolute() and (cwd / path).exists() else value

    if "data.datasets" in out:
        out["data.datasets"] = ",".join(absolute(d.strip()) for d in str(out["data.datasets"]).split(",") if d.strip())
    if "model.name" in out and not str(out["model.name"]).startswith("builtin:"):
        out["model.name"] = absolute(str(out["model.name"]))
    results_dir = Path(os.path.expanduser(str(out.get("run.results-dir", "results/runs"))))
    out["run.results-dir"] = str(results_dir if results_dir.is_absolute() else (cwd / results_dir).resolve())
    return out


class PrivateSuperLink:
    """A simulation SuperLink of our own: free ports, own FLWR_HOME, stopped by PID."""

    def __init__(self, app_dir: Path, home: Path):
        self.app_dir = app_dir
        self.home = home
        self.http_port = _free_port()
        self.control_port = _free_port()
        self.log_file = home / "superlink.log"
        self.env = {**os.environ, **OFFLINE_ENV, "FLWR_HOME": str(home),
                    "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.http_port),
                    "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port)}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        import httpx

        command = ["flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess",
                   "--control-api-address", f"127.0.0.1:{self.control_port}", "--host", "127.0.0.1",
                   "--port", str(self.http_port), "--log-file", str(self.log_file),
                   "--disable-runtime-dependency-installation"]
        self.process = subprocess.Popen(command, cwd=self.app_dir, env=self.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flower-superlink exited with code {self.process.returncode}; log: "
                                   f"{self.log_file}\n{self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/health", timeout=0.5).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"flower-superlink did not become healthy in {timeout:.0f} s; log: {self.log_file}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:  # the SuperLink spawns the ServerApp and simulation processes in its session
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _run_status(env: dict[str, str], app_dir: Path, run_id: str) -> str:
    out = subprocess.run(["flwr", "ls", "--run-id", run_id, "--format", "json"], cwd=app_dir, env=env,
                         capture_output=True, text=True, timeout=60)
    try:
        payload = json.loads(out.stdout)
        runs = payload.get("runs", [])
        return str(runs[0].get("status", "unknown")) if runs else "unknown"
    except (json.JSONDecodeError, AttributeError, IndexError):
        return f"unknown ({out.stdout.strip()[:200]} {out.stderr.strip()[:200]})"


def resumed_config(run_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The run config a stopped run started with (its config.json), to continue it in `run_dir`."""
    folder = inspect_run(run_dir)
    if folder.status == "new":
        raise ConfigError([f"--resume {run_dir}: no run to resume there (no metrics.jsonl)"])
    try:
        original = json.loads((run_dir / "config.json").read_text())["run-config"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise ConfigError([f"--resume {run_dir}: config.json cannot be read ({err})"]) from None
    return {**original, **overrides, "run.resume": True, "run.name": run_dir.name,
            "run.results-dir": str(run_dir.parent)}


def folder_problem(settings: Any, run_dir: Path) -> str | None:
    """Why the run cannot start in `run_dir` (the ServerApp checks again; this fails before Flower starts)."""
    folder = inspect_run(run_dir)
    if folder.status == "completed":
        return f"key 'run.name' = {settings.run.name!r}: {run_dir} holds a completed run; choose another run.name"
    if folder.status == "unfinished" and not settings.run.resume:
        return f"key 'run.name' = {settings.run.name!r}: {folder.describe()}: {folder.resume_hint}"
    if folder.status == "unfinished":
        if folder.state_round is None:
            return f"{folder.describe()}: it cannot be resumed; choose another run.name"
        problems = config_differences(run_dir, settings)
        if problems:
            return f"--resume {run_dir}: the run started with another run config:\n  " + "\n  ".join(problems)
    return None


def next_free(path: Path) -> Path:
    """`path` if it does not exist, else the first free `<stem>.<n><suffix>`."""
    n = 0
    while path.exists():
        n += 1
        path = path.with_name(f"{path.name.split('.')[0]}.{n}{path.suffix}")
    return path


def mark_interrupted(run_dir: Path) -> None:
    """A ServerApp that ended without its final summary (killed) leaves "running": say it stopped, and how to go on."""
    summary = read_summary(run_dir)
    if summary.get("status") != "running":
        return
    try:
        with RunLock(run_dir):  # free: no ServerApp is writing the folder any more
            write_json_atomic(run_dir / "summary.json", {
                **summary, "status": "interrupted",
                "reason": "the ServerApp ended without writing its summary (killed or lost)",
                "resume": f"fedmedlora run --resume {run_dir}"})
    except RuntimeError:
        pass


def stream_flwr_run(command: list[str], cwd: Path, env: dict[str, str], stream_to) -> tuple[int, str | None]:
    """Run a `flwr run ... --stream` command, copying its output to `stream_to` as it comes; (exit code, the id of
    the run it started, or None)."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    run_id = None
    assert proc.stdout is not None
    for line in proc.stdout:
        stream_to.write(line)
        stream_to.flush()
        if run_id is None and (m := re.search(r"Successfully started run (\d+)", line)):
            run_id = m.group(1)
    proc.wait()
    return proc.returncode, run_id


def run(app_dir: str, run_config: list[str], federation_config: str = "", stream_to=sys.stdout,
        resume: str = "") -> int:
    """Validate, launch and supervise one run. Returns the process exit code (0 only if the run completed).

    resume: a run folder to continue (its config.json's run config, with `run_config`'s overrides on top)."""
    cwd = Path.cwd()
    app = Path(app_dir).resolve()
    try:
        overrides = parse_overrides(run_config)
        if resume:
            fused = resumed_config(Path(resume).resolve(), overrides)
        else:
            fused = {**app_defaults(app), **overrides}
        fused = absolutize_paths(fused, cwd)
        if not fused.get("run.name"):
            fused["run.name"] = default_run_name(load_settings(fused))
        settings = load_settings(fused)
        run_dir = Path(settings.run.results_dir) / settings.run.name
        problem = folder_problem(settings, run_dir)  # before any model work (a GGUF model is converted in preflight)
        if problem is None:
            require(settings, where="this machine")  # every cheap check, before Flower starts anything
    except (ConfigError, RuntimeError, ValueError) as err:
        print(f"fedmedlora: {err}", file=sys.stderr)
        return 2
    if problem is not None:
        print(f"fedmedlora: {problem}", file=sys.stderr)
        return 2
    federation = " ".join([f"num-supernodes={settings.data.num_sites}", federation_config]).strip()
    with tempfile.TemporaryDirectory(prefix="fedmedlora-flwr-") as tmp:
        home = Path(tmp)
        config_file = home / "run-config.toml"
        write_flat_toml({k: v for k, v in fused.items()}, config_file)
        link = PrivateSuperLink(app, home)
        code = 1
        try:
            link.start()
            command = ["flwr", "run", str(app), "--stream", "--run-config", str(config_file),
                       "--federation-config", federation]
            print(f"fedmedlora: {' '.join(command[:3])} ... ({settings.data.num_sites} sites; results in {run_dir})",
                  file=stream_to, flush=True)
            returncode, run_id = stream_flwr_run(command, app, link.env, stream_to)
            if run_id is None:
                print(f"fedmedlora: flwr run did not start a run (exit code {returncode})", file=sys.stderr)
                code = returncode or 1
            else:
                status = _run_status(link.env, app, run_id)
                summary_status = read_summary(run_dir).get("status")
                if "completed" in status and summary_status == "completed":
                    code = 0
                else:
                    print(f"fedmedlora: run {run_id} ended with status {status!r} (summary.json: "
                          f"{summary_status!r}); SuperLink log tail:\n{link.log_tail()}", file=sys.stderr)
        except KeyboardInterrupt:
            code = 130
        except RuntimeError as err:
            print(f"fedmedlora: {err}", file=sys.stderr)
        finally:
            link.stop()
            if run_dir.is_dir() and link.log_file.exists():
                shutil.copy(link.log_file, next_free(run_dir / "superlink.log"))  # a resumed run keeps both logs
            if run_dir.is_dir():
                mark_interrupted(run_dir)
        if code != 0 and inspect_run(run_dir).status == "unfinished":
            print(f"fedmedlora: {inspect_run(run_dir).describe()}: resume it with `fedmedlora run --resume "
                  f"{run_dir}`", file=sys.stderr)
        return code
