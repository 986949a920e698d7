"""Operator commands for Flower's deployment engine: a SuperLink, one SuperNode per site on its own data, a run.

Each builds the Flower 1.42 command it runs, prints it (so an operator can run Flower directly, or put it in a
service unit) and runs it, with what fedmedlora needs added:

- offline operation: runtime dependency installation, telemetry and update checks off (every site installs the same
  environment beforehand: `pip install torch==2.13.0 -e .`, the same fedmedlora and Flower versions);
- TLS from one folder (`fedmedlora certs` writes a trial one) and SuperNode authentication on by default with TLS;
- a SuperNode's node config built from its data path(s), name and cache folder, values quoted as Flower's parser
  wants; the data files are checked (and, with --task, read with the task's reader) before Flower starts, so a typo
  or a malformed line is reported with its file and line at once, not when the first message arrives;
- `submit` validates the run config like `fedmedlora run`, runs `flwr run` against a named SuperLink connection and
  exits 0 only if the run's final status is "completed" (`flwr run --stream` exits 0 even when the ServerApp failed).

A SuperLink's Fleet, Control and Runtime APIs share one port in Flower 1.42.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..settings import ConfigError, write_flat_toml
from .certs import CA_FILE, CERT_FILE, KEY_FILE
from .launcher import OFFLINE_ENV, app_defaults, parse_overrides, stream_flwr_run

DEFAULT_PORT = 9093  # the SuperLink (Fleet, Control and Runtime APIs)
DEFAULT_NODE_PORT = 9094  # a SuperNode's own Runtime API, for its ClientApp processes: one per SuperNode on a host


def flower_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **OFFLINE_ENV, **extra}


def superlink_command(*, port: int = DEFAULT_PORT, host: str = "0.0.0.0", certs: Path | None = None,
                      auth: bool = True, database: str | None = None, log_file: Path | None = None) -> list[str]:
    """`flower-superlink` with TLS from `certs` (ca.crt, superlink.crt, superlink.key) and SuperNode
    authentication, or `--insecure` when `certs` is None (trials on one machine only)."""
    command = ["flower-superlink", "--host", host, "--port", str(port), "--disable-runtime-dependency-installation"]
    if certs is None:
        if auth:
            raise ConfigError(["SuperNode authentication needs TLS: give --certs (or --no-auth with --insecure)"])
        command.append("--insecure")
    else:
        certs = Path(certs).resolve()
        for name in (CA_FILE, CERT_FILE, KEY_FILE):
            if not (certs / name).is_file():
                raise ConfigError([f"--certs {certs}: no {name} (`fedmedlora certs {certs}` writes a trial set)"])
        command += ["--ssl-ca-certfile", str(certs / CA_FILE), "--ssl-certfile", str(certs / CERT_FILE),
                    "--ssl-keyfile", str(certs / KEY_FILE)]
        if auth:
            command.append("--enable-supernode-auth")
    if database:
        command += ["--database", database]
    if log_file:
        command += ["--log-file", str(log_file)]
    return command


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value))  # a TOML basic string: quotes and backslashes escaped


def node_config_string(config: Mapping[str, Any]) -> str:
    """`--node-config` as Flower parses it: space-separated key=value with TOML values."""
    return " ".join(f"{key}={toml_value(value)}" for key, value in config.items())


def check_site_data(paths: list[str], task: str | None) -> list[Path]:
    """The data files, absolute and existing; with `task`, read now with the task's reader."""
    from ..data.own_site import own_paths

    files = own_paths(",".join(str(Path(p).expanduser().resolve()) for p in paths))
    if task:
        from ..data.rows import load_rows

        rows = load_rows(task, [str(f) for f in files])
        print(f"fedmedlora: {len(rows)} {task} rows in {', '.join(map(str, files))}", flush=True)
    return files


