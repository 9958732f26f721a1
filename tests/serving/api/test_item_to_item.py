"""trainer/candidates/served_tables.py and the API's watcher: the served related_items answers become the
candidate stage's item-to-item sources; bad answers are refused and the old tables stay."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from trainer.candidates import served_tables
from serving.api.catalog import Catalog
from serving.api.model_backend import ModelWatcher
from tests.serving.api.setup import items_rows
from trainer.candidates import CooccurrenceSource, TextNeighbourSource, TransitionSource

IDS = np.array(["a", "b", "c", "d"], dtype=object)


def answers(transitions, cooccurrences, engagements, m=3, texts=None):
    """related_items outputs for IDS from {item: [(partner, weight), ...]} (``texts``: the
    text neighbours of a version with a text tower)."""
    out = {"engagements": np.asarray(engagements, np.float32)}
    tables = (("transition", transitions), ("cooccurrence", cooccurrences)) + (
        (("text", texts),) if texts is not None else ())
    for name, table in tables:
        ids = np.full((len(IDS), m), b"", dtype=object)
        weights = np.zeros((len(IDS), m), np.float32)
        for i, item in enumerate(IDS):
            for j, (partner, weight) in enumerate(table.get(item, [])):
                ids[i, j], weights[i, j] = partner.encode(), weight
        out[f"{name}_ids"], out[f"{name}_weights"] = ids, weights
    return out


GOOD = answers({"a": [("b", 2.0), ("c", 1.0)], "b": [("c", 1.0), ("zz", 4.0)]},
               {"a": [("b", 2.0)], "b": [("a", 2.0)]}, [3, 2, 1, 0])


def test_answers_become_the_benchmarks_sources_over_catalog_rows():
    tables = served_tables.build(IDS, GOOD, version=7)
    assert tables.version == 7 and isinstance(tables.transitions, TransitionSource)
    assert isinstance(tables.cooccurrences, CooccurrenceSource)
    assert tables.transitions.table.toarray().tolist() == [
        [0, 2, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    # The partner outside the catalog is left out and counted.
    assert tables.report["transition_partners_not_in_catalog"] == 1
    assert tables.report["transition_pairs"] == 3 and tables.report["engaged_items"] == 3
    scores = tables.transitions.scores([np.array([0])])[0]
    assert scores.argmax() == 1 and scores[3] == 0      # d: no transition, no engagement
    assert tables.transitions.because(np.array([2, 0]), [1, 3]).tolist() == [0, -1]


def test_text_neighbours_are_a_third_source_when_the_version_has_them():
    plain = served_tables.build(IDS, GOOD, version=1)
    assert plain.texts is None and len(plain.sources) == 2
    assert plain.counts(50, 40, 30) == (50, 40)
    with_text = served_tables.build(IDS, answers(
        {"a": [("b", 2.0)]}, {}, [3, 2, 1, 0], texts={"a": [("d", 0.9), ("c", 0.5)],
                                                       "c": [("a", 0.5)]}), version=2)
    texts = with_text.texts
    assert isinstance(texts, TextNeighbourSource) and texts.tie_break is None
    assert with_text.sources[2] is texts and with_text.counts(50, 40, 30) == (50, 40, 30)
    assert texts.table.toarray()[0].tolist() == pytest.approx([0, 0, 0.5, 0.9])
    # Its feature is the similarity itself (not a log count); only text evidence counts.
    assert texts.supported(np.array([0])).tolist() == [2, 3]
    scores = texts.scores([np.array([0])])
    assert texts.feature(scores)[0, 3] == pytest.approx(0.9)
    assert with_text.report["text_pairs"] == 3


@pytest.mark.parametrize("change, match", [
    (lambda a: a.pop("cooccurrence_ids"), "lacks"),
    (lambda a: a.update(transition_weights=a["transition_weights"][:, :2]), r"\[4, m\]"),
    (lambda a: a.update(transition_ids=a["transition_ids"][:3]), r"\[4, m\]"),
    (lambda a: a["cooccurrence_weights"].__setitem__((0, 0), -1.0), ">= 0"),
    (lambda a: a["transition_weights"].__setitem__((0, 0), np.inf), "finite"),
    (lambda a: a.update(engagements=np.array([1.0, 2.0])), "engagements"),
])
def test_malformed_answers_are_refused_naming_the_problem(change, match):
    bad = {k: v.copy() for k, v in GOOD.items()}
    change(bad)
    with pytest.raises(served_tables.BadTables, match=match):
        served_tables.build(IDS, bad, version=1)


class _Backend:
    """The watcher's view of TF Serving: per retrieval version, its signatures and answers."""

    retrieval_model, ranking_model = "retrieval", "ranking"

    def __init__(self, catalog):
        self.catalog, self.version, self.answers = catalog, 1, {}

    def served_metadata(self):
        signatures = {"top_k": None}
        if self.version in self.answers:
            signatures["related_items"] = None
        return {"retrieval": SimpleNamespace(version=self.version, signatures=signatures),
                "ranking": SimpleNamespace(version=1, signatures={})}

    def candidate_embeddings(self, catalog, batch_size, version=None):
        return np.eye(len(catalog), 4, dtype=np.float32) + self.version

    def related_items(self, catalog, batch_size, version=None):
        return self.answers[self.version]


