"""Configuration of the recommendation API: one frozen dataclass, checked when built.

Values come from arguments (``python -m serving.api``), else ``SHOPREC_*`` environment
variables (``Settings.from_env``), else the defaults below.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

from pipeline.contract import spec
from serving.api.limits import DEFAULT_RATE_LIMITS, Rate, parse_rate_limits
from trainer.features import MAX_HISTORY_LENGTH

ENV_PREFIX = "SHOPREC_"
MAX_HISTORY = MAX_HISTORY_LENGTH      # the pipeline's cap on history_length
DEFAULT_MAX_HISTORY = 50
RETRIEVAL_INDEXES = ("model", "auto", "scann", "brute_force")
SEARCH_FUSIONS = ("linear", "union")


class SettingsError(ValueError):
    """A setting has an unusable value; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Everything the API needs to start; see docs/api.md for the meaning of each field."""

    shop_dir: str
    tfserving_grpc: str = "localhost:8500"
    event_store: str = "sqlite:///var/shoprec/events.sqlite3"
    on_bad_rows: str = "quarantine"          # policy for the shop export at startup
    retrieval_model: str = "retrieval"
    ranking_model: str = "ranking"
    default_k: int = 10
    max_k: int = 50
    max_category_share: float = 0.5         # diversity: at most this share of k per top category
    transition_candidates: int = 50         # candidates the item-to-item sources add at most
    cooccurrence_candidates: int = 50       # (with evidence in the history); 0 = none
    text_candidates: int = 50               # text neighbours (retrieval with a text tower)
    # Retrieval's top K: "model" = the served model's top_k signature (exact, in TF
    # Serving); "auto" = an index in the API (serving/api/ann.py: ScaNN) once the catalog
    # has ann_min_items items, else the model's; "scann" / "brute_force" = that index always.
    retrieval_index: str = "auto"
    ann_min_items: int = 100_000
    ann_top_k: int = 100                    # K of the API's index (as the pipeline's top K)
    lexical_candidates: int = 100           # search: BM25 matches added to the dense ones
    # Search over the whole catalog: "linear" = z-scored BM25 (words: search_lexical_weight,
    # character n-grams: search_ngram_weight) and dense scores (the rest) mixed
    # (serving/api/search_fusion.py), the dense scores taken again with the query moved
    # towards the first search_feedback_items items (search_feedback_weight; 0 = off), the
    # best search_candidates ranked, the ranking model's order blended in with
    # search_ranker_weight; "union" = the dense top K plus lexical_candidates BM25
    # matches, in the ranking model's order.
    search_fusion: str = "linear"
    search_lexical_weight: float = 0.3
    search_ngram_weight: float = 0.15
    search_feedback_items: int = 5
    search_feedback_weight: float = 0.0
    search_candidates: int = 200
    search_ranker_weight: float = 0.5
    typo_tolerance: bool = True             # search: unknown words read as the nearest ones
    autocomplete_min_users: int = 5         # a past query is suggested once this many users
                                            # searched it (k-anonymity of the search log)
    filter_purchased: bool = True
    filter_out_of_stock: bool = True
    # Distinct recently engaged items read per user and sent to the models, most recent
    # first; each model keeps the most recent as many as it was trained with
    # (PipelineConfig.history_length), so this only needs to be at least that.
    max_history: int = DEFAULT_MAX_HISTORY
    reason_min_similarity: float = 0.3      # cosine needed to say "similar to <history item>"
    tfserving_deadline_s: float = 2.0
    tfserving_retries: int = 2
    embedding_batch_size: int = 64      # <= max_batch_size of serving/tfserving/batching.config
    model_poll_s: float = 10.0              # how often model versions are checked
    startup_wait_s: float = 60.0            # wait this long for TF Serving before serving
    readiness_deadline_s: float = 0.5       # /readyz: budget of the model server/store probes
    readiness_cache_s: float = 1.0          # /readyz: reuse a readiness report this long
    readiness_max_poll_intervals: float = 3.0   # /readyz: watcher stuck after this many polls
    max_concurrent_requests: int = 8        # requests computed at once; the rest queue
    max_queued_requests: int = 64           # requests waiting for a slot; beyond: 503 at once
    max_queue_wait_s: float = 5.0           # a request waits this long for a slot, then 503
    auth: str = "required"                  # required (API keys) | off (development, tests)
    api_keys_file: str = ""                 # NAME ROLES sha256:HEX lines; re-read on change
    rate_limits: str = DEFAULT_RATE_LIMITS  # role=RATE/BURST,...: token bucket per key
    cors_origins: str = ""                  # allowed browser origins, comma-separated
    access_log: bool = True                 # one line per request: method, route, status
    pseudonym_key_file: str = ""            # user ids -> keyed pseudonyms (the pipeline's key)
    retention_days: int = 0                 # events older than this are deleted; 0 = keep
    purge_interval_s: float = 3600.0        # how often expired events are purged
    erasure_key_file: str = ""              # key of the erasure list's hashes ("" = store's)
    event_store_synchronous: str = "NORMAL"     # SQLite durability: NORMAL | FULL
    experiments_file: str = ""              # JSON/TOML experiments (serving/api/experiments.py)
    log_impressions: bool = True            # store what answers showed (impressions)
    impression_retention_days: int = 90     # impressions and attributions older: deleted
    attribution_window_s: float = 86400.0   # an engagement credits an impression this recent
    # Redis store: how often a replica checks the shared counts (popularity), and rebuilds
    # the search suggestions from the store at most (serving/api/shared_counts.py)
    shared_counts_poll_s: float = 0.5
    shared_suggestions_refresh_s: float = 30.0
    max_events_per_request: int = 1000
    max_body_bytes: int = 1_000_000
    max_query_chars: int = spec.MAX_QUERY_CHARS   # the data contract's cap on event queries
    segments_dir: str = ""                  # <serving_dir>/segments of the pipeline ("" = none)
    search_terms_dir: str = ""              # <serving_dir>/search_terms of the pipeline: what
                                            # shoppers searched before choosing each item,
                                            # read by search's BM25 word index ("" = none)
    segment_max_history: int = 2            # users with at most this many engagements get
                                            # their segment's popular items before the shop's

    def __post_init__(self):
        def need(ok: bool, name: str, what: str):
            if not ok:
                raise SettingsError(f"setting {name}={getattr(self, name)!r}: {what}")

        need(bool(self.shop_dir), "shop_dir", "the shop folder is required (--shop)")
        for name in ("pseudonym_key_file", "erasure_key_file", "experiments_file"):
            need(not getattr(self, name) or os.path.isfile(getattr(self, name)), name,
                 "no such file")
        need(self.retention_days >= 0, "retention_days", "must be >= 0 (0 = keep forever)")
        need(self.purge_interval_s > 0, "purge_interval_s", "must be > 0")
        need(self.impression_retention_days >= 0, "impression_retention_days",
             "must be >= 0 (0 = as long as the events)")
        need(0 < self.attribution_window_s <= 30 * 86400, "attribution_window_s",
             "must be in (0, 30 days] seconds")
        for name in ("shared_counts_poll_s", "shared_suggestions_refresh_s"):
            need(getattr(self, name) > 0, name, "must be > 0")
        need(self.event_store_synchronous in ("NORMAL", "FULL"), "event_store_synchronous",
             "expected NORMAL or FULL")
        host, _, port = self.tfserving_grpc.rpartition(":")
        need(bool(host) and port.isdigit(), "tfserving_grpc", "expected HOST:PORT")
        need(self.on_bad_rows in ("fail", "quarantine"), "on_bad_rows",
             "expected fail or quarantine")
        need(1 <= self.max_k <= 100, "max_k", "must be between 1 and 100 (retrieval K)")
        need(1 <= self.default_k <= self.max_k, "default_k", "must be between 1 and max_k")
        need(0 < self.max_category_share <= 1, "max_category_share", "must be in (0, 1]")
        need(-1 <= self.reason_min_similarity <= 1, "reason_min_similarity",
             "must be a cosine in [-1, 1]")
        for name in ("tfserving_deadline_s", "model_poll_s"):
            need(getattr(self, name) > 0, name, "must be > 0")
        need(self.startup_wait_s >= 0, "startup_wait_s", "must be >= 0")
        need(0 < self.readiness_deadline_s <= 10, "readiness_deadline_s",
             "must be in (0, 10] seconds")
        need(self.readiness_cache_s >= 0, "readiness_cache_s", "must be >= 0")
        need(self.readiness_max_poll_intervals > 1, "readiness_max_poll_intervals",
             "must be > 1 (polls are model_poll_s apart plus the time each takes)")
        for name in ("transition_candidates", "cooccurrence_candidates", "text_candidates",
                     "lexical_candidates"):
            need(0 <= getattr(self, name) <= 500, name, "must be between 0 and 500")
        need(self.search_fusion in SEARCH_FUSIONS, "search_fusion",
             f"expected one of {', '.join(SEARCH_FUSIONS)}")
        for name in ("search_lexical_weight", "search_ngram_weight", "search_ranker_weight"):
            need(0 <= getattr(self, name) <= 1, name, "must be between 0 and 1")
        need(self.search_lexical_weight + self.search_ngram_weight <= 1, "search_ngram_weight",
             f"search_lexical_weight + search_ngram_weight must be at most 1 (the dense "
             f"score takes the rest), got {self.search_lexical_weight} + "
             f"{self.search_ngram_weight}")
        need(1 <= self.search_feedback_items <= 100, "search_feedback_items",
             "must be between 1 and 100")
        need(0 <= self.search_feedback_weight <= 10, "search_feedback_weight",
             "must be between 0 (off) and 10")
        need(1 <= self.search_candidates <= 1000, "search_candidates",
             "must be between 1 and 1000")
        need(self.tfserving_retries >= 0, "tfserving_retries", "must be >= 0")
        need(self.retrieval_index in RETRIEVAL_INDEXES, "retrieval_index",
             f"expected one of {', '.join(RETRIEVAL_INDEXES)}")
        need(self.ann_min_items >= 1, "ann_min_items", "must be >= 1")
        need(1 <= self.ann_top_k <= 1000, "ann_top_k", "must be between 1 and 1000")
        need(self.autocomplete_min_users >= 2, "autocomplete_min_users",
             "must be >= 2 (1 would show one shopper's searches to others)")
        need(not isinstance(self.max_history, bool) and isinstance(self.max_history, int)
             and 1 <= self.max_history <= MAX_HISTORY, "max_history",
             f"must be a whole number of items between 1 and {MAX_HISTORY} (at least the "
             "models' history_length, or their histories are cut short)")
        need(self.segment_max_history >= 0, "segment_max_history", "must be >= 0")
        need(self.auth in ("required", "off"), "auth", "expected required or off")
        try:
            parse_rate_limits(self.rate_limits)
        except ValueError as e:
            need(False, "rate_limits", str(e))
        need(self.max_queued_requests >= 0, "max_queued_requests", "must be >= 0")
        need(self.max_queue_wait_s > 0, "max_queue_wait_s", "must be > 0")
        bad = [o for o in self.cors_allowed_origins
               if o != "*" and not re.fullmatch(r"https?://[^/\s]+", o)]
        need(not bad, "cors_origins", f"{bad[:1]}: expected comma-separated origins like "
             "https://shop.example.com (scheme and host, no path), or *")
        for name in ("embedding_batch_size", "max_concurrent_requests",
                     "max_events_per_request", "max_body_bytes", "max_query_chars"):
            need(getattr(self, name) >= 1, name, "must be >= 1")

    @property
    def role_rate_limits(self) -> dict[str, Rate | None]:
        """``rate_limits`` parsed: role -> Rate (None = unlimited)."""
        return parse_rate_limits(self.rate_limits)

    @property
    def cors_allowed_origins(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Defaults < ``SHOPREC_<FIELD>`` environment variables < ``overrides``."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "shop_dir" not in values:
            raise SettingsError("setting shop_dir: the shop folder is required "
                                "(--shop or SHOPREC_SHOP_DIR)")
        return cls(**values)


def _parse(name: str, raw: str, kind) -> object:
    """Environment text -> the field's type."""
    kind = kind if isinstance(kind, str) else kind.__name__
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError("expected true/false")
            return lowered in ("1", "true", "yes")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as e:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {e}") from None
    return raw
