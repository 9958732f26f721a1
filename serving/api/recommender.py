"""Multi-stage recommendation, search and similar items, free of HTTP.

recommend(user): context from the event store (history = distinct engaged items, most
recent first; purchases; the current session's search) -> candidates: retrieval ``top_k``
over the full catalog, then the item-to-item sources of the served retrieval version
(transitions, co-occurrences: trainer/candidates, the code the benchmarks measure) add their
best items with evidence in the history, all under the filter (purchased, out of stock) ->
ranking ``rank_candidates`` with the session's search query and the candidate stage's
features -> diversify (at most ``max_category_share`` of k per top category) -> a reason per
item naming its source. Users without engagements get the search-driven list when they
searched in their current session, else the most popular items. Short lists are filled
with popular items. search(query): BM25 and retrieval scores of every in-stock item fused
(serving/api/search_fusion.py) -> the best as the pool -> ranking with the query, blended
with the fused score. When a model call fails the answer degrades (retrieval -> popular or
a lexical match, ranking -> candidate order), says so and logs why.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from serving.api.catalog import Catalog
from serving.api.lexical import did_you_mean
from serving.api.model_backend import ModelBackend
from serving.api import search_fusion
from serving.api.search_options import SearchOptions
from serving.api.search_text import TextIndex, words
from serving.api.settings import Settings
from serving.client.clients import ServingError
from serving.events.store import EventStore, UserContext
from trainer import features as F
from trainer.candidates.pool import Pool, build_pool

log = logging.getLogger("serving.api.recommender")

ENGAGEMENT_VERBS = {"click": "clicked “{}”", "add_to_cart": "added “{}” to your cart",
                    "purchase": "bought “{}”", "rating": "rated “{}”"}


class UnknownItem(LookupError):
    """The item id is not in the catalog."""


class NotReady(RuntimeError):
    """Catalog embeddings are not loaded yet (model server not reached so far)."""


@dataclass(frozen=True)
class Reason:
    type: str   # similar_to_history, chosen_after, chosen_together, matches_search,
                # related_to_search, interest, for_you, popular, similar_item
    text: str
    item_id: str | None = None


@dataclass(frozen=True)
class Recommended:
    row: int
    score: float
    reason: Reason


@dataclass
class Recommendations:
    items: list[Recommended]
    strategy: str                 # personalized | search | popular | similar
    degraded: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    query: str = ""
    model_versions: dict = field(default_factory=dict)   # the versions the answer used
    # search answers: {misspelled word: catalog word} and the query so corrected (None when
    # nothing was); None for the other answers
    spelling: dict | None = None
    did_you_mean: str | None = None
    total: int | None = None      # search answers: the length of the whole result list


# Reason type of the item-to-item sources, by feature name.
SOURCE_REASONS = {F.TRANSITION_SCORE: "chosen_after", F.COOCCURRENCE_SCORE: "chosen_together",
                  F.TEXT_SCORE: "similar_to_history"}


class Recommender:
    """The API's logic over a catalog, an event store and the two models."""

    def __init__(self, catalog: Catalog, store: EventStore, models: ModelBackend,
                 settings: Settings, observe: Callable[[str, float], None] | None = None,
                 versions: Callable[[], dict] | None = None,
                 text_index: TextIndex | None = None,
                 segment_popular: Callable[[str, UserContext], list[str]] | None = None):
        """``versions``: model name -> the version a request pins (the watcher's published
        bundle, read once per request); None or a missing model: the served one.
        ``text_index``: the catalog's (default: built here, in the background)."""
        self.catalog, self.store, self.models, self.settings = catalog, store, models, settings
        self._versions = versions or dict
        self.text_index = text_index or TextIndex(catalog,
                                                  typo_tolerance=settings.typo_tolerance)
        self._observe = observe or (lambda stage, seconds: None)
        # user, context -> item ids filled in before global popularity (serving/api/segments.py)
        self._segment_popular = segment_popular or (lambda user_id, ctx: [])
        self._logged_failures: set[tuple[str, str]] = set()

    @contextmanager
    def _stage(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self._observe(name, time.perf_counter() - started)

    def _degrade(self, result: "Recommendations", stage: str, error: ServingError) -> None:
        """Record a failed model stage; log each distinct failure once (then at debug)."""
        result.degraded.append(stage)
        key = (stage, str(error))
        if key in self._logged_failures:
            log.debug("%s stage degraded: %s", stage, error)
            return
        if len(self._logged_failures) > 100:
            self._logged_failures.clear()
        self._logged_failures.add(key)
        hint = ""
        if stage == "ranking" and "rank_candidates" in error.message and (
                "not found" in error.message):
            hint = (" (the served ranking model lacks the rank_candidates signature: export "
                    "it with trainer/signatures.py export_ranking)")
        log.warning("%s stage degraded: %s%s; answering without it", stage, error, hint)

    def _allowed(self, purchased: set[str] | None = None,
                 in_stock_only: bool = True) -> np.ndarray:
        allowed = self.catalog.in_stock & self.catalog.active if (
            self.settings.filter_out_of_stock and in_stock_only) \
            else self.catalog.active.copy()
        if purchased and self.settings.filter_purchased:
            allowed[self.catalog.rows(purchased)] = False
        return allowed

    # ---- recommend ----
    def recommend(self, user_id: str, k: int) -> Recommendations:
        with self._stage("context"):
            ctx = self.store.user_context(user_id)
        allowed = self._allowed(ctx.purchased)
        result = Recommendations([], "popular", history=ctx.history, query=ctx.query,
                                 model_versions=dict(self._versions()))
        if ctx.known or ctx.query:
            rows, scores = self._retrieve(user_id, ctx.history, ctx.query, allowed, result)
            if len(rows):
                result.strategy = "personalized" if ctx.known else "search"
                with self._stage("candidates"):
                    pool = self._candidates(ctx.history, rows, scores, allowed)
                pool = self._rank(user_id, ctx.history, ctx.query, pool, result)
                if ctx.known:
                    with self._stage("diversify"):
                        pool = pool.take(diversify(self.catalog.top_categories[pool.rows], k,
                                                   self.settings.max_category_share))
                with self._stage("reasons"):
                    result.items = self._explain(pool.take(slice(0, k)), ctx, result.strategy)
        self._fill_popular(result, allowed, k, self._segment_popular(user_id, ctx))
        return result

    def stages(self, user_id: str) -> tuple[list[str], list[str]]:
        """What the first two stages of ``recommend`` hold for a known user, for measuring
        them (benchmarks/beauty_product.py): (retrieval's top K item ids as the model returned
        them, nothing filtered; the candidate pool's item ids, unranked). Empty when the user
        has no engagements or search, or retrieval fails."""
        ctx = self.store.user_context(user_id)
        if not (ctx.known or ctx.query):
            return [], []
        result = Recommendations([], "probe", model_versions=dict(self._versions()))
        try:
            ids, scores = self._top_k(user_id, ctx.history, ctx.query, result)
        except ServingError:
            return [], []
        allowed = self._allowed(ctx.purchased)
        rows, scores = self._allowed_rows(ids, scores, allowed)
        if not len(rows):
            return list(ids), []
        pool = self._candidates(ctx.history, rows, scores, allowed)
        return list(ids), [self.catalog.ids[r] for r in pool.rows]

    def _retrieve(self, user_id: str, history: list[str], query: str, allowed, result):
        """Retrieval top-K rows and scores, only allowed catalog items; empty (and the
        answer marked degraded) if the call fails."""
        try:
            with self._stage("retrieval"):
                ids, scores = self._top_k(user_id, history, query, result)
        except ServingError as e:
            self._degrade(result, "retrieval", e)
            return np.zeros(0, np.int64), np.zeros(0)
        return self._allowed_rows(ids, scores, allowed)

    def _top_k(self, user_id: str, history: list[str], query: str, result):
        """Retrieval's top K (item ids, scores), best first: the served model's ``top_k``, or
        the API's index (serving/api/ann.py, Settings.retrieval_index) searched with the
        model's query embedding; merged with the catalog's live items (added or re-texted
        since the model was trained) scored with the same query embedding (a live item's
        indexed score, if any, is replaced by its live one: it was of its old text); still
        the K best."""
        catalog = self.catalog
        index, live = catalog.ann, catalog.live_embeddings
        has_live = live is not None and len(live) and catalog.embeddings_version is not None
        query_vector = None
        if index is not None and catalog.ann_version == catalog.embeddings_version:
            with self._stage("index"):
                query_vector = self._query_vector(user_id, history, query, index.dim)
                rows, found = index.search(query_vector[None], self.settings.ann_top_k)
            ids, scores = list(catalog.ids[rows[0]]), np.asarray(found[0], np.float64)
        else:
            version = result.model_versions.get(self.models.retrieval_model)
            ids, scores = self.models.top_k(user_id, history, query, version=version)
        if not has_live:
            return ids, scores
        with self._stage("live_items"):
            if query_vector is None:
                query_vector = self._query_vector(user_id, history, query, live.shape[1])
            live_scores = live @ query_vector
            keep = [i for i, item in enumerate(ids) if item not in catalog.live_id_set]
            merged_ids = [ids[i] for i in keep] + catalog.live_ids
            merged = np.concatenate([np.asarray(scores, np.float64)[keep],
                                     live_scores.astype(np.float64)])
            order = np.argsort(-merged, kind="stable")[:max(len(ids), 1)]   # still K
        return [merged_ids[i] for i in order], merged[order]

    def _query_vector(self, user_id: str, history: list[str], query: str,
                      dim: int) -> np.ndarray:
        """The query embedding [dim] of the version the catalog's embeddings came from."""
        vector = self.models.query_embedding(user_id, history, query,
                                             version=self.catalog.embeddings_version)
        if vector.shape != (dim,):
            raise ServingError(f"query_embedding has shape {vector.shape}, the catalog's "
                               f"embeddings {dim} columns", code="FAILED_PRECONDITION")
        return vector.astype(np.float32)

    def _allowed_rows(self, ids, scores, allowed):
        """Catalog rows and scores of the retrieved ``ids`` that are ``allowed`` (order kept)."""
        with self._stage("filter"):
            found = [(r, s) for r, s in zip((self.catalog.row(i) for i in ids), scores)
                     if r is not None and allowed[r]]
        rows = np.array([r for r, _ in found], dtype=np.int64)
        return rows, np.array([s for _, s in found], dtype=np.float64)

    def _candidates(self, history: list[str], rows, scores, allowed, expand=True) -> Pool:
        """The candidate pool (trainer/candidates/pool.py, the code the pipeline's
        two-stage rows use) over the retrieved ``rows`` (allowed, best first) and the served
        item-to-item sources. It reads the history's most recent ``Catalog.history_length``
        items (the served models' width): the pipeline built the ranker's rows from
        histories of that length, so the pool and its features match them."""
        tables, s = self.catalog.item_to_item, self.settings
        history = history[:self.catalog.history_length]
        return build_pool(
            self.catalog.rows(history)[::-1], rows, scores, len(self.catalog),
            self.catalog.brand_codes, allowed,
            tables.sources if tables is not None else None,
            tables.counts(s.transition_candidates, s.cooccurrence_candidates,
                          s.text_candidates) if tables is not None else (),
            expand)

    def _rank(self, user_id: str, history: list[str], query: str, pool: Pool,
              result) -> Pool:
        """The pool sorted by the ranking model's ``rank_candidates`` for this user context,
        search query and the candidate features; unchanged if the call fails."""
        inputs = self.catalog.ranking_inputs(pool.rows)
        inputs[F.TITLE] = np.asarray(self.catalog.titles[pool.rows], dtype=object)
        try:
            with self._stage("ranking"):
                ranked = self.models.rank_candidates(
                    user_id, history, query, inputs, pool.features,
                    version=result.model_versions.get(self.models.ranking_model))
        except ServingError as e:
            self._degrade(result, "ranking", e)
            return pool
        pool.scores = np.asarray(ranked, np.float64)
        return pool.take(np.argsort(-pool.scores, kind="stable"))

    def _explain(self, pool: Pool, ctx: UserContext, strategy: str) -> list[Recommended]:
        reasons = [None] * len(pool)
        rows = pool.rows
        for i, (index, row) in enumerate(zip(pool.source, pool.because)):
            if index and row >= 0:
                source = pool.sources[index]
                item = self.catalog.ids[row]
                reasons[i] = Reason(SOURCE_REASONS.get(source.name, "for_you"),
                                    source.reason.format(item=f"“{self.catalog.titles[row]}”"),
                                    item)
        emb = self.catalog.embeddings
        history_rows = self.catalog.rows(ctx.history)
        if strategy == "personalized" and emb is not None and len(history_rows) and len(rows):
            sims = emb[rows] @ emb[history_rows].T
            # an item is not "similar to" itself: "Because you clicked X" on X says nothing
            sims[np.asarray(rows)[:, None] == history_rows[None, :]] = -np.inf
            best = sims.argmax(axis=1)
            for i, j in enumerate(best):
                if reasons[i] is None and sims[i, j] >= self.settings.reason_min_similarity:
                    item = self.catalog.ids[history_rows[j]]
                    verb = ENGAGEMENT_VERBS.get(ctx.last_engagement.get(item), "viewed “{}”")
                    title = self.catalog.titles[history_rows[j]]
                    reasons[i] = Reason("similar_to_history",
                                        "Because you " + verb.format(title), item)
        interests = set(self.catalog.top_categories[history_rows])
        query_words = set(words(ctx.query))
        out = []
        for i, (row, score) in enumerate(zip(rows, pool.scores)):
            reason = reasons[i]
            top = self.catalog.top_categories[row]
            if reason is None and query_words & self.text_index.words_of(row):
                reason = Reason("matches_search", f"Matches your search “{ctx.query}”")
            if reason is None and top in interests:
                reason = Reason("interest", f"Matches your interest in {top}")
            if reason is None and strategy == "search":
                reason = Reason("related_to_search", f"Related to your search “{ctx.query}”")
            if reason is None:
                reason = Reason("for_you", "Picked for you from your recent activity")
            out.append(Recommended(int(row), float(score), reason))
        return out

    def _fill_popular(self, result: Recommendations, allowed: np.ndarray, k: int,
                      segment_items: list[str] = ()) -> None:
        """Append popular allowed items (not already listed) until there are k: first
        ``segment_items`` (the user's segment's popular items), then the shop's."""
        missing = k - len(result.items)
        if missing <= 0:
            return
        allowed = allowed.copy()
        allowed[[r.row for r in result.items]] = False
        for row in self.catalog.rows(segment_items):
            if missing > 0 and allowed[row]:
                allowed[row], missing = False, missing - 1
                result.items.append(Recommended(int(row), float(self.catalog.popularity[row]),
                                                Reason("segment_popular",
                                                       "Popular with shoppers like you")))
        for row in self.catalog.popular(missing, allowed):
            top = self.catalog.top_categories[row] or "the shop"
            result.items.append(Recommended(int(row), float(self.catalog.popularity[row]),
                                            Reason("popular", f"Popular in {top}")))

    # ---- search ----
    def search(self, query: str, user_id: str | None, k: int,
               options: SearchOptions | None = None,
               versions: dict | None = None) -> Recommendations:
        """Items for a search text, personalised by the user's context when given. With
        ``search_fusion`` "linear" (``_search_fused``): BM25 and the retrieval model's
        scores (query text, history) of every allowed item are fused, the best form the
        pool, and the answer blends the fused score with the ranking model's; "union"
        (``_search_union``): retrieval's top K plus BM25's best matches in the ranking
        model's order. BM25 alone while the retrieval model cannot answer. ``options``:
        filters (only matching items are candidates), sort and the page's offset
        (serving/api/search_options.py); ``versions``: model versions to pin (a cursor's),
        else the published ones. The answer's ``total`` is the length of the whole list."""
        options = options or SearchOptions()
        with self._stage("context"):
            ctx = self.store.user_context(user_id) if user_id else UserContext([], {})
        allowed = self._allowed(in_stock_only=not options.include_out_of_stock)
        matching = options.matching(self.catalog)
        if matching is not None:
            allowed &= matching
        result = Recommendations([], "search", history=ctx.history, query=query,
                                 model_versions=dict(versions or self._versions()))
        query_words = set(words(query))
        found = None
        if self.settings.search_fusion == "linear":
            found = self._search_fused(query, user_id or "", ctx.history, allowed,
                                       options.offset + k, result)
        rows, scores, lexical_rows = found or self._search_union(
            query, user_id or "", ctx.history, allowed, options.offset + k, result)
        with self._stage("lexical"):
            result.spelling = self.text_index.spelling(query)
            result.did_you_mean = did_you_mean(query, result.spelling)
        if options.sort != "relevance" and len(lexical_rows):
            # A price sort lists what matched the query's words (BM25, typo tolerance
            # included), not every item retrieval found related: the cheapest related item
            # is rarely what a shopper sorting "lipstick" by price wants to see first.
            matched = np.isin(rows, lexical_rows)
            rows, scores = rows[matched], scores[matched]
        order = options.order(self.catalog, rows)
        result.total = len(rows)
        page = order[options.offset:options.offset + k]
        found = list(zip(rows[page].tolist(), scores[page].tolist()))
        for row, score in found:
            matched = sorted(query_words & self.text_index.words_of(row))
            if matched:
                reason = Reason("matches_search",
                                "Matches " + ", ".join(f"“{w}”" for w in matched))
            else:
                reason = Reason("related_to_search", f"Related to “{query}”")
            result.items.append(Recommended(int(row), float(score), reason))
        return result

    def _search_union(self, query: str, user_id: str, history: list[str], allowed,
                      wanted: int, result) -> tuple:
        """Search's ``union`` fusion: (rows, scores, BM25-matched rows): retrieval's top K
        and BM25's best ``lexical_candidates`` matches form the pool, in the ranking
        model's order; BM25's ``wanted`` best alone while retrieval cannot answer."""
        rows, scores = self._retrieve(user_id, history, query, allowed, result)
        with self._stage("lexical"):
            n = self.settings.lexical_candidates
            lexical = self.text_index.search(
                query, allowed, max(n, wanted) if "retrieval" in result.degraded else n)
        lexical_rows = np.array([row for row, _ in lexical], dtype=np.int64)
        if "retrieval" in result.degraded:
            return lexical_rows, np.array([sc for _, sc in lexical], np.float64), lexical_rows
        rows, scores = with_lexical(rows, scores, lexical_rows)
        if len(rows):
            with self._stage("candidates"):
                pool = self._candidates(history, rows, scores, allowed, expand=False)
            pool = self._rank(user_id, history, query, pool, result)
            rows, scores = pool.rows, pool.scores
        return rows, scores, lexical_rows

    def _dense_query(self, user_id: str, history: list[str], query: str, result,
                     emb: np.ndarray | None):
        """The served query embedding for the catalog's embeddings ``emb`` (its version's),
        or None when the catalog has no embeddings yet; [] (and the answer marked
        degraded) when the query embedding call fails."""
        if emb is None or self.catalog.embeddings_version is None:
            return None
        try:
            with self._stage("retrieval"):
                return self._query_vector(user_id, history, query, emb.shape[1])
        except ServingError as e:
            self._degrade(result, "retrieval", e)
            return np.zeros(0)

    def _dense_scores(self, query_vector: np.ndarray, emb: np.ndarray) -> np.ndarray:
        """float64 [N]: every catalog row's retrieval score for ``query_vector`` (cosine of
        the query and the candidate embeddings ``emb``; live items scored with their live
        embeddings)."""
        catalog = self.catalog
        live = catalog.live_embeddings
        query_vector = np.asarray(query_vector, np.float32)
        dense = emb @ query_vector
        if live is not None and len(live):
            dense[catalog.live_rows] = live @ query_vector
        return dense.astype(np.float64)

    def _search_fused(self, query: str, user_id: str, history: list[str], allowed,
                      wanted: int, result):
        """Search's ``linear`` fusion over the whole catalog (serving/api/search_fusion.py):
        (rows, scores, BM25-matched rows). Every allowed item's BM25 scores (words:
        ``search_lexical_weight``; character n-grams: ``search_ngram_weight``) and
        retrieval score (the rest), z-scored and mixed; with ``search_feedback_weight``
        the retrieval scores are taken again for the query moved towards the fused list's
        first ``search_feedback_items`` items and the signals mixed again. The best
        ``search_candidates`` form the pool (features as in the pipeline's rows,
        retrieval's own score included); the answer's order blends the fused score with
        the ranking model's (``search_ranker_weight``; the fused order alone when ranking
        fails). BM25 alone while retrieval cannot answer; None (the caller uses ``union``)
        while the catalog has no embeddings yet."""
        s, n = self.settings, len(self.catalog)
        emb = self.catalog.embeddings       # one snapshot: a new version may be installed
        query_vector = self._dense_query(user_id, history, query, result, emb)
        if query_vector is None:
            return None
        with self._stage("lexical"):
            lexical = self.text_index.scores(query, n)
            ngrams = None
            if s.search_ngram_weight:
                ngrams = self.text_index.scores(query, n, "ngrams")
                ngrams = np.zeros(n) if ngrams is None else ngrams
        lexical = np.zeros(n) if lexical is None else lexical
        matched = allowed & (lexical > 0)
        lexical_rows = np.flatnonzero(matched)
        if "retrieval" in result.degraded:
            rows = search_fusion.top_rows(lexical, matched, max(s.search_candidates, wanted))
            return rows, lexical[rows], lexical_rows
        with self._stage("fusion"):
            mixed = search_fusion.lexical_mix(lexical, s.search_lexical_weight, allowed,
                                              ngrams, s.search_ngram_weight)

            def fused_for(vector):
                dense = self._dense_scores(vector, emb)
                return dense, search_fusion.with_dense(mixed, dense, allowed)
            dense, fused = fused_for(query_vector)
            if s.search_feedback_weight:
                first = search_fusion.top_rows(fused, allowed, s.search_feedback_items)
                # the pool's retrieval feature stays the query's own cosine (as in the
                # pipeline's rows); only the order uses the moved query
                _, fused = fused_for(search_fusion.feedback_query(
                    query_vector, emb[first], s.search_feedback_weight))
            rows = search_fusion.top_rows(fused, allowed, max(s.search_candidates, wanted))
        if not len(rows):
            return rows, np.zeros(0), lexical_rows
        with self._stage("candidates"):
            pool = self._candidates(history, rows, dense[rows], allowed, expand=False)
        pool = self._rank(user_id, history, query, pool, result)
        final = fused[pool.rows] if "ranking" in result.degraded else search_fusion.blend(
            fused[pool.rows], pool.scores, s.search_ranker_weight)
        order = np.lexsort((pool.rows, -final))
        # the answer's score: the blend through a logistic, so it reads 0-1 like a
        # ranking model's score and keeps the order
        return pool.rows[order], 1.0 / (1.0 + np.exp(-final[order])), lexical_rows

    # ---- similar items ----
    def similar(self, item_id: str, k: int) -> Recommendations:
        """Nearest catalog neighbours of an item's candidate embedding (cosine)."""
        row = self.catalog.row(item_id)
        if row is None or not self.catalog.listed(row):
            raise UnknownItem(item_id)
        if self.catalog.embeddings is None:
            raise NotReady("catalog embeddings are not loaded yet: the model server has "
                           "not answered so far")
        with self._stage("neighbours"):
            found = self.catalog.neighbours(row, k, self._allowed())
        title = self.catalog.titles[row]
        items = [Recommended(r, s, Reason("similar_item", f"Similar to “{title}”", item_id))
                 for r, s in found]
        return Recommendations(items, "similar")


def with_lexical(rows: np.ndarray, scores: np.ndarray, lexical_rows) -> tuple:
    """Retrieval's rows and scores (best first) followed by the lexical rows it lacks, each
    scored just below retrieval's lowest: the pool's retrieval-score feature then says "not
    in retrieval's top K", as it does for the item-to-item sources' candidates."""
    known = set(np.asarray(rows).tolist())
    extra = np.asarray([r for r in lexical_rows if r not in known], np.int64)
    if not extra.size:
        return rows, scores
    floor = np.nextafter(scores.min(), -np.inf) if len(scores) else 0.0
    return (np.concatenate([rows, extra]),
            np.concatenate([scores, np.full(extra.size, floor, np.float64)]))


def diversify(categories: np.ndarray, k: int, max_share: float) -> np.ndarray:
    """Positions to keep, in order: greedy in the given (score) order, at most
    ceil(max_share * k) per category among the first k; the others follow, in order."""
    cap = max(1, math.ceil(max_share * k))
    counts: dict[str, int] = {}
    first, rest = [], []
    for i, category in enumerate(categories):
        if len(first) < k and counts.get(category, 0) < cap:
            counts[category] = counts.get(category, 0) + 1
            first.append(i)
        else:
            rest.append(i)
    return np.array(first + rest, dtype=np.int64)
