"""The retrieval and ranking models as the API uses them, through TF Serving's gRPC API.

``ModelBackend`` turns recommender requests into Predict calls on the exported signatures
(trainer/signatures.py): retrieval ``top_k`` / ``candidate_embedding``, ranking
``rank_candidates`` (one user context with the session's search query, N candidates; ``score``
is kept for tools).
``ModelWatcher`` polls which versions TF Serving serves and recomputes the catalog's
candidate embeddings and item-to-item tables (``related_items``, trainer/candidates/served_tables.py)
whenever the retrieval version changes (TF Serving swaps versions on its own; what the API
caches must follow). Tables that cannot be read are refused with a logged reason and the
previous ones keep serving.

Histories go to the models as the event store read them (up to ``max_history`` items, most
recent first), padded to ``max_history``: one width for every request, so TF Serving can
batch them (batching.config does not pad). Each model keeps its own width's most recent
items (trainer/signatures.py). The watcher also reads the served retrieval version's width
(``served_history_length``: the static width of ``top_k``'s ``history_used`` output in the
model metadata) into ``Catalog.history_length``, the items the candidate stage reads.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np

from pipeline.examples import pad_history
from serving.api.catalog import Catalog
from serving.client.clients import GrpcPredictClient, ServingError
from serving.client.errors import NotFound
from serving.client.model_metadata import ModelMetadata
from trainer import features as F
from trainer.candidates import served_tables

log = logging.getLogger("serving.api.models")

TOP_K, CANDIDATE_EMBEDDING, SCORE = "top_k", "candidate_embedding", "score"
QUERY_EMBEDDING = "query_embedding"
RANK_CANDIDATES = "rank_candidates"
RELATED_ITEMS = served_tables.SIGNATURE
HISTORY_USED = "history_used"    # trainer/signatures.py HISTORY_USED (no TF import here)


class BadModelOutput(ServingError):
    """A model answered with outputs the API cannot use (wrong shape, NaN or inf scores)."""

    default_code = "INTERNAL"


def _checked(values, what: str, shape: tuple | None = None) -> np.ndarray:
    """``values`` as float64, refused (``BadModelOutput``) unless finite and of ``shape``."""
    values = np.asarray(values, dtype=np.float64)
    if shape is not None and values.shape != shape:
        raise BadModelOutput(f"{what}: expected shape {shape}, got {values.shape}")
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise BadModelOutput(f"{what}: {bad} of {values.size} values are NaN or infinite")
    return values


def _strings(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _history(history: list[str], batch: int, width: int) -> np.ndarray:
    """[batch, width] object array: the history cut or padded to ``width``, repeated."""
    padded = pad_history(history, width)
    out = np.empty((batch, len(padded)), dtype=object)
    out[:] = padded
    return out


def served_history_length(metadata: ModelMetadata) -> int:
    """The history width of a served retrieval version: the static width of its ``top_k``
    output ``history_used`` [B, L]; features.HISTORY_LENGTH (10) for exports without it
    (before the width became a pipeline setting, every model had 10)."""
    signature = metadata.signatures.get(TOP_K)
    spec = signature.outputs.get(HISTORY_USED) if signature is not None else None
    if spec is not None and spec.shape is not None and len(spec.shape) == 2 \
            and spec.shape[1] > 0:
        return int(spec.shape[1])
    return F.HISTORY_LENGTH


def _decode(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class ModelBackend:
    """Predict calls for the recommender; errors are ``serving.client.clients.ServingError``.

    **Pinned versions**: every call takes the ``version`` of its model to use (None: the one
    TF Serving serves now). The recommender pins each request to the versions the watcher
    published (``ModelWatcher.versions``: the retrieval version whose catalog embeddings and
    item-to-item tables the API holds, and the ranking version seen with it), so one
    answer never mixes two retrieval versions or a retrieval version with tables of
    another, even while TF Serving swaps. A pinned version TF Serving no longer serves
    (NOT_FOUND: unloaded, rolled back) is asked again unpinned rather than failing.
    """

    def __init__(self, client: GrpcPredictClient, retrieval_model: str = "retrieval",
                 ranking_model: str = "ranking", max_history: int = F.HISTORY_LENGTH):
        """``max_history``: the width every history is sent with (Settings.max_history)."""
        self.client = client
        self.retrieval_model, self.ranking_model = retrieval_model, ranking_model
        self.max_history = F.check_history_length(max_history, "max_history")
        self.unpinned_retries = 0        # pinned calls answered by the served version instead

    def _predict(self, model: str, inputs: dict, signature: str, version: int | None,
                 **kwargs) -> dict:
        if version is not None:
            try:
                return self.client.predict(model, inputs, signature=signature,
                                           version=version, **kwargs)
            except NotFound as e:
                if "signature" in e.message.lower():
                    raise                      # the version is there; the signature is not
                self.unpinned_retries += 1
                log.info("%s version %s is not served any more (%s); asking the served one",
                         model, version, e.message)
        return self.client.predict(model, inputs, signature=signature, **kwargs)

    @classmethod
    def connect(cls, address: str, deadline_s: float, retries: int,
                retrieval_model: str = "retrieval", ranking_model: str = "ranking",
                max_history: int = F.HISTORY_LENGTH) -> "ModelBackend":
        client = GrpcPredictClient(address, deadline_s=deadline_s, retries=retries,
                                   backoff=0.05, max_backoff=0.5)
        return cls(client, retrieval_model, ranking_model, max_history)

    def top_k(self, user_id: str, history: list[str], query: str,
              version: int | None = None) -> tuple[list[str], np.ndarray]:
        """Retrieval over the full catalog: (item ids, scores), best first."""
        out = self._predict(self.retrieval_model, {
            F.USER_ID: _strings([user_id]),
            F.HISTORY_ITEM_IDS: _history(history, 1, self.max_history),
            F.QUERY: _strings([query])}, TOP_K, version)
        ids = _decode(out["item_ids"][0])
        return ids, _checked(out["scores"][0], f"{self.retrieval_model} {TOP_K} scores",
                             (len(ids),))

    def query_embedding(self, user_id: str, history: list[str], query: str,
                        version: int | None = None) -> np.ndarray:
        """The retrieval model's query embedding [D] of one context (what ``top_k`` scores
        the catalog with): the API scores live catalog items with it."""
        out = self._predict(self.retrieval_model, {
            F.USER_ID: _strings([user_id]),
            F.HISTORY_ITEM_IDS: _history(history, 1, self.max_history),
            F.QUERY: _strings([query])}, QUERY_EMBEDDING, version,
            output_filter=["embedding"])
        embedding = _checked(out["embedding"], f"{self.retrieval_model} {QUERY_EMBEDDING}")
        if embedding.ndim != 2 or embedding.shape[0] != 1:
            raise BadModelOutput(f"{self.retrieval_model} {QUERY_EMBEDDING}: expected shape "
                                 f"[1, D], got {embedding.shape}")
        return embedding[0]

    def score(self, user_id: str, history: list[str],
              item_inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Ranking score of each item for this user context ([n] float)."""
        n = len(item_inputs[F.ITEM_ID])
        inputs = {F.USER_ID: _strings([user_id] * n),
                  F.HISTORY_ITEM_IDS: _history(history, n, self.max_history),
                  **item_inputs}
        out = self.client.predict(self.ranking_model, inputs, signature=SCORE,
                                  output_filter=["score"])
        return _checked(out["score"], f"{self.ranking_model} {SCORE}", (n,))

    def rank_candidates(self, user_id: str, history: list[str], query: str,
                        item_inputs: dict[str, np.ndarray],
                        features: dict[str, np.ndarray] | None = None,
                        version: int | None = None) -> np.ndarray:
        """Ranking score ([n] float) of n candidates for one user context and search query
        ("" if none): the ranking export's ``rank_candidates``. ``item_inputs``: item_id,
        title, brand, category, price, in_stock, [n] each; ``features``: the candidate
        stage's features [n] by name, of which those the served signature takes are sent
        (models trained with external features; a feature it takes but ``features`` lacks
        is a ``ServingError``).

        Only ``score`` is fetched: TF Serving's batching refuses this signature's scalar
        inputs for a request of every output, and runs an output subset unbatched.
        """
        inputs = {F.USER_ID: np.array(user_id, dtype=object),
                  F.HISTORY_ITEM_IDS: _history(history, 1, self.max_history)[0],
                  F.QUERY: np.array(query, dtype=object), **item_inputs}
        try:
            spec = self.client.signature(self.ranking_model, RANK_CANDIDATES, version=version)
        except NotFound:
            if version is None:
                raise
            version = None                     # not served any more: the served one
            self.unpinned_retries += 1
            spec = self.client.signature(self.ranking_model, RANK_CANDIDATES)
        wanted = [name for name in (spec.inputs if spec else ())
                  if name in F.OPTIONAL_FLOAT_FEATURES]
        missing = [name for name in wanted if name not in (features or {})]
        if missing:
            raise ServingError(f"the served {self.ranking_model} model's {RANK_CANDIDATES} "
                               f"takes {missing}, which the API's candidate stage does not "
                               f"compute", code="FAILED_PRECONDITION")
        inputs.update({name: np.asarray(features[name], np.float32) for name in wanted})
        out = self._predict(self.ranking_model, inputs, RANK_CANDIDATES, version,
                            output_filter=["score"])
        return _checked(out["score"], f"{self.ranking_model} {RANK_CANDIDATES}",
                        (len(item_inputs[F.ITEM_ID]),))

    def candidate_embeddings(self, catalog: Catalog, batch_size: int,
                             version: int | None = None) -> np.ndarray:
        """[N, D] candidate embeddings of the whole catalog, in batches (all from
        ``version`` when given: a push during the loop must not mix two versions)."""
        return self.embed_rows(catalog, np.arange(len(catalog)), batch_size, version)

    def embed_rows(self, catalog: Catalog, rows: np.ndarray, batch_size: int,
                   version: int | None = None) -> np.ndarray:
        """[len(rows), D] candidate embeddings of some catalog rows, in batches."""
        parts = []
        for start in range(0, len(rows), batch_size):
            part = np.asarray(rows[start:start + batch_size], np.int64)
            out = self.client.predict(self.retrieval_model, catalog.candidate_inputs(part),
                                      signature=CANDIDATE_EMBEDDING, version=version,
                                      output_filter=["embedding"])
            embedding = _checked(out["embedding"], f"{self.retrieval_model} "
                                 f"{CANDIDATE_EMBEDDING} of items {part[0]}..{part[-1]}")
            if embedding.ndim != 2 or len(embedding) != len(part):
                raise BadModelOutput(f"{self.retrieval_model} {CANDIDATE_EMBEDDING}: expected "
                                     f"[{len(part)}, D], got {embedding.shape}")
            parts.append(embedding.astype(np.float32))
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def related_items(self, catalog: Catalog, batch_size: int,
                      version: int | None = None) -> dict[str, np.ndarray]:
        """The retrieval version's ``related_items`` answers for the whole catalog, in
        batches: output name -> [N, ...] in catalog order."""
        parts: dict[str, list] = {}
        for start in range(0, len(catalog), batch_size):
            rows = np.arange(start, min(start + batch_size, len(catalog)))
            out = self.client.predict(self.retrieval_model, {F.ITEM_ID: catalog.ids[rows]},
                                      signature=RELATED_ITEMS, version=version)
            for key, value in out.items():
                parts.setdefault(key, []).append(np.asarray(value))
        return {key: np.concatenate(values) for key, values in parts.items()}

    def served_metadata(self) -> dict[str, ModelMetadata]:
        """model name -> metadata (version, signatures) of what TF Serving serves now."""
        return {name: self.client.metadata(name)
                for name in (self.retrieval_model, self.ranking_model)}

    def served_versions(self) -> dict[str, int]:
        """model name -> version TF Serving serves now (for unpinned requests)."""
        return {name: meta.version for name, meta in self.served_metadata().items()}

    def close(self) -> None:
        self.client.close()


