"""Each instruction the server sent, with what came back for it: a reply, an error reply, or nothing.

A reply is attributed to the node the instruction was sent to, found through the reply's `reply_to_message_id`,
never through its `src_node_id`: when a SuperNode is lost, Flower's SuperLink answers in its place with an error
reply whose `src_node_id` is the SuperLink's own (1), and a reply that never comes is visible only as an instruction
without one. Every instruction gets exactly one outcome, so a lost node is one failure, under its own id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import Message


@dataclass
class Outcome:
    """What became of one instruction: `reply` is None when nothing came back before the round closed."""

    node: int
    reply: Message | None


def match_replies(sent: Iterable[Message], replies: Iterable[Message]) -> tuple[list[Outcome], list[Message]]:
    """(one outcome per sent instruction, in the order replies arrived, then the unanswered; replies that answer no
    instruction of this phase or answer one twice).

    Grids that push messages give each one an id (Flower's, and the in-process grid); messages that never went
    through a grid (unit tests) have none, and their replies are matched by node instead.
    """
    sent = list(sent)
    by_id = {m.metadata.message_id: m for m in sent if m.metadata.message_id}
    by_node = {int(m.metadata.dst_node_id): m for m in sent if not m.metadata.message_id}
    answered: dict[int, Outcome] = {}  # keyed by id() of the instruction
    outcomes: list[Outcome] = []
    strays: list[Message] = []
    for reply in replies:
        key = reply.metadata.reply_to_message_id
        instruction = by_id.get(key) if key else by_node.get(int(reply.metadata.src_node_id))
        if instruction is None or id(instruction) in answered:
            strays.append(reply)
            continue
        outcome = Outcome(int(instruction.metadata.dst_node_id), reply)
        answered[id(instruction)] = outcome
        outcomes.append(outcome)
    outcomes.extend(Outcome(int(m.metadata.dst_node_id), None) for m in sent if id(m) not in answered)
    return outcomes, strays
