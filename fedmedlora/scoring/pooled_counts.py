"""Micro F1 pooled from per-site counts: the sites report true/false positives and false negatives, not rows.

A site that evaluates on its own data (Flower's evaluate phase) sends its counts (`strict-tp`, `strict-fp`,
`strict-fn`, ...); summing them over sites and computing F1 once gives the same number as scoring the pooled
predictions, which a server without the sites' data cannot do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def pooled_f1(site_metrics: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """`<prefix>-f1` (and the summed counts) for every prefix whose -tp, -fp and -fn every site reports."""
    if not site_metrics:
        return {}
    prefixes = sorted({k[:-3] for k in site_metrics[0] if k.endswith("-tp")})
    out: dict[str, float] = {}
    for prefix in prefixes:
        names = [f"{prefix}-tp", f"{prefix}-fp", f"{prefix}-fn"]
        if not all(n in m for m in site_metrics for n in names):
            continue
        tp, fp, fn = (sum(float(m[n]) for m in site_metrics) for n in names)
        out[f"{prefix}-f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0
        out.update({names[0]: tp, names[1]: fp, names[2]: fn})
    return out
