"""A ClientApp mod: under `privacy.dp = "site"` each site clips its own update before it leaves the site.

Flower's `fixedclipping_mod` does the clipping: it computes the update (the adapter the ClientApp returns minus the
global adapter it received, both as they travel, in the wire dtype) and scales it to the clipping norm the server
put in the training config. This mod adds what a site needs before trusting that number: it applies only to
training messages of a run with site-level DP, and it refuses (an error reply, nothing trained) a clipping norm other
than the run config's `privacy.clipping-norm`, so a server cannot loosen the bound the sites agreed to.
"""

from __future__ import annotations

import math

from flwr.app import Context, Message, MessageType
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from .settings import parse_run_config


class ClippingNormMismatch(ValueError):
    """The server asked for a clipping norm other than the run config's."""


def site_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    privacy = parse_run_config(context.run_config).privacy
    if privacy.dp != "site":
        return call_next(msg, context)
    sent = msg.content["config"].get(KEY_CLIPPING_NORM)
    if not isinstance(sent, (int, float)) or not math.isclose(float(sent), privacy.clipping_norm, rel_tol=1e-9):
        raise ClippingNormMismatch(f"the server asked for clipping norm {sent!r}; key 'privacy.clipping-norm' = "
                                   f"{privacy.clipping_norm}")
    return fixedclipping_mod(msg, context, call_next)
