"""Shared test fixtures: small settings and real Flower messages built outside the Flower runtime."""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

# The embedded default, shrunk to seconds: same model, task, data and code paths.
TINY_NER = {
    "num-server-rounds": 2,
    "data.max-train-examples": 48,
    "data.max-eval-examples": 24,
    "train.local-steps": 3,
    "train.batch-size": 8,
}

TINY_INSTRUCT = {
    "num-server-rounds": 2,
    "data.task": "instruct",
    "data.datasets": "medquad",
    "data.num-sites": 2,
    "data.max-length": 96,
    "data.max-train-examples": 32,
    "data.max-eval-examples": 8,
    "model.name": "builtin:tiny-llama-micro",
    "lora.target-modules": "q_proj,v_proj",
    "train.local-steps": 3,
    "train.batch-size": 4,
    "train.learning-rate-max": 3e-3,
    "train.learning-rate-min": 3e-3,
    "evaluate.batch-size": 8,
}


def set_identity(node_id: int = 0) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = 1
    TaskIdentity.node_id = node_id
    TaskIdentity.task_id = 1


def node_context(run_config: dict[str, Any], site: int, num_sites: int) -> Context:
    return Context(run_id=1, node_id=site + 1, node_config={"partition-id": site, "num-partitions": num_sites},
                   state=RecordDict(), run_config=dict(run_config))


def train_message(arrays: ArrayRecord, node_id: int, server_round: int = 1, learning_rate: float = 1e-3,
                  **config: Any) -> Message:
    set_identity(0)
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(
        {"server-round": server_round, "learning-rate": learning_rate, **config})})
    return Message(content, dst_node_id=node_id, message_type=MessageType.TRAIN)


class FakeGrid:
    """What Flower's sampling asks of a Grid: the connected node ids (one SuperNode per site)."""

    def __init__(self, count: int):
        self.nodes = list(range(1, count + 1))

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


def llama3_8b_config() -> Any:
    """Llama-3-8B's shape (the seeds' base models), from its published config: nothing to download."""
    import transformers

    return transformers.LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8)
