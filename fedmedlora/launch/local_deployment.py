"""A whole deployment on this machine: a SuperLink and one SuperNode per site, each its own process with its own
FLWR_HOME and working directory, as on separate machines. For trials, the deployment test and the benchmark.

    with LocalDeployment(root, sites=[SiteSpec("general", data=[path]), ...], tls=True, auth=True) as fed:
        code = fed.submit({"num-server-rounds": 2, ...})

It runs the same commands an operator runs (deploy.py): `fedmedlora certs` material, `flower-superlink` with TLS and
SuperNode authentication, `flwr supernode register` per site key, `flower-supernode` per site with its node config,
`flwr run` through a named connection. Every process is started in its own session and stopped by its PID (its
process group: the SuperNode's SuperExec and ClientApp processes with it); logs stay under `root`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .certs import CA_FILE, write_site_key, write_tls
from .deploy import flower_env, submit, superlink_command, supernode_command, write_connection

CONNECTION = "local"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SiteSpec:
    name: str
    data: list[str] = field(default_factory=list)  # its own files; empty: partition `partition` of the pool
    partition: tuple[int, int] | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra environment for this site's processes
    cache: bool = True  # keep rows, tokenized splits and a converted base in <root>/<name>/cache


class LocalDeployment:
    def __init__(self, root: Path, sites: list[SiteSpec], *, tls: bool = True, auth: bool = True,
                 env: dict[str, str] | None = None, startup_timeout: float = 120.0):
        self.root = Path(root)
        self.sites = sites
        self.tls, self.auth = tls, auth
        self.extra_env = dict(env or {})
        self.timeout = startup_timeout
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.cli_home = self.root / "cli"
        self.certs = self.root / "certs"

    # --- processes -------------------------------------------------------------------------------------------------
    def env(self, home: Path, **extra: str) -> dict[str, str]:
        return flower_env(**{**self.extra_env, **extra, "FLWR_HOME": str(home)})

    def _start(self, name: str, command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
        cwd.mkdir(parents=True, exist_ok=True)
        log = open(cwd / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.processes[name] = proc
        return proc

    def log(self, name: str, lines: int = 40) -> str:
        folder = self.root / ("link" if name == "superlink" else name)
        try:
            return "\n".join((folder / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["flwr", *args], cwd=self.cli_home, env=self.env(self.cli_home), capture_output=True,
                              text=True, timeout=timeout)

    # --- start -----------------------------------------------------------------------------------------------------
    def start(self) -> "LocalDeployment":
        if self.tls:
            write_tls(self.certs, ["127.0.0.1", "localhost"])
        link_dir = self.root / "link"
        self._start("superlink", superlink_command(port=self.port, host="127.0.0.1",
                                                   certs=self.certs if self.tls else None, auth=self.auth),
                    link_dir, self.env(link_dir / "home"))
        self._wait_healthy()
        self.cli_home.mkdir(parents=True, exist_ok=True)
        write_connection(CONNECTION, self.address, root_certificates=self.certs / CA_FILE if self.tls else None,
                         insecure=not self.tls, default=True, home=self.cli_home)
        for k, site in enumerate(self.sites):
            key = None
            if self.auth:
                key, public = write_site_key(self.certs, site.name)
                out = self.flwr("supernode", "register", str(public), CONNECTION, "--name", site.name)
                if out.returncode != 0:
                    raise RuntimeError(f"flwr supernode register {public} failed:\n{out.stdout}\n{out.stderr}")
            folder = self.root / site.name
            command = supernode_command(superlink=self.address, data=site.data, name=site.name,
                                        partition=site.partition,
                                        root_certificates=self.certs / CA_FILE if self.tls else None, auth_key=key,
                                        port=free_port(), cache_dir=folder / "cache", cache=site.cache)
            self._start(site.name, command, folder, self.env(folder / "home", **site.env))
        self._wait_online()
        return self

    def _wait_healthy(self) -> None:
        import httpx

        import ssl

        url = f"{'https' if self.tls else 'http'}://{self.address}/health"
        verify: Any = ssl.create_default_context(cafile=str(self.certs / CA_FILE)) if self.tls else False
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.processes["superlink"].poll() is not None:
                raise RuntimeError(f"flower-superlink exited ({self.processes['superlink'].returncode}):\n"
                                   + self.log("superlink"))
            try:
                if httpx.get(url, verify=verify, timeout=1.0).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"flower-superlink not healthy after {self.timeout:.0f} s:\n" + self.log("superlink"))

    def online(self) -> int:
        out = self.flwr("supernode", "ls", CONNECTION, "--format", "json")
        try:
            nodes = json.loads(out.stdout).get("nodes", [])
        except json.JSONDecodeError:
            return 0
        return sum(str(n.get("status", "")).lower() == "online" for n in nodes)

    def _wait_online(self) -> None:
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            for site in self.sites:
                proc = self.processes[site.name]
                if proc.poll() is not None:
                    raise RuntimeError(f"SuperNode {site.name} exited ({proc.returncode}):\n" + self.log(site.name))
            if self.online() >= len(self.sites):
                return
            time.sleep(1.0)
        raise RuntimeError(f"{self.online()} of {len(self.sites)} SuperNodes online after {self.timeout:.0f} s")

    # --- run -------------------------------------------------------------------------------------------------------
    def submit(self, app_dir: Path, run_config: dict[str, Any], stream_to=None) -> int:
        import io

        from ..settings import write_flat_toml

        config_file = self.cli_home / f"run-{len(list(self.cli_home.glob('run-*.toml')))}.toml"
        write_flat_toml(run_config, config_file)
        stream = stream_to if stream_to is not None else io.StringIO()
        self.last_output = stream
        return submit(str(app_dir), CONNECTION, [str(config_file)], stream_to=stream,
                      env=self.env(self.cli_home))

    # --- stop ------------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            stop_process_group(proc)

    def __enter__(self) -> "LocalDeployment":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 20.0) -> None:
    """Stop `proc` and every process of its session's group, even if `proc` itself already exited (its children
    may outlive it: a refused SuperNode's, a ClientApp still shutting down); SIGKILL whatever is left after `grace`."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return  # the whole group is gone
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace
    while True:
        try:
            os.killpg(proc.pid, 0 if time.monotonic() < deadline else signal.SIGKILL)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline + 10:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
