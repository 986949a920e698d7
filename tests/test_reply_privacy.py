"""Only what must leave a site leaves it: every byte a ClientApp sends in a round, what the server keeps of a reply
that carries more (dropped and counted, never stored), and error replies that say what failed but not what it said.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

from fedmedlora.client_errors import error_reason
from fedmedlora.data.files import DataFormatError
from fedmedlora.launch.grid import InProcessGrid, NodeIdsGrid, set_task_identity
from fedmedlora.recorder import RunRecorder, read_metrics
from fedmedlora.reply_contract import EVALUATE_METRICS, TRAIN_METRICS, kept_error_reason
from fedmedlora.run_config import load_settings
from fedmedlora.strategies import build_strategy
from fedmedlora.wire import to_array_record

from helpers import TINY_NER

# A line of a clinical data file, as a reader's error would quote it.
CANARY = "Mrs Jane Roe, MRN 0042, metastatic carcinoma"
DATA_ERROR = f"/hospital/data/notes.tsv:17: expected 'token<TAB>tag', got {CANARY!r}"


# --- what the server keeps of a reply that carries more -------------------------------------------------------------

def leaky_reply(out: Message) -> Message:
    set_task_identity(1, out.metadata.dst_node_id)
    name_as_numbers = [float(ord(c)) for c in "Jane Roe"]
    return Message(RecordDict({
        "arrays": to_array_record({"w": np.array([1.0], np.float32)}, "float16"),
        "metrics": MetricRecord({"num-examples": 10, "site": out.metadata.dst_node_id - 1, "train-loss": 0.5,
                                 "patient-0042": 1.0, "train-steps": name_as_numbers}),
        "notes": ConfigRecord({"free-text": CANARY}),
        "more-metrics": MetricRecord({"num-examples": 10}),
    }), reply_to=out)


def test_unknown_metrics_and_extra_records_are_dropped_and_counted_not_stored(tmp_path: Path) -> None:
    settings = load_settings({"data.num-sites": 2, "strategy.weight-cap": False})
    recorder = RunRecorder(tmp_path)
    strategy = build_strategy(settings, recorder, {"w": np.zeros(1, np.float32)})
    set_task_identity(1, 0)
    out = sorted(strategy.configure_train(1, to_array_record({"w": np.zeros(1, np.float32)}, "float32"),
                                          ConfigRecord(), NodeIdsGrid(2)), key=lambda m: m.metadata.dst_node_id)
    set_task_identity(1, 0)
    arrays, _ = strategy.aggregate_train(1, [leaky_reply(m) for m in out])
    assert arrays is not None  # still aggregated: the agreed part of each reply is usable
    recorder.end_round(1)
    record = read_metrics(tmp_path)[0]
    # per reply: 2 unknown metric entries (an unknown name, a list of numbers) and 2 extra records
    assert record["dropped"] == 8 and record["total-dropped"] == 8 and record["exclusions"] == 0
    assert record["clients"][0] == {"node": 1, "num-examples": 10, "site": 0, "train-loss": 0.5, "update-norm": 1.0}
    text = (tmp_path / "metrics.jsonl").read_text()
    for leaked in ("patient-0042", "Jane", "free-text", "notes", "more-metrics", str(float(ord("J")))):
        assert leaked not in text


class RepliesGrid:
    """A grid whose sites answer every evaluation message with `content(node)`."""

    def __init__(self, content: Any):
        self.content = content

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        replies = []
        for msg in messages:
            set_task_identity(1, msg.metadata.dst_node_id)
            replies.append(Message(self.content(msg.metadata.dst_node_id), reply_to=msg))
        set_task_identity(1, 0)
        return replies


def test_evaluation_replies_keep_only_agreed_counts_and_metrics(tmp_path: Path) -> None:
    from fedmedlora.federation.evaluation import FederatedEvaluation
    from fedmedlora.federation.roster import Roster, SiteEntry
    from fedmedlora.tasks.registry import build_task

    settings = load_settings({**TINY_NER, "data.num-sites": 2})
    roster = Roster([SiteEntry(node, i, f"site{i}", "pool", i, ["Disease"], {}) for i, node in enumerate((11, 12))],
                    ["Disease"])
    counts = {"documents": 4, "strict-tp": 3, "strict-fp": 1, "strict-fn": 2, "lenient-tp": 4, "lenient-fp": 0,
              "lenient-fn": 1, "loss-sum": 2.0, "loss-count": 4}
    per_type = {f"{t}/{k}": v for t in ("Disease", "rare-disease-x") for k, v in counts.items() if "-t" in k
                or "-f" in k}

    def reply(node: int) -> RecordDict:
        return RecordDict({"counts": MetricRecord({**counts, **per_type}),
                           "metrics": MetricRecord({"num-examples": 4, "site": 0, "strict-f1": 0.5,
                                                    "Disease/strict-f1": 0.25, "patient-age": 61.0}),
                           "extra": ConfigRecord({"note": "free text"})})

    set_task_identity(1, 0)
    task = build_task(settings, "encoder", vocabulary=["Disease"])
    adapter = {"w": np.zeros(1, np.float32)}
    result = FederatedEvaluation(settings, roster, task, RepliesGrid(reply), RunRecorder(tmp_path), adapter)(
        1, to_array_record(adapter, "float32"))
    # per site: 6 per-type counts of the unagreed type, 2 metrics, 1 record
    assert result["dropped"] == 2 * (6 + 2 + 1)
    assert all(set(c) == {"node", "num-examples", "site", "strict-f1"} for c in result["clients"])
    text = json.dumps(result)
    assert "rare-disease-x" not in text and "patient-age" not in text and "free text" not in text
    # the pooled score is the two sites' counts added: tp 6, fp 2, fn 4
    assert "Disease/strict-f1" in result["pooled"] and result["pooled"]["strict-f1"] == pytest.approx(12 / 18)


def test_the_server_keeps_one_short_line_of_an_error_unless_details_are_allowed() -> None:
    traceback = "RuntimeError: boom\nTraceback (most recent call last):\n  File ...\n" + "x" * 3000
    assert kept_error_reason(traceback, details=False) == "RuntimeError: boom"
    assert len(kept_error_reason("E: " + "y" * 500, details=False)) == 200 + len(" [...]")
    assert kept_error_reason(traceback, details=True).startswith(traceback[:2000])


# --- error replies leave the site without their text -------------------------------------------------------------

@pytest.mark.parametrize("err, details, expected", [
    (DataFormatError(DATA_ERROR), False,
     "DataFormatError: a data file could not be read at this site; the site's log has the details"),
    (DataFormatError(DATA_ERROR), True,
     "DataFormatError: notes.tsv:17: a data file could not be read; the site's log has the details"),
    (ValueError(f"cannot tokenize {CANARY!r}"), False,
     "ValueError: the ClientApp failed at this site; the site's log has the details"),
    (ValueError("lr must be > 0"), True, "ValueError: lr must be > 0"),
])
def test_error_reasons(err: Exception, details: bool, expected: str) -> None:
    assert error_reason(err, details) == expected


# --- every byte a ClientApp sends in a round ---------------------------------------------------------------------

class CapturingGrid(InProcessGrid):
    """The in-process grid, keeping each reply exactly as a SuperNode pushes it: every nested object, deflated."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, dict[str, bytes]]] = []  # (message object id, {object id: bytes})
        self.adapter_keys: list[str] = []  # the keys of the global adapter the server sent for training

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for msg in messages:
            if msg.metadata.message_type == "train":
                self.adapter_keys = list(msg.content["arrays"])
        replies = super().send_and_receive(messages, timeout=timeout)
        for reply in replies:
            self.sent.append((reply.object_id, {oid: obj.deflate()
                                                for oid, obj in get_all_nested_objects(reply).items()}))
        return replies


