"""`fedmedlora run`: `flwr run` with the pitfalls handled (see ../shared/notes/flower.md and README "Running").

- The run config is merged (presets and key=value pairs, in order; Flower itself takes one TOML file *or* pairs)
  and validated here, so a bad key fails in a second with a message naming it, before Flower starts anything.
- Relative paths in the run config (data files, model folders, results dir) become absolute: the SuperLink and
  its ClientApps do not run in the user's working directory.
- A private SuperLink is started on free ports, with its own FLWR_HOME, with runtime dependency installation,
  telemetry and update checks off (offline machines), and stopped by its PID when the run ends. A SuperLink the
  user started is never touched.
- The federation gets one SuperNode per site (`num-supernodes = data.num-sites`).
- The exit code tells the truth: `flwr run --stream` exits 0 even when the ServerApp crashed, so the run's final
  status is read back with `flwr ls` and the ServerApp's log is shown on failure.
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

from ..model.loading import check_model_settings
from ..recorder import default_run_name
from ..run_config import load_settings
from ..settings import ConfigError, flatten_toml, load_toml_overrides, write_flat_toml

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
    from flwr.common.config import parse_config_args

    merged: dict[str, Any] = {}
    for item in items:
        if item.strip().endswith(".toml"):
            if not Path(item).is_file():
                raise ConfigError([f"--run-config {item}: no such file"])
            merged.update(load_toml_overrides(item))
        else:
            try:
                merged.update(parse_config_args([item]))
            except Exception as err:  # flwr raises bare ValueErrors and TOML errors
                raise ConfigError([f"--run-config {item!r}: {err}"]) from None
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


def run(app_dir: str, run_config: list[str], federation_config: str = "", stream_to=sys.stdout) -> int:
    """Validate, launch and supervise one run. Returns the process exit code (0 only if the run completed)."""
    cwd = Path.cwd()
    app = Path(app_dir).resolve()
    try:
        overrides = parse_overrides(run_config)
        fused = {**app_defaults(app), **overrides}
        fused = absolutize_paths(fused, cwd)
        if not fused.get("run.name"):
            fused["run.name"] = default_run_name(load_settings(fused))
        settings = load_settings(fused)
        check_model_settings(settings, "this machine")  # a GGUF model is converted here, before Flower starts
    except (ConfigError, RuntimeError, ValueError) as err:
        print(f"fedmedlora: {err}", file=sys.stderr)
        return 2
    run_dir = Path(settings.run.results_dir) / settings.run.name
    if (run_dir / "metrics.jsonl").exists():
        print(f"fedmedlora: key 'run.name' = {settings.run.name!r}: {run_dir} already holds a run", file=sys.stderr)
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
            proc = subprocess.Popen(command, cwd=app, env=link.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
            run_id = None
            assert proc.stdout is not None
            for line in proc.stdout:
                stream_to.write(line)
                stream_to.flush()
                if run_id is None and (m := re.search(r"Successfully started run (\d+)", line)):
                    run_id = m.group(1)
            proc.wait()
            if run_id is None:
                print(f"fedmedlora: flwr run did not start a run (exit code {proc.returncode})", file=sys.stderr)
                code = proc.returncode or 1
            else:
                status = _run_status(link.env, app, run_id)
                if "completed" in status and (run_dir / "summary.json").exists():
                    code = 0
                else:
                    print(f"fedmedlora: run {run_id} ended with status {status!r}; SuperLink log tail:\n"
                          f"{link.log_tail()}", file=sys.stderr)
        except KeyboardInterrupt:
            code = 130
        except RuntimeError as err:
            print(f"fedmedlora: {err}", file=sys.stderr)
        finally:
            link.stop()
            if run_dir.is_dir() and link.log_file.exists():
                shutil.copy(link.log_file, run_dir / "superlink.log")
        return code
