"""pipeline/candidate_rows.py: two-stage rows from the API's pool, on a hand-built catalog
and a fake retrieval export (the real export runs in tests/test_tfx_pipeline.py)."""
import types

import numpy as np
import pytest

from pipeline import candidate_rows, examples
from trainer import features as F
from trainer.candidates import CooccurrenceSource, TransitionSource
from trainer.candidates.served_tables import ItemToItem

IDS = ["a", "b", "c", "d", "e", "f"]
BRANDS = ["x", "x", "y", "", "y", "z"]


def catalog():
    items = [examples.catalog_example(examples.item_features({
        "item_id": i, "title": f"title {i}", "description": "", "brand": b,
        "categories": "Cat", "price": 1.0, "in_stock": True})) for i, b in zip(IDS, BRANDS)]
    return candidate_rows.RawCatalog.of(items)


def unit(item, history, clicked=1, purchased=0, user="u1"):
    padded = examples.pad_history(history)
    return {F.USER_ID: user, F.HISTORY_ITEM_IDS: padded, F.NUM_HISTORY: len(history),
            F.QUERY: "q", F.TIMESTAMP: 100, examples.USER_ACTIVITY: "warm",
            F.ITEM_ID: item, F.CLICKED: clicked, F.ADDED_TO_CART: purchased,
            F.PURCHASED: purchased, F.RATING: 0.0, F.HAS_RATING: 0}


class FakeExport:
    """top_k: retrieval returns a, b (scores .9, .5) whatever the context."""

    def __init__(self):
        self.calls = []

    def top_k(self, units):
        self.calls.append(len(units))
        return [["a", "b", "zzz-not-in-catalog"]] * len(units), np.array([[.9, .5, .4]] *
                                                                          len(units))


def drain(generator) -> tuple[list, object]:
    """(every row, the Counts) of a split_rows generator."""
    rows = []
    try:
        while True:
            rows.append(next(generator))
    except StopIteration as stop:
        return rows, stop.value


def tables(n=6):
    """Transitions c -> e (weight 3) and co-occurrence c ~ f."""
    import scipy.sparse as sp
    transitions = sp.csr_matrix(([3.0], ([2], [4])), shape=(n, n))
    together = sp.csr_matrix(([2.0, 2.0], ([2, 5], [5, 2])), shape=(n, n))
    return ItemToItem(TransitionSource(transitions), CooccurrenceSource(together), None)


def test_pool_is_retrieval_then_item_to_item_evidence_and_rows_carry_features():
    cat = catalog()
    context = unit("e", ["c"])                                  # clicked e after c
    pool = candidate_rows.pool_of(context, ["a", "b", "zzz"], [.9, .5, .4], cat, tables(),
                                  (50, 50, 50))
    assert [IDS[r] for r in pool.rows] == ["a", "b", "e", "f"]
    assert [pool.sources[s].name for s in pool.source] == [
        F.RETRIEVAL_SCORE, F.RETRIEVAL_SCORE, F.TRANSITION_SCORE, F.COOCCURRENCE_SCORE]
    counts = candidate_rows.Counts()
    rows = candidate_rows.context_rows(context, pool, cat, "eval", "eval-0", 20,
                                       np.random.default_rng(0), counts)
    assert [r[F.ITEM_ID] for r in rows] == ["a", "b", "e", "f"]
    assert [r[F.CLICKED] for r in rows] == [0, 0, 1, 0]
    e = rows[2]
    assert e[F.TRANSITION_SCORE] == pytest.approx(np.log1p(3.0))
    # Relative to the first candidate; e (outside retrieval's K) at the K-th score.
    assert [r[F.RETRIEVAL_SCORE] for r in rows[:2]] == pytest.approx([0.0, -0.4])
    assert e[F.RETRIEVAL_SCORE] == pytest.approx(-0.4) and e[F.RETRIEVAL_SCORE] <= rows[1][
        F.RETRIEVAL_SCORE]
    assert e[F.HISTORY_BRAND_SHARE] == 1.0 and e[F.LAST_ITEM_SAME_BRAND] == 1.0  # c, e: "y"
    assert rows[0][F.HISTORY_BRAND_SHARE] == 0.0
    assert {r[F.CONTEXT_ID] for r in rows} == {"eval-0"}
    assert e[F.CANDIDATE_SOURCE] == F.TRANSITION_SCORE
    assert all(r[F.USER_ID] == "u1" and r[F.QUERY] == "q" and r[F.TITLE] == f"title "
               f"{r[F.ITEM_ID]}" for r in rows)
    for row in rows:       # every row is a valid raw example, features included
        back = examples.decode_example(examples.to_tf_example(row).SerializeToString())
        assert back[F.CONTEXT_ID] == "eval-0" and back[F.TRANSITION_SCORE] == pytest.approx(
            row[F.TRANSITION_SCORE])
    assert counts.summary()["target_found_by"] == {F.TRANSITION_SCORE: 1}
    assert counts.summary()["pool_order_recall_at_10"] == 1.0
    assert counts.summary()["pool_order_ndcg_at_10"] == pytest.approx(0.5)   # 3rd: 1/log2(4)


