"""What a process derives from the settings and the data it may hold: model family, task with the agreed label set,
resident model, tokenized splits, and scores.

Who holds which sites differs by process, the rest does not:
- a ClientApp holds its own site only (federation/node_site.py builds that job from the node config and the label
  set the server sends);
- the ServerApp holds no site at all: its job has the label set the sites reported (federation/roster.py) and, when
  `data.server-datasets` is set, rows the server itself holds;
- tools (the experiment's baselines, benchmarks, tests) hold the whole bundled pool: `Job(settings)` / `get_job`.

Evaluation goes through count records (tasks/base.py): a site's outcome becomes counts, per-site and pooled metrics
come from counts, so the server merging counts the sites send gets the numbers a pooled evaluation would give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .data.site_cache import SiteCache, tokenizer_digest
from .data.sites import Site, load_sites
from .local_cache import digest
from .model.adapter import checkpoint_info, initial_adapter_state
from .model.loading import load_config, model_family
from .model.resident import Resident, resident_model
from .qa.suite import QASuite
from .settings import Settings
from .tasks import build_task


def resolve_family(settings: Settings) -> str:
    if settings.model.family != "auto":
        return settings.model.family
    return model_family(load_config(settings.model.name))


def scores_of(task: Any, records: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    """Per-site and pooled metrics from the sites' count records (merged in site order)."""
    ordered = [records[s] for s in sorted(records)]
    return {"pooled": task.score_counts(task.merge_counts(ordered)),
            "sites": {str(s): task.score_counts(records[s]) for s in sorted(records)}}


class Job:
    def __init__(self, settings: Settings, sites: Sequence[Site] | None = None,
                 vocabulary: Sequence[str] | None = None, cache: SiteCache | None = None):
        """`sites`: the sites this process holds (default: every site of the bundled pool); `vocabulary`: the agreed
        label set (default: read from those sites' rows); `cache`: where tokenized splits are kept on disk."""
        self.settings = settings
        self.family = resolve_family(settings)
        # given sites are kept as they are (preflight formed them; nothing is read again)
        self.sites: list[Site] = load_sites(settings) if sites is None else (
            sites if isinstance(sites, list) else list(sites))
        if vocabulary is None:
            rows = [r for site in self.sites for split in ("train", "val", "test") for r in site.split(split)]
            self.task = build_task(settings, self.family, rows=rows)
        else:
            self.task = build_task(settings, self.family, vocabulary=list(vocabulary))
        self.cache = cache
        self._tokenized: dict[tuple, Any] = {}
        self._tokenizer_digests: dict[tuple, str] = {}
        self.tokenized_origin = ""
        self._initial: dict[str, Any] | None = None
        self._qa_suite: QASuite | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.task.labels)

    @property
    def vocabulary(self) -> list[str]:
        return list(self.task.vocabulary_items)

    def initial_adapter(self) -> dict[str, Any]:
        """The round-0 adapter, drawn from run.seed: the server's start, and what server and sites both know without
        sending it (frozen keys stay at it; int8/int4 downlinks are relative to it)."""
        if self._initial is None:
            self._initial = initial_adapter_state(self.settings, self.task.head, len(self.labels) or None,
                                                  self.settings.run.seed)
        return self._initial

    def resident(self) -> Resident:
        return resident_model(self.settings, self.task.head, self.labels,
                              cache_dir=self.cache.root if self.cache is not None else None)

    def site(self, site_id: int) -> Site:
        for site in self.sites:
            if site.site_id == site_id:
                return site
        raise KeyError(f"this process holds no site {site_id} (it holds {[s.site_id for s in self.sites]})")

    def tokenized(self, site_id: int, split: str) -> Any:
        """A site's split tokenized by the resident model's tokenizer: once per job, and once per site's disk when
        the job has a cache and the site knows what it was made from."""
        resident = self.resident()
        key = (resident.key, site_id, split)
        self.tokenized_origin = "memory"  # where the last call found it: memory, disk cache, or tokenized now
        if key not in self._tokenized:
            site = self.site(site_id)
            build = lambda: self.task.tokenize(site.split(split), resident.tokenizer)  # noqa: E731
            hit = False
            if self.cache is not None and site.content_key:
                self._tokenized[key], hit = self.cache.tokenized(self.tokenized_key(site, split, resident), build)
            else:
                self._tokenized[key] = build()
            self.tokenized_origin = "disk cache" if hit else "tokenized"
        return self._tokenized[key]

    def tokenized_key(self, site: Site, split: str, resident: Resident) -> str:
        """Everything a tokenized split depends on: the site's rows, the tokenizer's content, the task and its
        label set, and the settings tokenization reads."""
        if resident.key not in self._tokenizer_digests:
            self._tokenizer_digests[resident.key] = tokenizer_digest(resident.tokenizer)
        return digest("tokenized", site.content_key, split, self._tokenizer_digests[resident.key],
                      type(self.task).__name__, self.vocabulary, self.settings.data.max_length,
                      self.settings.train.completion_only_loss)

    def checkpoint_info(self, server_round: int, **extra: Any) -> dict[str, Any]:
        """What `fedmedlora.json` beside a `peft_<round>/` records, so eval.py can score the checkpoint alone."""
        return checkpoint_info(self.settings, self.family, self.labels, server_round, **extra)

    def site_counts(self, site_id: int, split: str) -> dict[str, float]:
        """The count record of the resident model (with whatever adapter it holds) on one site's split."""
        rows = self.site(site_id).split(split)
        outcome = self.task.predict(self.resident(), rows, self.tokenized(site_id, split),
                                    self.settings.evaluate.batch_size)
        return self.task.counts(outcome)

    def evaluate(self, split: str, site_ids: list[int] | None = None) -> dict[str, Any]:
        """Score the resident model (with whatever adapter it holds) per site and pooled."""
        site_ids = [s.site_id for s in self.sites] if site_ids is None else site_ids
        return scores_of(self.task, {site_id: self.site_counts(site_id, split) for site_id in site_ids})

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
    """This process's pooled job for `settings` (tools and tests; one at a time: a new run config replaces it)."""
    if settings not in _JOB:
        _JOB.clear()
        _JOB[settings] = Job(settings)
    return _JOB[settings]
