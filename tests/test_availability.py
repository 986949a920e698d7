"""Rounds go on with the nodes that are there: sampling among the connected, waiting with a deadline, and each
instruction's outcome counted once for the node it was sent to (Flower's strategies with real `Message`s, no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict

from fedmedlora.launch.grid import NodeIdsGrid, set_task_identity
from fedmedlora.recorder import RunRecorder
from fedmedlora.server_app import wait_for_nodes
from fedmedlora.settings import parse_run_config
from fedmedlora.strategies import build_strategy
from fedmedlora.strategies.availability import connected_nodes
from fedmedlora.strategies.outcomes import match_replies
from fedmedlora.wire import to_array_record

SUPERLINK = 1  # the node id Flower's SuperLink signs its own error replies with
STATE = {"w": np.array([0.0], np.float32)}


class Grid(NodeIdsGrid):
    """Connected nodes that can change between calls; pushing gives each message an id, as Flower's grid does."""

    def __init__(self, nodes: list[int]):
        self.nodes = list(nodes)

    def push(self, messages: list[Message]) -> list[Message]:
        for i, msg in enumerate(messages):
            msg.metadata.__dict__["_message_id"] = f"msg-{msg.metadata.dst_node_id}-{i}"
        return messages


def make(tmp_path: Path, sites: int = 3, **overrides: Any) -> tuple[Any, RunRecorder]:
    settings = parse_run_config({"data.num-sites": sites, **{k.replace("__", ".").replace("_", "-"): v
                                                            for k, v in overrides.items()}})
    recorder = RunRecorder(tmp_path)
    return build_strategy(settings, recorder, STATE), recorder


def configure(strategy: Any, grid: Grid, server_round: int = 1) -> list[Message]:
    set_task_identity(1, 0)
    return grid.push(list(strategy.configure_train(server_round, to_array_record(STATE, "float32"), ConfigRecord(),
                                                   grid)))


def ok(out: Message, value: float = 1.0) -> Message:
    set_task_identity(1, out.metadata.dst_node_id)
    return Message(RecordDict({"arrays": to_array_record({"w": np.array([value], np.float32)}, "float16"),
                               "metrics": MetricRecord({"num-examples": 1, "num-tokens": 1, "train-loss": 1.0})}),
                   reply_to=out)


def lost(out: Message) -> Message:
    """What the SuperLink sends for an instruction whose node stopped its heartbeat: signed by the SuperLink."""
    set_task_identity(1, SUPERLINK)
    return Message(Error(code=5, reason="Error: Node Unavailable"), reply_to=out)


def test_a_lost_node_is_one_failure_under_its_own_id(tmp_path: Path) -> None:
    strategy, recorder = make(tmp_path)
    out = sorted(configure(strategy, Grid([11, 22, 33])), key=lambda m: m.metadata.dst_node_id)
    # node 22 lost mid-round: the SuperLink answers for it with its own id (1); node 33 never answers at all
    set_task_identity(1, 0)
    arrays, _ = strategy.aggregate_train(1, [ok(out[0], 3.0), lost(out[1])])
    record = recorder.round(1)
    assert (record["replies"], record["usable"], record["failures"], record["aggregated"]) == (2, 1, 2, True)
    assert [(e["node"], e["reason"].split(":")[0]) for e in record["excluded"]] == [
        (22, "client error"), (33, "no reply within strategy.round-timeout = 3600 s")]
    assert SUPERLINK not in {c["node"] for c in record["clients"]}
    assert sorted(c["node"] for c in record["clients"]) == [11, 22, 33]
    assert arrays["w"].numpy()[0] == pytest.approx(3.0)