def test_watcher_installs_refuses_and_drops_tables_per_retrieval_version(caplog):
    items = pd.DataFrame(items_rows())
    items["price"] = items["price"].astype(float)
    items["in_stock"] = items["in_stock"] == "true"
    catalog = Catalog(items)
    n = len(catalog)
    backend = _Backend(catalog)
    good = {"engagements": np.ones(n, np.float32)}
    for name in ("transition", "cooccurrence"):
        ids = np.full((n, 2), b"", dtype=object)
        ids[:, 0] = [i.encode() for i in np.roll(catalog.ids, -1)]   # each item -> the next
        good[f"{name}_ids"], good[f"{name}_weights"] = ids, np.where(ids != b"", 1.0, 0.0)
    bad = dict(good, transition_weights=-good["transition_weights"])
    backend.answers = {1: good, 2: bad}
    watcher = ModelWatcher(backend, catalog, poll_s=1, batch_size=8)
    assert watcher.refresh()
    assert catalog.item_to_item.version == 1
    assert catalog.item_to_item.transitions.table[0, 1] == 1.0

    backend.version = 2
    with caplog.at_level(logging.ERROR, logger="serving.api.models"):
        assert watcher.refresh()
    assert catalog.embeddings_version == 2 and catalog.item_to_item.version == 1
    assert "refused the item-to-item tables of retrieval version 2" in caplog.text
    assert "keeping those of version 1" in caplog.text
    calls = len(caplog.records)
    watcher.refresh()                       # the refused version is not fetched again
    assert len(caplog.records) == calls

    backend.version = 3                     # no related_items signature: no tables
    assert watcher.refresh() and catalog.item_to_item is None



def test_a_grown_catalog_keeps_rows_tables_and_embeddings_and_encodes_only_changes():
    """Catalog.grown (live new items, serving/api/catalog_updates.py): old rows keep their
    number, tables and popularity; new rows have no partners; only new or re-texted items
    are encoded."""
    items = pd.DataFrame({"item_id": IDS, "title": ["A", "B", "C", "D"], "description": "",
                          "brand": "", "categories": "X", "price": 1.0, "in_stock": True,
                          "created_at": 0})
    catalog = Catalog(items)
    catalog.set_embeddings(np.eye(4, 5, dtype=np.float32), 7)
    catalog.set_item_to_item(served_tables.build(IDS, GOOD, 7), 7, GOOD)
    catalog.set_popularity({"a": 3})
    grown_items = pd.concat([items, items.iloc[:1].assign(item_id="e", title="E")],
                            ignore_index=True)
    grown_items.loc[1, "title"] = "B2"
    encoded = []

    def encode(cat, rows):
        encoded.append(cat.ids[rows].tolist())
        return np.full((len(rows), 5), 2.0, np.float32)

    grown = catalog.grown(grown_items, {"b", "e"}, {"c"}, encode)
    assert encoded == [["b", "e"]]
    assert grown.live_rows.tolist() == [1, 4] and grown.live_embeddings.tolist() == [[2.0] * 5] * 2
    assert grown.embeddings_version == 7 and np.allclose(grown.embeddings[0], catalog.embeddings[0])
    assert grown.popularity.tolist() == [3, 0, 0, 0, 0]
    assert grown.listed(0) and not grown.listed(2)
    table = grown.item_to_item.transitions.table.toarray()
    assert table.shape == (5, 5) and table[:4, :4].tolist() == \
        catalog.item_to_item.transitions.table.toarray().tolist() and not table[4].any()
    again = grown.grown(grown.current_items(), {"b", "e"}, {"c"}, encode)
    assert len(encoded) == 1, "nothing changed: nothing encoded again"
    assert again.live_embeddings.tolist() == grown.live_embeddings.tolist()
    with pytest.raises(ValueError, match="keep every row"):
        catalog.grown(grown_items.iloc[1:], set(), set(), encode)
