"""What a stopped run needs to go on exactly where it stopped, written after every round, and what a run folder holds.

    state/round_<k>.safetensors   the float32 global adapter after round k ("adapter/<key>"), the strategy's arrays
                                  ("strategy/<name>", e.g. FedAdam's moments) and torch's CPU RNG ("rng/torch")
    state/round_<k>.json          round k, Python's and numpy's global RNG states (Flower samples clients with
                                  `random`), the strategy's facts, and the SHA-256 of the arrays file

Both are written atomically (temporary file, fsync, rename), the JSON last: a state whose JSON exists is complete.
They are written after round k's line in metrics.jsonl, so a run killed in between resumes from round k - 1 and plays
round k again; the two newest states are kept (adapters are small: the cost is a few adapter copies per round). The
running totals (communication, failures, exclusions, elapsed time) are not here: round k's metrics line has them.

A run folder is "completed" (summary.json says so), "unfinished" (metrics.jsonl but no final status: killed, failed or
interrupted; resumable from its newest state) or held by a live ServerApp (`RunLock`: an OS file lock, released by
the kernel however the process ends, so a killed run never looks alive).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STATE_DIR = "state"
KEEP = 2  # newest states kept (the newest, and one in case it is lost with the disk it was on)


@dataclass
class RoundState:
    round: int
    adapter: dict[str, np.ndarray]
    strategy_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    strategy_info: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    torch_rng: np.ndarray | None = None


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def capture_rng() -> tuple[dict[str, Any], np.ndarray]:
    """The global RNG states a server draws from: Python's, numpy's (JSON-able) and torch's CPU generator."""
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return ({"python": [version, list(internal), gauss],
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]},
            torch.get_rng_state().numpy().copy())


def restore_rng(state: RoundState) -> None:
    import torch

    version, internal, gauss = state.rng["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state.rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if state.torch_rng is not None:
        torch.set_rng_state(torch.from_numpy(state.torch_rng.copy()))


def save_round_state(run_dir: Path, server_round: int, adapter: dict[str, np.ndarray],
                     strategy_arrays: dict[str, np.ndarray], strategy_info: dict[str, Any]) -> Path:
    """Write round `server_round`'s state (RNGs captured now) and drop states older than the `KEEP` newest."""
    from safetensors.numpy import save

    folder = Path(run_dir) / STATE_DIR
    folder.mkdir(exist_ok=True)
    rng, torch_rng = capture_rng()
    arrays = {**{f"adapter/{k}": np.ascontiguousarray(v) for k, v in adapter.items()},
              **{f"strategy/{k}": np.ascontiguousarray(v) for k, v in strategy_arrays.items()},
              "rng/torch": torch_rng}
    blob = save(arrays)
    arrays_path = folder / f"round_{server_round}.safetensors"
    _fsync_write(arrays_path, blob)
    meta = {"round": server_round, "format": 1, "arrays": arrays_path.name,
            "sha256": hashlib.sha256(blob).hexdigest(), "rng": rng, "strategy": strategy_info,
            "adapter-keys": list(adapter)}
    path = folder / f"round_{server_round}.json"
    _fsync_write(path, json.dumps(meta).encode())
    for old in state_rounds(run_dir)[:-KEEP]:
        for suffix in (".json", ".safetensors"):
            (folder / f"round_{old}{suffix}").unlink(missing_ok=True)
    return path


def state_rounds(run_dir: Path) -> list[int]:
    """Rounds with a committed state (its JSON written), oldest first."""
    folder = Path(run_dir) / STATE_DIR
    rounds = []
    for path in folder.glob("round_*.json") if folder.is_dir() else []:
        suffix = path.stem.removeprefix("round_")
        if suffix.isdigit():
            rounds.append(int(suffix))
    return sorted(rounds)


def load_round_state(run_dir: Path, server_round: int) -> RoundState:
    """Round `server_round`'s state; a ValueError naming the file if it is damaged."""
    from safetensors.numpy import load

    folder = Path(run_dir) / STATE_DIR
    path = folder / f"round_{server_round}.json"
    try:
        meta = json.loads(path.read_text())
        blob = (folder / meta["arrays"]).read_bytes()
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path}: cannot be read ({err})") from None
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise ValueError(f"{folder / meta['arrays']}: damaged (its SHA-256 differs from the one in {path.name})")
    arrays = load(blob)
    adapter = {k: arrays[f"adapter/{k}"] for k in meta["adapter-keys"]}  # the order the run had
    strategy = {k.removeprefix("strategy/"): v for k, v in arrays.items() if k.startswith("strategy/")}
    return RoundState(meta["round"], adapter, strategy, meta.get("strategy", {}), meta["rng"],
                      arrays.get("rng/torch"))


@dataclass
class RunFolder:
    """What a run folder holds, read before a run starts in it."""

    path: Path
    status: str  # "new" (nothing recorded), "completed", or "unfinished" (summary running/failed/interrupted/none)
    rounds: int  # rounds with a line in metrics.jsonl (round 0 included)
    summary_status: str  # what summary.json says ("" if none)
    state_round: int | None  # newest round with a saved state

    @property
    def resume_hint(self) -> str:
        return (f"resume it with `fedmedlora run --resume {self.path}` (or run.resume = true with this run.name), "
                "or choose another run.name")

    def describe(self) -> str:
        said = f"summary status '{self.summary_status}'" if self.summary_status else "no summary.json"
        saved = (f"resumable after round {self.state_round}" if self.state_round is not None
                 else "no saved state to resume from")
        return f"{self.path} holds an unfinished run ({said}, rounds 0..{self.rounds - 1} recorded, {saved})"


def inspect_run(run_dir: Path) -> RunFolder:
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    rounds = 0
    if metrics.exists():
        with open(metrics, encoding="utf-8") as fh:
            rounds = sum(1 for line in fh if line.strip())
    try:
        summary_status = str(json.loads((run_dir / "summary.json").read_text()).get("status", ""))
    except (OSError, json.JSONDecodeError, AttributeError):
        summary_status = ""
    saved = state_rounds(run_dir)
    if summary_status == "completed":
        status = "completed"
    elif metrics.exists():
        status = "unfinished"
    else:
        status = "new"
    return RunFolder(run_dir, status, rounds, summary_status, saved[-1] if saved else None)


class RunLock:
    """Held by the ServerApp writing a run folder, for as long as it runs (`run_dir/.lock`, an OS file lock)."""

    def __init__(self, run_dir: Path):
        from filelock import FileLock

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(run_dir) / ".lock"
        self._lock = FileLock(str(self.path), timeout=0)

    def __enter__(self) -> "RunLock":
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise RuntimeError(f"{self.path.parent} is being written by another ServerApp that is still running "
                               "(it holds the folder's lock): wait for it to end, or stop it first") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()
