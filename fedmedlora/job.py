"""What both apps derive from the settings, built once per process: model family, sites, task, resident model and
tokenized splits.

The ServerApp and every ClientApp build the same job from the same run config, so they agree on sites, labels and
adapter keys. The job owns its sites and its tokenized splits; the model itself lives in the process's one model
slot (model/resident.py), which the job asks for.
"""

from __future__ import annotations

from typing import Any

from .data.sites import Site, load_sites
from .model.adapter import checkpoint_info
from .model.loading import load_config, model_family
from .model.resident import Resident, resident_model
from .qa.suite import QASuite
from .settings import Settings
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
        self.task = build_task(settings, self.family, rows=rows)
        self._tokenized: dict[tuple, Any] = {}
        self._qa_suite: QASuite | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.task.labels)

    def resident(self) -> Resident:
        return resident_model(self.settings, self.task.head, self.labels)

    def tokenized(self, site_id: int, split: str) -> Any:
        """A site's split tokenized by the resident model's tokenizer, once per job."""
        resident = self.resident()
        key = (resident.key, site_id, split)
        if key not in self._tokenized:
            self._tokenized[key] = self.task.tokenize(self.sites[site_id].split(split), resident.tokenizer)
        return self._tokenized[key]

    def checkpoint_info(self, server_round: int, **extra: Any) -> dict[str, Any]:
        """What `fedmedlora.json` beside a `peft_<round>/` records, so eval.py can score the checkpoint alone."""
        return checkpoint_info(self.settings, self.family, self.labels, server_round, **extra)

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

    def benchmark_scores(self) -> dict[str, dict[str, float]]:
        """QA accuracy of the resident model (whatever adapter it holds) on `evaluate.qa-benchmarks`; {} if none."""
        if not self.settings.qa_benchmarks:
            return {}
        if self._qa_suite is None:
            self._qa_suite = QASuite.from_settings(self.settings)
        resident = self.resident()
        return self._qa_suite.score(resident.model, resident.tokenizer)


_JOB: dict[Settings, Job] = {}


def get_job(settings: Settings) -> Job:
    """This process's job for `settings` (one at a time: a new run config replaces the old job)."""
    if settings not in _JOB:
        _JOB.clear()
        _JOB[settings] = Job(settings)
    return _JOB[settings]
