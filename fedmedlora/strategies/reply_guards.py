"""The guards a reply passes besides its format (base.py screens that): only agreed content is kept, a claimed
weight is capped at what the site reported, an update's norm is bounded, and under privacy a reply must say what it
spent. Each clip or exclusion is recorded with its reason (docs/privacy.md).

`ReplyGuards` is part of `LoraStrategyMixin` (base.py); it reads the mixin's settings, recorder, site counts and
what each node was sent.
"""

from __future__ import annotations

import copy

from flwr.app import ArrayRecord, Message, MetricRecord

from ..aggregation.influence import (bound_norms, capped_weight, clip_to_bound, rounding_slack, scale_update,
                                     update_norm)
from ..reply_contract import METRICS, allowed_metrics
from ..wire import from_array_record
from .replies import Reply, State, announce
from .site_counts import UnknownCounts


class ReplyGuards:
    def keep_agreed_content(self, server_round: int, msg: Message, allowed: frozenset[str],
                            array_key: str | None = None) -> None:
        """Strip a reply to what a site may send (reply_contract.py): its ArrayRecord under `array_key` (train
        replies) and the allowed, numeric metrics. Anything else is dropped and counted in the round's `dropped`,
        never stored."""
        if not msg.has_content():
            return
        content = msg.content
        dropped = 0
        for name in list(content):
            record = content[name]
            if name == array_key and isinstance(record, ArrayRecord):
                continue
            if name == METRICS and isinstance(record, MetricRecord):
                kept, extra = allowed_metrics(dict(record), allowed)
                if extra:
                    content[METRICS] = MetricRecord(kept)
                dropped += extra
                continue
            del content[name]
            dropped += 1
        if dropped:
            log = self.recorder.round(server_round)
            log["dropped"] = log.get("dropped", 0) + dropped

    def privacy_problem(self, reply: Reply) -> str | None:
        """Under privacy.dp = "example" a reply must say what its site spent: one without it was not trained with
        DP-SGD and is left out."""
        spent = reply.metrics.get("dp-epsilon")
        if self.settings.privacy.dp == "example" and not (isinstance(spent, (int, float)) and spent >= 0):
            return "privacy.dp = 'example', but the reply reports no 'dp-epsilon': not trained with DP-SGD"
        return None

    def record_example_privacy(self, server_round: int, replies: list[Reply]) -> None:
        """privacy.dp = "example": each site's epsilon so far; an example's guarantee is its site's (sites hold
        disjoint data), the federation's the largest."""
        if self.settings.privacy.dp != "example" or not replies:
            return
        p = self.settings.privacy
        sites = self.recorder.summary_fields.setdefault("privacy", {"unit": "example", "delta": p.delta,
                                                                    "clipping-norm": p.clipping_norm, "sites": {}})
        for reply in replies:
            sites["sites"][reply.label] = {"epsilon": float(reply.metrics["dp-epsilon"]),
                                           "noise-multiplier": float(reply.metrics.get("dp-noise-multiplier", 0.0))}
        sites["epsilon"] = max(s["epsilon"] for s in sites["sites"].values())
        self.recorder.round(server_round)["privacy"] = copy.deepcopy(sites)
        announce(f"round {server_round}: privacy spent (DP-SGD, per example) epsilon = {sites['epsilon']:.4f} at "
                 f"delta = {p.delta:g}, the largest of "
                 + ", ".join(f"{label} {s['epsilon']:.4f}" for label, s in sites["sites"].items()))

    def cap_weight(self, server_round: int, reply: Reply) -> str | None:
        """`strategy.weight-cap`: cap the claimed weight at the site's known count; a reason if none is known."""
        if not self.settings.strategy.weight_cap or self.counts is None:
            return None
        key = self.weighted_by_key  # type: ignore[attr-defined]
        site = reply.metrics.get("site")
        try:
            claimed_site = int(site) if isinstance(site, (int, float)) and float(site).is_integer() else None
            known = float(self.counts.counts_for(reply.node, claimed_site)[key])
        except UnknownCounts as err:
            return f"weight cap: the server holds no '{key}' count for this node ({err})"
        except KeyError:
            return f"weight cap: this node reported no '{key}' count before round 1"
        claimed = float(reply.metrics[key])
        weight = capped_weight(claimed, known)
        if weight < claimed:
            reply.metrics[key] = weight
            self.clip(server_round, reply.node, f"claimed {key} {claimed:g} is more than the {known:g} known for "
                                                f"site {claimed_site}: capped (strategy.weight-cap)")
        return None

    def update_reference(self, reply: Reply) -> State:
        """What a reply's update is measured from, on its own keys: under site-level DP the wire copy the site
        clipped against; otherwise the float32 master copy of what the node was sent (at its rank, for FlexLoRA)."""
        sent = (from_array_record(self._sent_arrays) if self.settings.privacy.dp == "site"
                else self.reply_base(reply.metrics))
        return {k: sent[k] for k in reply.state}

    def bound_updates(self, server_round: int, replies: list[Reply]) -> list[Reply]:
        """Record each update's norm ||w_client - w_sent||; clip or leave out updates above the bound.

        The bound is privacy.clipping-norm under site-level DP (every site clipped already; the server enforces it,
        so one site that did not clip cannot break the guarantee), else strategy.norm-bound x the round's median.
        """
        if not replies or self._sent_arrays is None:
            return replies
        references = [self.update_reference(r) for r in replies]
        norms = [update_norm(r.state, ref) for r, ref in zip(replies, references)]
        entries = {e["node"]: e for e in self.recorder.round(server_round).get("clients", [])}
        for reply, norm in zip(replies, norms):
            entries.get(reply.node, {})["update-norm"] = norm
        privacy, strategy = self.settings.privacy, self.settings.strategy
        if privacy.dp == "site":
            decisions, action = clip_to_bound(norms, privacy.clipping_norm), "clip"
            rule = "privacy.clipping-norm: the site did not clip"
        elif strategy.norm_bound > 0:
            decisions, action = bound_norms(norms, strategy.norm_bound), strategy.norm_action
            rule = f"strategy.norm-bound = {strategy.norm_bound:g} x the round's median"
        else:
            return replies
        kept = []
        for reply, reference, decision in zip(replies, references, decisions):
            if decision.factor < 1.0:
                what = f"update norm {decision.norm:.4g} > bound {decision.bound:.4g} ({rule})"
                if action == "reject":
                    self.exclude(server_round, reply.node, what)
                    continue
                # float16 rounding of an honestly clipped update can land just past the bound: clip it silently
                if decision.norm > decision.bound + rounding_slack(reply.state, decision.bound,
                                                                   self.settings.strategy.wire_dtype):
                    self.clip(server_round, reply.node, what + ": clipped")
                reply.state = scale_update(reply.state, reference, decision.factor)
            kept.append(reply)
        return kept