@pytest.mark.slow
def test_every_byte_a_client_sends_in_a_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedmedlora.client_app as client_app
    from fedmedlora.job import get_job
    from fedmedlora.server_app import run_server
    from flwr.app import Context

    config = {**TINY_NER, "num-server-rounds": 1, "run.results-dir": str(tmp_path),
              "run.name": "captured"}
    real_train = client_app.train_locally

    def site_two_cannot_read_its_data(settings, task, resident, dataset, *, seed, **kwargs):
        if seed == client_app.round_seed(settings, 1, 2):
            raise DataFormatError(DATA_ERROR)
        return real_train(settings, task, resident, dataset, seed=seed, **kwargs)

    monkeypatch.setattr(client_app, "train_locally", site_two_cannot_read_its_data)
    settings = load_settings(config)
    grid = CapturingGrid(client_app.app, config, settings.data.num_sites)
    set_task_identity(grid.run_id, grid.SERVER_NODE_ID)
    run_server(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config))

    rows = [row for site in get_job(settings).sites for row in site.split("train")]
    sentences = [" ".join(row["tokens"]).encode() for row in rows]
    rare_words = {t.encode() for row in rows for t in row["tokens"] if len(t) >= 12 and t.isalpha()}
    assert len(rare_words) > 20
    # 3 site descriptions, 3 training replies, 3 evaluation replies after round 0 and 3 after round 1
    assert len(grid.sent) == 12
    errors = 0
    for object_id, objects in grid.sent:
        wire = b"".join(objects.values())
        assert CANARY.encode() not in wire and b"notes.tsv" not in wire and b"hospital" not in wire
        assert not [t for t in sentences if t in wire] and not [w for w in rare_words if w in wire]
        received = inflate_object_from_contents(object_id, dict(objects))  # what the server reconstructs
        if received.has_error():
            errors += 1
            assert received.error.reason == ("DataFormatError: a data file could not be read at this site; the "
                                             "site's log has the details")
            continue
        content = received.content
        kind = received.metadata.message_type
        assert set(content) == {"train": {"arrays", "metrics"}, "evaluate": {"counts", "metrics"},
                                "query": {"site", "counts", "metrics"}}[kind]
        if kind == "query":  # a name, kind, partition, label names, and integer counts (federation/site_report.py)
            assert set(content["site"]) == {"name", "kind", "partition-id", "vocabulary"}
            assert all(type(v) is int for v in content["counts"].values())
            continue
        metrics = content["metrics"]
        assert set(metrics) <= (TRAIN_METRICS if kind == "train" else EVALUATE_METRICS)
        if kind == "evaluate":  # per-type keys name agreed labels only
            assert {k.rsplit("/", 1)[0] for k in content["counts"] if "/" in k} <= {"Chemical", "Disease"}
        assert all(type(v) in (int, float) for v in metrics.values())
        if kind == "train":
            arrays = content["arrays"]
            assert isinstance(arrays, ArrayRecord) and list(arrays) == grid.adapter_keys and len(arrays) == 26
            assert all(".lora_A." in k or ".lora_B." in k or k.startswith("base_model.model.classifier.")
                       for k in arrays)
            assert {a.dtype for a in arrays.values()} == {"float16"}
            tensor_bytes = sum(len(a.data) for a in arrays.values())
            # the rest is headers: keys, dtypes, shapes, object ids, one .npy header per tensor (~7% for 26 small
            # tensors; the share shrinks as tensors grow)
            assert len(wire) < tensor_bytes * 1.10
    assert errors == 1
    records = read_metrics(tmp_path / "captured")
    assert records[1]["failures"] == 1 and "DataFormatError" in records[1]["excluded"][0]["reason"]
    run_files = "".join(p.read_text() for p in (tmp_path / "captured").glob("*.json*"))
    assert CANARY not in run_files and "notes.tsv" not in run_files
    assert not re.search(r"Traceback", run_files)
    assert json.loads((tmp_path / "captured" / "summary.json").read_text())["status"] == "completed"