def supernode_command(*, superlink: str, data: list[str] | None = None, name: str = "", partition: tuple[int, int]
                      | None = None, root_certificates: Path | None = None, auth_key: Path | None = None,
                      port: int = DEFAULT_NODE_PORT, host: str = "127.0.0.1", cache_dir: Path | None = None,
                      cache: bool = True, task: str | None = None) -> list[str]:
    """`flower-supernode` for one site: its own data files (`data`), or a partition of the bundled pool; with
    `cache` False the site keeps nothing on disk between messages."""
    node: dict[str, Any] = {}
    if data:
        node["data-path"] = ",".join(map(str, check_site_data(data, task)))
        if name:
            node["site-name"] = name
    if partition is not None:
        node["partition-id"], node["num-partitions"] = partition
    if not node:
        raise ConfigError(["a SuperNode needs its data: --data /path/to/site/file (or --partition-id/--num-partitions "
                           "for a trial on the bundled pool)"])
    if not cache:
        node["cache"] = False
    elif cache_dir is not None:
        node["cache-dir"] = str(Path(cache_dir).expanduser().resolve())
    command = ["flower-supernode", "--superlink", superlink, "--host", host, "--port", str(port),
               "--node-config", node_config_string(node)]
    if root_certificates is None:
        if auth_key is not None:
            raise ConfigError(["SuperNode authentication needs TLS: give --root-certificates with --auth-key"])
        command.append("--insecure")
    else:
        command += ["--root-certificates", str(Path(root_certificates).resolve())]
    if auth_key is not None:
        command += ["--auth-supernode-private-key", str(Path(auth_key).resolve())]
    return command


def flwr_home() -> Path:
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")


def write_connection(name: str, address: str, *, root_certificates: Path | None = None, insecure: bool = False,
                     default: bool = False, home: Path | None = None) -> Path:
    """Add (or replace) SuperLink connection `name` in $FLWR_HOME/config.toml, for `flwr` and `submit`."""
    import tomllib

    import tomli_w

    if (root_certificates is None) == (not insecure):
        raise ConfigError(["a connection needs --root-certificates (TLS) or --insecure (trials on one machine)"])
    path = (home or flwr_home()) / "config.toml"
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    links = data.setdefault("superlink", {})
    entry: dict[str, Any] = {"address": address}
    if insecure:
        entry["insecure"] = True
    else:
        entry["root-certificates"] = str(Path(root_certificates).resolve())
    links[name] = entry
    if default or "default" not in links:
        links["default"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(data))
    return path


def run_status(connection: str, run_id: str, env: Mapping[str, str], cwd: Path) -> str:
    out = subprocess.run(["flwr", "ls", connection, "--run-id", run_id, "--format", "json"], cwd=cwd, env=dict(env),
                         capture_output=True, text=True, timeout=120)
    try:
        runs = json.loads(out.stdout).get("runs", [])
        return str(runs[0].get("status", "unknown")) if runs else "unknown"
    except (json.JSONDecodeError, AttributeError, IndexError):
        return f"unknown ({out.stdout.strip()[:200]} {out.stderr.strip()[:200]})"


def submit(app_dir: str, connection: str, run_config: list[str], stream_to=sys.stdout,
           env: Mapping[str, str] | None = None) -> int:
    """Validate the run config, `flwr run` it on `connection`, and return 0 only if the run completed.

    Paths in the run config are not rewritten: data paths belong to the sites (their node config) and
    run.results-dir is on the SuperLink's machine, relative to the directory the SuperLink was started in.
    """
    from ..run_config import load_settings

    app = Path(app_dir).resolve()
    try:
        fused = {**app_defaults(app), **parse_overrides(run_config)}
        settings = load_settings(fused)
    except ConfigError as err:
        print(f"fedmedlora: {err}", file=sys.stderr)
        return 2
    env = dict(env or flower_env())
    with tempfile.TemporaryDirectory(prefix="fedmedlora-submit-") as tmp:
        config_file = Path(tmp) / "run-config.toml"
        write_flat_toml(fused, config_file)
        command = ["flwr", "run", str(app), connection, "--stream", "--run-config", str(config_file)]
        print(f"fedmedlora: {' '.join(command)} ({settings.data.num_sites} sites)", file=stream_to, flush=True)
        returncode, run_id = stream_flwr_run(command, app, env, stream_to)
    if run_id is None:
        print(f"fedmedlora: flwr run did not start a run (exit code {returncode})", file=sys.stderr)
        return returncode or 1
    status = run_status(connection, run_id, env, app)
    if "completed" in status and "fail" not in status:
        return 0
    print(f"fedmedlora: run {run_id} ended with status {status!r} (`flwr log {run_id} {connection}`)",
          file=sys.stderr)
    return 1
