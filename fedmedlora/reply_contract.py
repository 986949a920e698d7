"""What a ClientApp reply may carry to the server: its records and the names of its metrics, defined once.

Privacy is the product: nothing but adapter tensors and agreed numbers leaves a site. The ClientApp builds its
replies from these names only, and the server keeps exactly these and drops (and counts, never stores) anything
else a reply carries: an extra record, an unknown metric name, a list where a number belongs. A metric name is a
fixed string of this module, never derived from site data (per-entity-type scores such as `Disease/strict-f1` name
the site's label types and stay at the site).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ARRAYS = "arrays"  # the adapter tensors (Flower's default ArrayRecord key)
METRICS = "metrics"  # the numbers below
COUNTS_RECORD = "counts"  # an evaluation reply's count record: tp/fp/fn per agreed label name, loss sums (tasks/)

# Counts both replies carry: the aggregation weights and which partition the node plays.
COUNTS = frozenset({"num-examples", "num-tokens", "site"})

# What a message cost the site's process (federation/process_stats.py): timings, cache hits, a process id.
PROCESS_METRICS = frozenset({"pid", "process-messages", "startup-seconds", "model-loaded", "model-load-seconds",
                             "model-from-cache", "data-seconds", "data-from-cache", "handler-seconds"})

# A training reply: counts, and what model/training.train_locally reports (proximal-* only under FedProx; dp-* under
# privacy.dp = "example": the site's epsilon so far and its noise multiplier, both functions of public numbers).
TRAIN_METRICS = COUNTS | PROCESS_METRICS | frozenset({
    "train-loss", "train-steps", "train-examples-seen", "train-tokens-seen", "train-seconds", "learning-rate",
    "model-loads", "proximal-mu", "proximal-distance", "dp-epsilon", "dp-noise-multiplier",
    "lora-rank", "site-rounds-kept",  # FlexLoRA: the rank the site trained at; how many rounds its state has seen
})


def _score_names() -> frozenset[str]:
    """The pooled scores a task reports (tasks/*.py `score`), per-type scores excluded."""
    fields = ("precision", "recall", "f1", "tp", "fp", "fn")
    names = {"documents", "examples", "loss", "perplexity", "tokens", "unparseable", "dropped-lines"}
    for mode in ("strict", "lenient"):
        names |= {f"{mode}-{f}" for f in fields}
        names |= {f"typed-{mode}-micro-{f}" for f in fields}
        names |= {f"typed-{mode}-macro-{f}" for f in ("precision", "recall", "f1")}
    return frozenset(names)


# An evaluation reply: counts and the pooled scores of the site's held-out split.
EVALUATE_METRICS = COUNTS | PROCESS_METRICS | _score_names()


def is_number(value: Any) -> bool:
    """A plain int or float (a bool or a list of numbers could carry anything, e.g. text encoded as numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def allowed_metrics(metrics: Mapping[str, Any], allowed: frozenset[str]) -> tuple[dict[str, Any], int]:
    """(the metrics with an allowed name and a number as value, how many entries were dropped)."""
    kept = {k: v for k, v in metrics.items() if k in allowed and is_number(v)}
    return kept, len(metrics) - len(kept)


def agreed_counts(record: Mapping[str, Any], vocabulary: list[str]) -> tuple[dict[str, Any], int]:
    """(an evaluation count record kept to numbers whose per-type keys name an agreed label, how many entries were
    dropped). A generative model can predict a type nobody agreed to, and its name is model output from site text:
    per-type counts of such a type stay at the site (the collapsed counts still include them)."""
    agreed = set(vocabulary)
    kept = {k: v for k, v in record.items()
            if is_number(v) and ("/" not in k or k.rsplit("/", 1)[0] in agreed)}
    return kept, len(record) - len(kept)


# What the server keeps of an error reply. A fedmedlora ClientApp sends its exception's type and a fixed sentence
# (client_errors.py); other senders (Flower's runtime, an older client) may send a traceback: only its first line
# is kept, cut short, unless the run config allows details.
ERROR_REASON_CHARS = 200
ERROR_DETAIL_CHARS = 2000


def kept_error_reason(reason: str, details: bool) -> str:
    if details:
        return reason if len(reason) <= ERROR_DETAIL_CHARS else reason[:ERROR_DETAIL_CHARS] + " [...]"
    first = reason.strip().splitlines()[0] if reason.strip() else ""
    return first if len(first) <= ERROR_REASON_CHARS else first[:ERROR_REASON_CHARS] + " [...]"