def test_a_reply_counts_once_and_strays_are_ignored(tmp_path: Path) -> None:
    strategy, recorder = make(tmp_path, sites=2)
    out = configure(strategy, Grid([1, 2]))
    earlier = Grid([9]).push([Message(RecordDict(), dst_node_id=9, message_type=MessageType.TRAIN)])[0]
    set_task_identity(1, 9)
    stray = Message(Error(code=0, reason="late"), reply_to=earlier)  # answers an instruction of another round
    outcomes, strays = match_replies(out, [ok(out[0]), ok(out[0]), ok(out[1]), stray])
    assert [o.node for o in outcomes] == [out[0].metadata.dst_node_id, out[1].metadata.dst_node_id]
    assert len(strays) == 2
    set_task_identity(1, 0)
    strategy.aggregate_train(1, [ok(out[0]), ok(out[0]), ok(out[1])])
    record = recorder.round(1)
    assert (record["replies"], record["usable"], record["failures"], record["train-stray-replies"]) == (2, 2, 0, 1)


def test_rounds_sample_among_the_connected_and_never_wait_for_the_lost(tmp_path: Path) -> None:
    strategy, recorder = make(tmp_path, sites=3, strategy__node_wait=0.0)
    assert len(configure(strategy, Grid([1, 2, 3]), 1)) == 3
    assert sorted(m.metadata.dst_node_id for m in configure(strategy, Grid([1, 3]), 2)) == [1, 3]
    assert recorder.round(2)["train-connected"] == 2
    # two of three sites a round: still two while two are connected, one when one is (min-replies = 1)
    strategy, recorder = make(tmp_path, sites=3, strategy__clients_per_round=2, strategy__node_wait=0.0)
    assert len(configure(strategy, Grid([1, 2, 3]), 1)) == 2
    assert len(configure(strategy, Grid([1, 2]), 2)) == 2
    assert len(configure(strategy, Grid([2]), 3)) == 1


def test_a_round_without_enough_nodes_is_skipped_not_hung(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    strategy, recorder = make(tmp_path, sites=3, strategy__min_replies=2, strategy__node_wait=0.2)
    assert configure(strategy, Grid([5]), 1) == []
    set_task_identity(1, 0)
    assert strategy.aggregate_train(1, []) == (None, None)
    record = recorder.round(1)
    assert record["train-connected"] == 1 and record["aggregated"] is False and record["failures"] == 0
    assert "1 SuperNodes connected after waiting strategy.node-wait = 0.2 s, 2 needed" in capsys.readouterr().out


def test_waiting_for_nodes_has_a_deadline() -> None:
    now = [0.0]
    grid = Grid([1])

    def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 3:
            grid.nodes = [1, 2, 3]  # the last sites connect after 3 s

    assert connected_nodes(grid, 3, wait=10, clock=lambda: now[0], sleep=sleep) == [1, 2, 3]
    assert now[0] == pytest.approx(3.0)
    now[0], grid.nodes = 0.0, [1]
    assert connected_nodes(grid, 3, wait=2.5, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
                           ) == [1]
    assert now[0] == pytest.approx(2.5)


def test_the_server_starts_with_enough_sites_and_names_the_key_otherwise(capsys: pytest.CaptureFixture) -> None:
    settings = parse_run_config({"data.num-sites": 3, "strategy.min-replies": 2, "strategy.node-wait": 0.0})
    assert wait_for_nodes(Grid([1, 2]), settings) == [1, 2]
    assert "2 of 3 sites connected within strategy.node-wait = 0 s" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match=r"1 SuperNodes connected within strategy.node-wait = 0 s "
                                           r"\(strategy.min-replies = 2 needed to start\)"):
        wait_for_nodes(Grid([1]), settings)


def test_only_the_sites_of_the_roster_are_sampled(tmp_path: Path) -> None:
    # node 3 connected after the sites described themselves: it holds no place in the run and is never asked to train
    settings = parse_run_config({"data.num-sites": 3, "strategy.node-wait": 0.0})
    strategy = build_strategy(settings, RunRecorder(tmp_path), {"w": np.zeros(2, np.float32)})
    strategy.limit_to_nodes([1, 2])
    set_task_identity(1, 0)
    messages = strategy.configure_train(1, to_array_record({"w": np.zeros(2, np.float32)}, "float32"), ConfigRecord(),
                                        NodeIdsGrid(3))
    assert sorted(m.metadata.dst_node_id for m in messages) == [1, 2]
