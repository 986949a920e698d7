"""The data the server itself holds: `data.server-datasets`, public data named in the run config, never a site's.

Fed-MedLoRA+ scores client adapters on a validation set the server holds, and server-side evaluation of the global
adapter needs data the server may read. Both use this "server site": every row of the named datasets (read with the
task's reader, so any bundled name or file path data.datasets takes) as its validation and test split, capped by
`data.max-eval-examples` with a sample drawn from the run seed. It trains nothing.
"""

from __future__ import annotations

import random
from collections import Counter

from ..settings import Settings
from .files import DataFormatError
from .rows import load_rows
from .sites import Site

SERVER_SITE = -2  # its site_id: never a federation index


def server_site(settings: Settings) -> Site | None:
    """The server's own data, or None when data.server-datasets is empty."""
    if not settings.server_datasets:
        return None
    rows = load_rows(settings.data.task, settings.server_datasets)
    if not rows:
        raise DataFormatError(f"key 'data.server-datasets' = {settings.data.server_datasets!r}: no rows")
    if (cap := settings.data.max_eval_examples) and cap < len(rows):
        keep = sorted(random.Random(settings.run.seed).sample(range(len(rows)), cap))
        rows = [rows[i] for i in keep]
    return Site(SERVER_SITE, "server", [], rows, rows, dict(Counter(r["source"] for r in rows)))
