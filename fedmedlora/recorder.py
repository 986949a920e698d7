"""A run's results folder, written as the run goes so nothing is lost if it fails later.

    results/runs/<run-name>/
        config.json        resolved settings, model family, trainer, versions, command (written at start)
        sites.json         per-site statistics (written at start)
        metrics.jsonl      one JSON line per round, appended and flushed as each round ends (round 0 = initial)
        peft_<round>/      global adapter checkpoints (PeftModel.from_pretrained loads them)
        state/             what a resumed run needs, after the last round (../run_state.py)
        summary.json       "status": "running" from the start (with the ServerApp's pid and host), then the final
                           summary ("completed", "failed" or "interrupted"); atomic
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from . import run_folder
from .settings import Settings

LOG = logging.getLogger(__name__)
MIB = 1024.0 * 1024.0


def write_text_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one (a run killed mid-write loses nothing)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def default_run_name(settings: Settings) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{settings.data.task}-{settings.strategy.name}"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("fedmedlora", "flwr", "torch", "transformers", "peft", "trl", "datasets", "flwr-datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


class RunRecorder:
    """Collects each round's record (clients, aggregation, communication, evaluation) and writes it when it ends."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.rounds: dict[int, dict[str, Any]] = {}
        self.comm_total = {"sent-mib": 0.0, "received-mib": 0.0}
        self.totals = {"failures": 0, "exclusions": 0, "clips": 0, "dropped": 0}
        self.summary_fields: dict[str, Any] = {}  # run-level facts kept up to date as the run goes (e.g. privacy)
        self.started = time.time()
        self.resumed_from: list[int] = []  # the rounds after which this run was resumed

    @classmethod
    def create(cls, settings: Settings, info: dict[str, Any], run_dir: Path | None = None) -> "RunRecorder":
        if run_dir is None:
            run_dir = run_folder.run_dir(settings.run.results_dir, settings.run.name or default_run_name(settings))
        if problem := run_folder.run_dir_problem(run_dir):  # never reuse a folder: nothing written is overwritten
            raise FileExistsError(problem)
        run_dir.mkdir(parents=True, exist_ok=True)
        recorder = cls(run_dir)
        write_json_atomic(run_dir / "config.json", {
            "run-config": settings.as_dict(),
            **info,
            "versions": _versions(),
            "platform": platform.platform(),
            "argv": sys.argv,
            "started": datetime.now().isoformat(timespec="seconds"),
        })
        recorder.mark_running()
        LOG.info("results: %s", run_dir)
        return recorder

    @classmethod
    def reopen(cls, run_dir: Path, last_round: int) -> "RunRecorder":
        """The recorder of a stopped run, going on after `last_round`: metrics.jsonl keeps rounds 0..last_round (one
        line each; lines after it, or half-written, are dropped: those rounds are played again) and the running totals
        are taken from its last line."""
        records = read_metrics_prefix(run_dir, last_round)
        recorder = cls(run_dir)
        tmp = run_dir / "metrics.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, run_dir / "metrics.jsonl")
        recorder.rounds = {r["round"]: r for r in records}
        last = records[-1]
        recorder.totals = {counter: int(last[f"total-{counter}"]) for counter in recorder.totals}
        recorder.comm_total = {k: float(last["comm"][f"total-{k}"]) for k in recorder.comm_total}
        recorder.started = time.time() - float(last["elapsed-seconds"])  # time stopped is not run time
        previous = read_summary(run_dir)
        recorder.resumed_from = [*previous.get("resumed-from", []), last_round]
        recorder.mark_running()
        return recorder

    def mark_running(self) -> None:
        """summary.json says the run is going on (and who runs it) until `finish` says how it ended."""
        write_json_atomic(self.run_dir / "summary.json", {
            "status": "running", "run-dir": str(self.run_dir), "pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.now().isoformat(timespec="seconds"),
            **({"resumed-from": self.resumed_from} if self.resumed_from else {})})

    def write_json(self, name: str, payload: Any) -> None:
        write_json_atomic(self.run_dir / name, payload)

    def round(self, server_round: int) -> dict[str, Any]:
        return self.rounds.setdefault(server_round, {"round": server_round})

    def add_comm(self, server_round: int, phase: str, sent_bytes: int = 0, received_bytes: int = 0) -> None:
        """Count array bytes of one phase (train or evaluate) of a round, in MiB as the seed counts them."""
        comm = self.round(server_round).setdefault("comm", {"sent-mib": 0.0, "received-mib": 0.0})
        phase_comm = comm.setdefault(phase, {"sent-mib": 0.0, "received-mib": 0.0})
        for bucket in (comm, phase_comm, self.comm_total):
            bucket["sent-mib"] += sent_bytes / MIB
            bucket["received-mib"] += received_bytes / MIB

    def end_round(self, server_round: int, **fields: Any) -> dict[str, Any]:
        """Append the round's record to metrics.jsonl (fsync'd), with the running totals of the run so far."""
        record = self.round(server_round)
        record.update(fields)
        for counter, total in self.totals.items():  # every line carries the counters, round 0's too
            self.totals[counter] = total + record.setdefault(counter, 0)
            record[f"total-{counter}"] = self.totals[counter]
        comm = record.setdefault("comm", {"sent-mib": 0.0, "received-mib": 0.0})
        comm["total-sent-mib"] = self.comm_total["sent-mib"]
        comm["total-received-mib"] = self.comm_total["received-mib"]
        record["elapsed-seconds"] = time.time() - self.started
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return record

    def finish(self, status: str, **fields: Any) -> Path:
        ended = [k for k, r in self.rounds.items() if "elapsed-seconds" in r]  # rounds with their metrics line
        trained = [r for k, r in self.rounds.items() if k > 0 and "replies" in r]
        summary = {
            "status": status,
            "rounds-completed": max((k for k in ended if k > 0), default=0),
            "rounds-aggregated": sum(bool(r.get("aggregated")) for r in trained),
            "replies": sum(r["replies"] for r in trained),
            "replies-excluded": sum(len(r.get("excluded", [])) for r in trained),
            "wall-seconds": time.time() - self.started,
            "comm-total-mib": self.comm_total["sent-mib"] + self.comm_total["received-mib"],
            "comm-sent-mib": self.comm_total["sent-mib"],
            "comm-received-mib": self.comm_total["received-mib"],
            **({"resumed-from": self.resumed_from} if self.resumed_from else {}),
            **self.summary_fields,
            **fields,
        }
        path = self.run_dir / "summary.json"
        write_json_atomic(path, summary)
        return path


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    with open(Path(run_dir) / "metrics.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_metrics_prefix(run_dir: str | Path, last_round: int) -> list[dict[str, Any]]:
    """The lines of rounds 0..last_round, in order, each once; an error naming the line if one is missing or out of
    order. A half-written last line (a run killed while writing) and lines of later rounds are left out."""
    path = Path(run_dir) / "metrics.jsonl"
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if len(records) > last_round:
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # written up to the kill
            if record.get("round") != len(records):
                raise ValueError(f"{path}, line {number}: round {record.get('round')!r}, expected {len(records)}")
            records.append(record)
    if len(records) <= last_round:
        raise ValueError(f"{path}: rounds 0..{len(records) - 1} recorded, round {last_round} missing")
    return records


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """summary.json, or {} if there is none (yet) or it cannot be read."""
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
