"""A Flower deployment on 127.0.0.1 for tests: one SuperLink, one SuperNode per site, `flwr run` against them.

Each process gets its own FLWR_HOME (as on separate machines), free ports, the offline environment, and its own
session, so it and the processes it spawns (ServerApp, ClientApps) are stopped together, by its PID. Insecure
(no TLS): TLS and SuperNode authentication are tested elsewhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from fedmedlora.launch.launcher import OFFLINE_ENV, _free_port
from fedmedlora.launch.local_deployment import stop_process_group
from fedmedlora.settings import write_flat_toml

ROOT = Path(__file__).resolve().parents[1]


def _stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if process is not None:
        stop_process_group(process, sig)


class LocalDeployment:
    def __init__(self, workdir: Path, sites: int):
        self.workdir = workdir
        self.sites = sites
        self.port = _free_port()
        self.superlink: subprocess.Popen | None = None
        self.nodes: dict[int, subprocess.Popen] = {}
        self.run: subprocess.Popen | None = None

    def _env(self, name: str) -> dict[str, str]:
        home = self.workdir / name
        home.mkdir(parents=True, exist_ok=True)
        return {**os.environ, **OFFLINE_ENV, "FLWR_HOME": str(home)}

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")
        return subprocess.Popen(command, cwd=self.workdir, env=self._env(name), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 120.0) -> None:
        """The SuperLink, once it answers, then the SuperNodes (the ServerApp waits for them to connect)."""
        import httpx

        self.superlink = self._spawn("superlink", [
            "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(self.port),
            "--disable-runtime-dependency-installation"])
        deadline = time.time() + timeout
        while True:
            if self.superlink.poll() is not None or time.time() > deadline:
                raise RuntimeError("the SuperLink did not start:\n" + self.log("superlink")[-3000:])
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=0.5).is_success:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        for site in range(self.sites):
            self.nodes[site] = self._spawn(f"site{site}", [
                "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}", "--host", "127.0.0.1",
                "--port", str(_free_port()), "--node-config", f"partition-id={site} num-partitions={self.sites}"])

    def submit(self, run_config: dict[str, Any]) -> subprocess.Popen:
        """`flwr run <app> dep --stream` with `run_config` (a flat dict) as a TOML file."""
        env = self._env("cli")
        (Path(env["FLWR_HOME"]) / "config.toml").write_text(
            f'[superlink]\ndefault = "dep"\n\n[superlink.dep]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n')
        config_file = self.workdir / "run-config.toml"
        write_flat_toml(run_config, config_file)
        log = open(self.workdir / "run.log", "w")
        self.run = subprocess.Popen(["flwr", "run", str(ROOT), "dep", "--stream", "--run-config", str(config_file)],
                                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self.run

    def kill_node(self, site: int) -> None:
        """A SuperNode (and the ClientApp it runs) dies at once, without deregistering: a crash, not a shutdown."""
        _stop(self.nodes[site], signal.SIGKILL)

    def stop(self) -> None:
        _stop(self.run)
        for process in self.nodes.values():
            _stop(process)
        _stop(self.superlink)
