"""The candidate stage's item-to-item sources of a retrieval version, built from its
``related_items`` signature (trainer/related_items.py): the API's model watcher and the
pipeline's CandidateExamples component both build them here.

The caller asks the signature for every catalog item in batches (like the catalog
embeddings) and ``build`` turns the answers into the ``TransitionSource`` /
``CooccurrenceSource`` the benchmarks score with, over catalog rows, and the text
neighbours (``TextNeighbourSource``: each item's most similar items by the frozen MiniLM
item text) when the version has a text tower (its answer then holds ``text_ids`` /
``text_weights``; without them there is no text source). Partners that are not in
the caller's catalog cannot be recommended and are left out (counted in ``report``). A
malformed answer raises ``BadTables`` naming what is wrong; the API's watcher then keeps the
tables it has.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trainer.candidates import item_to_item
from trainer.candidates.sources import (CooccurrenceSource, TextNeighbourSource,
                                        TransitionSource)

SIGNATURE = "related_items"
TABLES = (("transition", TransitionSource), ("cooccurrence", CooccurrenceSource))
OPTIONAL_TABLES = (("text", TextNeighbourSource),)   # present with a text tower
ENGAGEMENTS = "engagements"


class BadTables(ValueError):
    """The served related_items answer cannot be used; the message says why."""


@dataclass
class ItemToItem:
    """The item-to-item sources of one retrieval version."""

    transitions: TransitionSource
    cooccurrences: CooccurrenceSource
    version: int | None
    report: dict = field(default_factory=dict)
    texts: TextNeighbourSource | None = None

    @property
    def sources(self):
        return [self.transitions, self.cooccurrences] + (
            [self.texts] if self.texts is not None else [])

    def counts(self, transition: int, cooccurrence: int, text: int) -> tuple:
        """How many candidates each of ``sources`` may add, in their order."""
        return (int(transition), int(cooccurrence)) + (
            (int(text),) if self.texts is not None else ())


def _decode(values: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v),
                        otypes=[object])(values) if values.size else values.astype(object)


def build(catalog_ids: np.ndarray, answers: dict[str, np.ndarray],
          version: int | None) -> ItemToItem:
    """``answers``: the signature's outputs for every catalog item in catalog order
    (``<table>_ids`` / ``<table>_weights`` [N, M], ``engagements`` [N])."""
    n = len(catalog_ids)
    missing = [key for name, _ in TABLES for key in (f"{name}_ids", f"{name}_weights")
               if key not in answers] + ([ENGAGEMENTS] if ENGAGEMENTS not in answers else [])
    if missing:
        raise BadTables(f"{SIGNATURE} answer lacks {missing}")
    row = {item_id: i for i, item_id in enumerate(catalog_ids)}
    engagements = np.asarray(answers[ENGAGEMENTS], np.float64).reshape(-1)
    if engagements.shape != (n,) or not np.isfinite(engagements).all() or (
            engagements < 0).any():
        raise BadTables(f"{SIGNATURE}: {ENGAGEMENTS} must be {n} finite counts >= 0, got "
                        f"shape {engagements.shape}")
    tie_break = item_to_item.tie_break_of_counts(engagements)
    sources, report = {}, {"items": n, "engaged_items": int((engagements > 0).sum())}
    present = [(name, cls) for name, cls in OPTIONAL_TABLES if f"{name}_ids" in answers]
    for name, cls in TABLES + tuple(present):
        ids = _decode(np.asarray(answers[f"{name}_ids"]))
        weights = np.asarray(answers[f"{name}_weights"], np.float32)
        if ids.ndim != 2 or ids.shape != weights.shape or len(ids) != n:
            raise BadTables(f"{SIGNATURE}: {name}_ids {ids.shape} and {name}_weights "
                            f"{weights.shape} must both be [{n}, m]")
        cols = np.array([[row.get(i, -1) if i else -1 for i in line] for line in ids],
                        dtype=np.int64).reshape(ids.shape)
        report[f"{name}_partners_not_in_catalog"] = int(((cols < 0) & (ids != "")).sum())
        weights = np.where(cols >= 0, weights, 0.0).astype(np.float32)
        try:
            table = item_to_item.from_neighbours(cols, weights, n)
        except ValueError as e:
            raise BadTables(f"{SIGNATURE}: {name} table: {e}") from e
        report[f"{name}_pairs"] = int(table.nnz)
        # Text neighbours are cosines: no popularity tie-break among them.
        sources[name] = cls(table, None if name == "text" else tie_break)
    return ItemToItem(sources["transition"], sources["cooccurrence"], version, report,
                      sources.get("text"))
