"""int8 / int4 on the server side: the downlink is the global's difference from the initial adapter (nothing but
headers in round 1), replies are updates added to the float32 master, and a reply in another format is refused.
Values are integers and int4 blocks of absmax 7, so every level is exact and the numbers are worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flwr.app import Message, MetricRecord, RecordDict

from fedmedlora.launch.grid import set_task_identity
from fedmedlora.wire import from_array_record, record_nbytes, to_array_record

from test_strategies import A, B, aggregate, make, send

INITIAL = {A: np.array([[1.0, 2.0]], np.float32), B: np.zeros((2, 1), np.float32)}
INT4 = {"strategy.name": "fedavg", "strategy.wire-dtype": "int4", "strategy.wire-block-size": 2}


def reply(out: Message, state: dict[str, np.ndarray], dtype: str, block: int = 2) -> Message:
    set_task_identity(1, out.metadata.dst_node_id)
    return Message(RecordDict({"arrays": to_array_record(state, dtype, block),
                               "metrics": MetricRecord({"num-examples": 1, "train-loss": 1.0})}), reply_to=out)


def test_round_one_sends_no_values_and_the_reference_fingerprint(tmp_path: Path) -> None:
    strategy, recorder = make(INT4, INITIAL, tmp_path)
    out = send(strategy, INITIAL, 2)
    arrays = out[0].content["arrays"]
    assert {a.stype for a in arrays.values()} == {"fedmedlora/absmax-int4-b2"}
    assert record_nbytes(arrays) == 0  # the global is the initial adapter, which sites draw themselves
    assert len(out[0].content["config"]["adapter-reference"]) == 16
    assert recorder.round(1)["comm"]["train"]["sent-mib"] == 0.0


def test_updates_are_added_to_the_master_copy(tmp_path: Path) -> None:
    strategy, recorder = make(INT4, INITIAL, tmp_path)
    out = send(strategy, INITIAL, 2)
    # client 1: A moves by [7, -7], B by [7, 0]; client 2 does not move. Equal weights: half of client 1's update.
    up1 = {A: np.array([[7.0, -7.0]], np.float32), B: np.array([[7.0], [0.0]], np.float32)}
    up2 = {A: np.zeros((1, 2), np.float32), B: np.zeros((2, 1), np.float32)}
    result = aggregate(strategy, [reply(out[0], up1, dtype="int4"), reply(out[1], up2, dtype="int4")])
    np.testing.assert_array_equal(result[A], [[4.5, -1.5]])
    np.testing.assert_array_equal(result[B], [[3.5], [0.0]])
    # what round 2 sends: the difference from the initial adapter, [3.5, -3.5] and [3.5, 0]: exact at int4
    wire = from_array_record(strategy.wire_record(strategy._wire[0]))
    np.testing.assert_array_equal(wire[A], [[3.5, -3.5]])
    np.testing.assert_array_equal(wire[B], [[3.5], [0.0]])
    received = recorder.round(1)["comm"]["train"]["received-mib"] * 2 ** 20
    assert received == 2 * 2 + 2 * 1 + 0  # client 1: one float16 scale and one packed byte per tensor; client 2: zero


def test_a_reply_in_another_format_is_refused(tmp_path: Path) -> None:
    strategy, recorder = make(INT4, INITIAL, tmp_path, sites=3)
    out = send(strategy, INITIAL, 3)
    good = {A: np.zeros((1, 2), np.float32), B: np.zeros((2, 1), np.float32)}
    aggregate(strategy, [reply(out[0], good, dtype="int4"), reply(out[1], good, dtype="float16"),
                         reply(out[2], good, dtype="int8", block=128)])
    reasons = [e["reason"] for e in recorder.round(1)["excluded"]]
    assert "serialization 'numpy.ndarray', expected 'fedmedlora/absmax-int4-b2'" in reasons[0]
    assert "serialization 'fedmedlora/absmax-int8-b128', expected 'fedmedlora/absmax-int4-b2'" in reasons[1]
    assert recorder.round(1)["usable"] == 1


def test_float_formats_are_unchanged(tmp_path: Path) -> None:
    strategy, _ = make({"strategy.name": "fedavg"}, INITIAL, tmp_path)
    out = send(strategy, INITIAL, 2)
    assert "adapter-reference" not in out[0].content["config"]  # the default sends what it always sent
    assert {a.dtype for a in out[0].content["arrays"].values()} == {"float16"}
    assert to_array_record(INITIAL, "float16")[A].data == out[0].content["arrays"][A].data
