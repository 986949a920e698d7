"""A job: everything both apps derive from the settings, built once per process.

Settings -> model family -> sites (rows) -> task -> resident model -> tokenized splits. The ServerApp and every
ClientApp build the same job from the same run config, so they agree on sites, labels and adapter keys.
"""

from __future__ import annotations

from typing import Any

from .corpora import entity_types
from .models import load_config, model_family
from .relations_data import relation_labels
from .resident import Resident, cached_tokenized, resident_model
from .settings import Settings
from .sites import SITE_KEYS, Site, load_sites
from .tasks import build_task


def resolve_family(settings: Settings) -> str:
    if settings.model.family != "auto":
        return settings.model.family
    return model_family(load_config(settings.model.name))


class Job:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.family = resolve_family(settings)
        self.sites: list[Site] = load_sites(settings)
        rows = [r for site in self.sites for split in ("train", "val", "test") for r in site.split(split)]
        types = entity_types(rows) if settings.data.task == "ner" else None
        labels = relation_labels(rows) if settings.data.task == "re" else None
        self.task = build_task(settings, self.family, types, relation_labels=labels)

    @property
    def labels(self) -> list[str]:
        return list(self.task.labels)

    def resident(self) -> Resident:
        return resident_model(self.settings, self.family, self.labels)

    def tokenized(self, site_id: int, split: str) -> Any:
        resident = self.resident()
        # every data setting that changes a site's rows (caps, fractions, task...), not only the dataset names
        key = (resident.key, self.settings["data.max-length"], site_id, split,
               tuple(self.settings[k] for k in SITE_KEYS))
        rows = self.sites[site_id].split(split)
        return cached_tokenized(key, lambda: self.task.tokenize(rows, resident.tokenizer))

    def evaluate(self, split: str, site_ids: list[int] | None = None) -> dict[str, Any]:
        """Score the resident model (with whatever adapter it holds) per site and pooled."""
        resident = self.resident()
        site_ids = list(range(len(self.sites))) if site_ids is None else site_ids
        outcomes = {}
        for site_id in site_ids:
            rows = self.sites[site_id].split(split)
            outcomes[site_id] = self.task.predict(resident, rows, self.tokenized(site_id, split),
                                                  self.settings.evaluate.batch_size)
        per_site = {str(s): self.task.score(o) for s, o in outcomes.items()}
        pooled = self.task.score(self.task.merge(list(outcomes.values())))
        return {"pooled": pooled, "sites": per_site}


_JOBS: dict[tuple, Job] = {}


def get_job(settings: Settings) -> Job:
    key = tuple(sorted(settings.as_dict().items()))
    if key not in _JOBS:
        _JOBS.clear()
        _JOBS[key] = Job(settings)
    return _JOBS[key]