class ModelWatcher:
    """Keeps ``versions`` current and the catalog embeddings from the served retrieval model."""

    def __init__(self, backend: ModelBackend, catalog: Catalog, poll_s: float,
                 batch_size: int, on_versions: Callable[[dict], None] | None = None,
                 build_index: Callable[[np.ndarray], object] | None = None):
        """``build_index(raw embeddings)``: retrieval's index in the API for a catalog of
        that size, or None when the served model's top_k answers (Services decides)."""
        self.backend, self.catalog = backend, catalog
        self.build_index = build_index
        self.poll_s, self.batch_size = poll_s, batch_size
        self.on_versions = on_versions
        self.versions: dict[str, int] = {}
        self._tables_version: int | None = None
        self._tables_catalog: Catalog | None = None    # the catalog they were installed in
        self.last_error: str | None = None
        self.last_poll: float | None = None     # time.monotonic() when a poll last finished
        self.poll_failures = 0                   # polls that ended in an error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        """True once both models answered and the catalog embeddings are loaded."""
        return bool(self.versions) and self.catalog.embeddings is not None

    @property
    def alive(self) -> bool:
        """True while the polling thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def refresh(self) -> bool:
        """One poll: read versions, recompute embeddings and item-to-item tables if needed.
        Returns ``ready``."""
        try:
            metadata = self.backend.served_metadata()
            versions = {name: meta.version for name, meta in metadata.items()}
            retrieval = versions[self.backend.retrieval_model]
            catalog = self.catalog     # one catalog for this poll (a live change may swap it)
            if catalog.embeddings is None or catalog.embeddings_version != retrieval:
                started = time.perf_counter()
                embeddings = self.backend.candidate_embeddings(catalog, self.batch_size,
                                                               version=retrieval)
                catalog.set_embeddings(embeddings, retrieval)
                log.info("catalog embeddings from %s version %s: %d items in %.1f s",
                         self.backend.retrieval_model, retrieval, len(catalog),
                         time.perf_counter() - started)
                index = self.build_index(embeddings) if self.build_index else None
                catalog.set_ann(index, retrieval if index is not None else None)
                if index is not None:
                    log.info("retrieval index of version %s: %s, %d items, built in %.1f s",
                             retrieval, index.method, index.size, index.build_seconds)
            # a catalog swapped in since (serving/api/catalog_updates.py) carries the tables it
            # grew from; asked again only when those are of another version
            stale = self._tables_catalog is not catalog and catalog.tables_version != retrieval
            if self._tables_version != retrieval or stale:
                catalog.set_history_length(
                    served_history_length(metadata[self.backend.retrieval_model]))
                self._refresh_tables(catalog, metadata[self.backend.retrieval_model],
                                     retrieval)
            if versions != self.versions:
                log.info("models served: %s", versions)
            self.versions = versions
            self.last_error = None
            if self.on_versions:
                self.on_versions(versions)
        except ServingError as e:
            self.last_error = str(e)
            self.poll_failures += 1
            log.warning("model server not usable yet: %s", e)
        finally:
            self.last_poll = time.monotonic()
        return self.ready

    def _refresh_tables(self, catalog: Catalog, metadata: ModelMetadata, version: int) -> None:
        """The item-to-item tables of retrieval ``version``; on a bad answer the previous
        tables stay (logged). A version without the signature has none. Transient serving
        errors propagate (the next poll retries)."""
        name = self.backend.retrieval_model
        if RELATED_ITEMS not in metadata.signatures:
            log.warning("%s version %s has no %s signature: recommendations use retrieval "
                        "candidates only (export it with trainer/related_items.py)", name,
                        version, RELATED_ITEMS)
            catalog.set_item_to_item(None, version)
            self._tables_version, self._tables_catalog = version, catalog
            return
        started = time.perf_counter()
        answers = self.backend.related_items(catalog, self.batch_size, version=version)
        self._tables_version, self._tables_catalog = version, catalog
        try:
            tables = served_tables.build(catalog.ids, answers, version)
        except served_tables.BadTables as e:
            kept = catalog.item_to_item
            log.error("refused the item-to-item tables of %s version %s: %s; keeping %s", name,
                      version, e, f"those of version {kept.version}" if kept else "none")
            return
        catalog.set_item_to_item(tables, version, answers)
        log.info("item-to-item tables from %s version %s in %.1f s: %s", name, version,
                 time.perf_counter() - started, tables.report)

    def wait_ready(self, timeout_s: float, interval_s: float = 0.5) -> bool:
        """Refresh until ready or timeout_s passed (bounded)."""
        deadline = time.monotonic() + timeout_s
        while not self.refresh():
            if time.monotonic() + interval_s > deadline or self._stop.is_set():
                return False
            self._stop.wait(interval_s)
        return True

    def start(self) -> "ModelWatcher":
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        # poll quickly until the model server has answered once, then every poll_s
        while not self._stop.wait(self.poll_s if self.ready else min(self.poll_s, 1.0)):
            try:
                self.refresh()
            except Exception as e:  # pylint: disable=broad-except
                # Anything unexpected (a bug, a malformed answer) must not end the polling:
                # the next version could never be picked up.
                self.last_error = f"{type(e).__name__}: {e}"
                self.poll_failures += 1
                log.exception("model watcher poll failed; retrying in %.0f s", self.poll_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
