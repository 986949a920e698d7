"""Run the ServerApp and the ClientApp in this process, without a SuperLink or Ray.

`InProcessGrid` is a Flower `Grid` that delivers each message to the real `ClientApp` object (decorated functions,
mods and all) with a per-node `Context`, and turns a ClientApp exception into an error reply as Flower does. The
ServerApp code (`run_server`: validation, strategy, per-round recording) runs unchanged on top of it. Tests use it
to run whole federations in seconds, benchmarks use it to time the training core, and machines that cannot carry Ray
use it to run the same client and server code paths. `fedmedlora run` (a real Flower simulation) is the way to run
experiments. Also here: the few pieces a benchmark or test needs to drive the apps without a server loop (a node's
`Context`, a training `Message`, a grid that only lists node ids).
"""

from __future__ import annotations

import itertools
import logging
import traceback
from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, RecordDict
from flwr.serverapp import Grid

LOG = logging.getLogger(__name__)
_TASK_IDS = itertools.count(1)
_MESSAGE_IDS = itertools.count(1)


def set_task_identity(run_id: int, node_id: int) -> None:
    """Who Flower thinks is running: messages built outside its runtime need it (run, node, a fresh task id)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = node_id
    TaskIdentity.task_id = next(_TASK_IDS)


def node_context(run_config: dict[str, Any], site: int, num_sites: int, run_id: int = 1) -> Context:
    """The Context of the node that plays `site` (node id site + 1), as a simulation's SuperNode has it."""
    return Context(run_id=run_id, node_id=site + 1, node_config={"partition-id": site, "num-partitions": num_sites},
                   state=RecordDict(), run_config=dict(run_config))


def train_message(arrays: ArrayRecord, node_id: int, server_round: int = 1, learning_rate: float = 1e-3,
                  **config: Any) -> Message:
    """A TRAIN message as the server sends it: the global adapter and the round's config."""
    set_task_identity(1, 0)
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(
        {"server-round": server_round, "learning-rate": learning_rate, **config})})
    return Message(content, dst_node_id=node_id, message_type=MessageType.TRAIN)


class NodeIdsGrid:
    """What Flower's sampling asks of a Grid, and nothing more: the connected node ids (one SuperNode per site)."""

    def __init__(self, count: int):
        self.nodes = list(range(1, count + 1))

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


class InProcessGrid(Grid):
    """Nodes 1..n play sites 0..n-1 (node_config partition-id / num-partitions, as in a simulation, unless
    `node_configs` gives each node its own, e.g. a `data-path`)."""

    SERVER_NODE_ID = 0

    def __init__(self, client_app: Any, run_config: dict[str, Any], num_nodes: int, run_id: int = 1,
                 node_configs: list[dict[str, Any]] | None = None):
        self.client_app = client_app
        self.run_id = run_id
        self.contexts = {site + 1: node_context(run_config, site, num_nodes, run_id) for site in range(num_nodes)}
        for node, config in enumerate(node_configs or [], start=1):
            self.contexts[node].node_config.clear()
            self.contexts[node].node_config.update(config)
        self.calls: list[tuple[int, str]] = []  # (node, message type): what the server asked of whom

    # --- the parts of Grid the strategies use ----------------------------------------------------------------------
    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for msg in messages:
            # an id, as Flower's grid gives each message it pushes: replies name it in `reply_to_message_id`
            msg.metadata.__dict__["_message_id"] = f"in-process-{next(_MESSAGE_IDS)}"
            node = msg.metadata.dst_node_id
            self.calls.append((node, msg.metadata.message_type))
            set_task_identity(self.run_id, node)
            try:
                reply = self.client_app(msg, self.contexts[node])
            except Exception as err:  # Flower turns a ClientApp exception into an error reply too
                LOG.warning("node %d raised %s", node, err)
                reply = Message(Error(code=0, reason=f"{type(err).__name__}: {err}\n{traceback.format_exc()}"),
                                reply_to=msg)
            finally:
                set_task_identity(self.run_id, self.SERVER_NODE_ID)
            replies.append(reply)
        return replies

    # --- the rest of the interface, unused by strategies ----------------------------------------------------------
    def set_run(self, run: Any) -> None:  # pragma: no cover - not used in process
        raise NotImplementedError

    @property
    def run(self) -> Any:  # pragma: no cover
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # pragma: no cover
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # pragma: no cover
        raise NotImplementedError


def run_in_process(run_config: dict[str, Any], num_sites: int | None = None,
                   node_configs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One whole federated run in this process; returns what `run_server` returns (run dir, per-round records)."""
    from ..client_app import app as client_app
    from ..run_config import load_settings
    from ..server_app import run_server

    settings = load_settings(run_config)
    grid = InProcessGrid(client_app, run_config, num_sites or len(node_configs or []) or settings.data.num_sites,
                         node_configs=node_configs)
    set_task_identity(grid.run_id, InProcessGrid.SERVER_NODE_ID)
    context = Context(run_id=grid.run_id, node_id=InProcessGrid.SERVER_NODE_ID, node_config={},
                      state=RecordDict(), run_config=dict(run_config))
    result = run_server(grid, context)
    result["grid-calls"] = grid.calls
    return result