def test_train_rows_sample_negatives_and_skip_contexts_without_the_target():
    cat, export = catalog(), FakeExport()
    units = [unit("a", ["c"]), unit("d", ["c"]),                # d: never a candidate
             unit("b", [], clicked=0), unit("b", ["d"], purchased=1, user="u2")]
    rows, counts = drain(candidate_rows.split_rows(units, export, cat, tables(), "train", 2,
                                                   seed=1, batch_size=2))
    assert export.calls == [2, 1], "clicked units only, in batches"
    summary = counts.summary()
    assert (summary["contexts"], summary["contexts_with_target_in_pool"]) == (3, 2)
    assert summary["target_in_pool_share"] == pytest.approx(2 / 3)
    # retrieval's own list (a, b, zzz) holds a and b: 2 of 3 targets within its first 3
    assert summary["target_in_retrieval_first_k"] == {"3": pytest.approx(2 / 3)}
    by_context = {}
    for row in rows:
        by_context.setdefault(row[F.CONTEXT_ID], []).append(row)
    assert sorted(by_context) == ["train-0", "train-2"]
    first = by_context["train-0"]
    assert first[0][F.ITEM_ID] == "a" and first[0][F.CLICKED] == 1
    assert len(first) == 3 and all(r[F.CLICKED] == 0 for r in first[1:])   # 2 negatives
    assert len({r[F.ITEM_ID] for r in first}) == 3
    second = by_context["train-2"]
    assert second[0][F.PURCHASED] == 1 and second[0][F.USER_ID] == "u2"
    assert len(second) == 2, "u2's pool (a, b: no item-to-item evidence for d) has 1 other"
    assert summary["rows"] == len(rows) == 5


def test_shares_within_counts_ranks_below_each_cutoff_up_to_the_list_length():
    ranks = [0, 1, 4, 9, 9]                 # 9: absent from lists of 9 items
    assert candidate_rows.shares_within(ranks, 9, cutoffs=(1, 2, 5, 20)) == {
        1: pytest.approx(.2), 2: pytest.approx(.4), 5: pytest.approx(.6), 9: pytest.approx(.6)}
    assert candidate_rows.shares_within([], 9) == {}
    assert candidate_rows.shares_within([0], 0) == {}     # no list, no cutoff


def test_bad_kind_and_empty_catalog_are_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        candidate_rows.context_rows(unit("a", []), types.SimpleNamespace(), catalog(),
                                    "test", "x", 1, np.random.default_rng(0),
                                    candidate_rows.Counts())
    with pytest.raises(ValueError, match="no items"):
        candidate_rows.RawCatalog.of([])


def test_eval_contexts_can_be_a_seeded_sample():
    cat = catalog()
    units = [unit("a", ["c"], user=f"u{i}") for i in range(10)]

    def run(seed, max_contexts):
        generator = candidate_rows.split_rows(units, FakeExport(), cat, tables(), "eval", 2,
                                              seed=seed, max_contexts=max_contexts)
        rows = []
        try:
            while True:
                rows.append(next(generator))
        except StopIteration as stop:
            return rows, stop.value.summary()

    rows, summary = run(5, 4)
    assert (summary["clicked_units"], summary["contexts"]) == (10, 4)
    users = [r[F.USER_ID] for r in rows if r[F.CLICKED]]
    assert len(users) == 4 and users == sorted(users, key=lambda u: int(u[1:])), "split order"
    assert run(5, 4)[0] == rows, "seeded"
    assert run(6, 4)[0] != rows
    assert run(5, 0)[1]["contexts"] == run(5, 99)[1]["contexts"] == 10


def test_purchases_are_those_before_the_moment_per_user_and_unknown_items_are_ignored():
    bought = candidate_rows.Purchases(
        [("u1", "c", 50), ("u1", "a", 100), ("u1", "zzz", 10), ("u2", "b", 1)], catalog())
    assert len(bought) == 3
    assert [IDS[r] for r in bought.before("u1", 100)] == ["c"], "strictly before"
    assert sorted(IDS[r] for r in bought.before("u1", 101)) == ["a", "c"]
    assert len(bought.before("u1", 50)) == 0 and len(bought.before("nobody", 10**9)) == 0
    assert [IDS[r] for r in bought.before("u2", 2)] == ["b"]


def test_purchased_items_leave_the_pool_as_the_api_filter_does():
    cat = catalog()
    context = unit("e", ["c"])
    # a was bought (retrieval's best): out; f was bought: co-occurrence gives no f.
    pool = candidate_rows.pool_of(context, ["a", "b"], [.9, .5], cat, tables(), (50, 50, 50),
                                  purchased=np.array([0, 5]))
    assert [IDS[r] for r in pool.rows] == ["b", "e"]
    assert pool.features[F.RETRIEVAL_SCORE][0] == pytest.approx(0.0), "b is now the best"
    assert candidate_rows.pool_of(context, ["a"], [.9], cat, tables(), (50, 50, 50),
                                  purchased=np.array([0])) is None, "nothing allowed left"


