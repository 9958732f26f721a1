"""Impressions and attributions in both event stores: stored with positions, the latest
impression in a window, per-experiment reads, erasure, the purge, the export's reads."""
from __future__ import annotations

import pytest

from serving.events.impressions import Attribution, Impression
from tests.serving.api.setup import redis_url  # noqa: F401
from tests.serving.events.test_store import _open_store, events


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    s = _open_store(request, tmp_path)
    yield s
    s.close()


def shown(request_id, user, items, ts, experiment="exp", variant="A", surface="recommend"):
    return [Impression(request_id, user, item, n, surface, experiment, variant, ts)
            for n, item in enumerate(items)]


def credit(impression: Impression, event_type: str, ts: int, revenue=0.0, value=1.0):
    return Attribution(impression.user_id, impression.item_id, event_type, value, revenue, ts,
                       impression.request_id, impression.position, impression.surface,
                       impression.experiment, impression.variant, impression.timestamp)


def test_impressions_keep_positions_and_the_latest_one_in_the_window_is_found(store):
    store.add_impressions(shown("r1", "u", ["a", "b", "c"], 100))
    store.add_impressions(shown("r2", "u", ["c", "a"], 200, variant="B"))
    store.add_impressions(shown("r3", "v", ["a"], 150))
    latest = store.latest_impression("u", "a", 0, 250)
    assert (latest.request_id, latest.position, latest.variant) == ("r2", 1, "B")
    earlier = store.latest_impression("u", "a", 0, 199)
    assert (earlier.request_id, earlier.position) == ("r1", 0)
    assert store.latest_impression("u", "a", 101, 199) is None, "outside the window"
    assert store.latest_impression("u", "z", 0, 10**9) is None
    assert [(i.request_id, i.item_id, i.position) for i in store.impressions()] == [
        ("r1", "a", 0), ("r1", "b", 1), ("r1", "c", 2), ("r3", "a", 0), ("r2", "c", 0),
        ("r2", "a", 1)]


def test_experiment_reads_count_impressions_per_user_and_return_attributions(store):
    first = shown("r1", "u", ["a", "b"], 100)
    store.add_impressions(first + shown("r2", "v", ["a"], 100, variant="B")
                          + shown("r3", "w", ["a"], 100, experiment=""))
    store.add_attributions([credit(first[1], "click", 110),
                            credit(first[1], "purchase", 120, revenue=19.5, value=3)])
    assert sorted(store.experiment_impressions("exp")) == [("A", "u", 2), ("B", "v", 1)]
    found = store.experiment_attributions("exp")
    assert [(a.event_type, a.position, a.revenue, a.value) for a in found] == [
        ("click", 1, 0.0, 1.0), ("purchase", 1, 19.5, 3.0)]
    assert store.experiment_impressions("other") == []


def test_erasure_deletes_the_users_impressions_and_attributions(store):
    mine = shown("r1", "u", ["a"], 100)
    store.add_impressions(mine + shown("r2", "v", ["a"], 100))
    store.add_attributions([credit(mine[0], "click", 101)])
    store.add(events(("u", "a", "click", 101)))
    assert store.erase_user("u") == 1
    assert store.latest_impression("u", "a", 0, 10**9) is None
    assert [i.user_id for i in store.impressions()] == ["v"]
    assert store.experiment_impressions("exp") == [("A", "v", 1)]
    assert store.experiment_attributions("exp") == []


def test_purge_deletes_impressions_and_attributions_before_the_cutoff(store):
    old, new = shown("r1", "u", ["a", "b"], 100), shown("r2", "u", ["c"], 300)
    store.add_impressions(old + new)
    store.add_attributions([credit(old[0], "click", 150), credit(new[0], "click", 310)])
    assert store.purge_impressions(200) == 2
    assert [i.request_id for i in store.impressions()] == ["r2"]
    assert [a.timestamp for a in store.experiment_attributions("exp")] == [310]
    assert store.purge_impressions(200) == 0


def test_events_reads_back_the_contract_frame_in_time_order(store):
    store.add(events(("u", "a", "purchase", 20, "", 2.0), ("u", "", "search", 10, "red"),
                     ("v", "a", "view", 15)))
    frame = store.events()
    assert list(frame["event_type"]) == ["search", "view", "purchase"]
    assert list(frame["timestamp"]) == [10, 15, 20]
    assert frame["value"].iloc[2] == 2.0 and frame["query"].iloc[0] == "red"