def test_split_rows_drop_each_users_earlier_purchases_from_the_pools():
    cat = catalog()
    units = [unit("b", ["c"], user="u1"), unit("b", ["c"], user="u2")]
    bought = candidate_rows.Purchases([("u1", "a", 99), ("u2", "a", 100)], cat)
    generator = candidate_rows.split_rows(units, FakeExport(), cat, tables(), "eval", 2,
                                          seed=0, purchases=bought)
    rows = []
    try:
        while True:
            rows.append(next(generator))
    except StopIteration:
        pass
    by_user = {}
    for row in rows:
        by_user.setdefault(row[F.USER_ID], []).append(row[F.ITEM_ID])
    assert "a" not in by_user["u1"] and by_user["u1"][0] == "b"
    assert by_user["u2"][0] == "a", "bought at the context's own time: still a candidate"


def test_train_negatives_are_first_the_items_the_user_passed_over_around_the_context():
    cat = catalog()
    shown_f = dict(unit("f", [], clicked=0), **{F.TIMESTAMP: 100 + 600})      # same session
    shown_e_late = dict(unit("e", [], clicked=0), **{F.TIMESTAMP: 100 + 7200})  # 2 h later
    other_user = dict(unit("b", [], clicked=0, user="u2"))
    units = [unit("a", ["c"]), shown_f, shown_e_late, other_user]
    passed = candidate_rows.Shown(units, cat)
    assert list(passed.around("u1", 100)) == [cat.row["f"]]
    assert list(passed.around("u2", 100)) == [cat.row["b"]]
    for seed in range(5):                  # whatever the draw: f first, then one at random
        rows, counts = drain(candidate_rows.split_rows(units, FakeExport(), cat, tables(),
                                                       "train", 2, seed=seed))
        items = [r[F.ITEM_ID] for r in rows]
        assert items[0] == "a" and "f" in items[1:] and len(items) == 3, items
        assert counts.summary()["shown_negatives"] == 1
    _, counts = drain(candidate_rows.split_rows(units, FakeExport(), cat, tables(), "train", 5,
                                                seed=0, shown_negatives=False))
    assert counts.shown_negatives == 0


class DeepExport:
    """top_k: retrieval ranks the 40 items i00..i39 in order, whatever the context."""

    def top_k(self, units):
        ids = [f"i{k:02d}" for k in range(40)]
        return [ids] * len(units), np.array([np.linspace(1.0, 0.0, 40)] * len(units))


def deep_catalog():
    items = [examples.catalog_example(examples.item_features({
        "item_id": f"i{k:02d}", "title": f"title {k}", "description": "", "brand": "",
        "categories": "Cat", "price": 1.0, "in_stock": True})) for k in range(40)]
    return candidate_rows.RawCatalog.of(items)


def test_hard_negatives_come_from_the_pools_first_places_the_rest_uniformly():
    cat = deep_catalog()
    units = [unit("i30", []) for _ in range(200)]     # the target at retrieval rank 30

    def negatives_by_rank(**kwargs):
        rows, counts = drain(candidate_rows.split_rows(units, DeepExport(), cat, None, "train",
                                                       6, seed=3, **kwargs))
        ranks = np.array([int(r[F.ITEM_ID][1:]) for r in rows if not r[F.CLICKED]])
        assert len(ranks) == 200 * 6 and counts.summary()["rows"] == 200 * 7
        for context in range(200):          # no item twice in a context, never the target
            mine = ranks[context * 6:(context + 1) * 6]
            assert len(set(mine)) == 6 and 30 not in mine
        return ranks, counts.summary()["hard_negatives"]

    uniform, hard_count = negatives_by_rank()
    assert hard_count == 0
    assert (uniform < 5).mean() == pytest.approx(5 / 39, abs=0.04)
    mixed, hard_count = negatives_by_rank(hard_negatives=4, hard_window=5)
    assert hard_count == 200 * 4
    # 4 of 6 from ranks 0-4 each context, the other 2 uniform over the other 34 items
    per_context = (mixed.reshape(200, 6) < 5).sum(axis=1)
    assert per_context.min() >= 4 and per_context.mean() == pytest.approx(4 + 2 * 1 / 34,
                                                                           abs=0.1)
    # a window smaller than the count: the window's items, the rest uniform
    small, hard_count = negatives_by_rank(hard_negatives=4, hard_window=2)
    assert hard_count == 200 * 2 and ((small.reshape(200, 6) < 2).sum(axis=1) == 2).all()
    # off: the draw is the one the runs before this option made (same seed, same rows)
    again, _ = negatives_by_rank(hard_negatives=0, hard_window=5)
    assert (again == uniform).all()
