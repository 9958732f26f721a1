"""Query suggestions from the search log (serving/api/autocomplete.py)."""
from __future__ import annotations

import pytest

from serving.api.autocomplete import QuerySuggestions, normalise


def test_only_queries_of_enough_distinct_users_are_suggested():
    log = QuerySuggestions(min_users=3)
    for user in ("a", "b"):
        log.add(user, "Red  Lipstick ")
    for _ in range(5):
        log.add("c", "red secret")             # one user, many times: never shown
    assert log.suggest("red", 10) == [] and len(log) == 0
    log.add("c", "red lipstick")
    assert log.suggest("RED", 10) == [("red lipstick", 3)]
    log.add("d", "red lipstick")
    assert log.suggest("red l", 10) == [("red lipstick", 4)]


def test_suggestions_match_the_prefix_most_searched_first_then_alphabetical():
    pairs = [(f"u{i}", q) for q, n in (("blue jeans", 4), ("blue hat", 2), ("blush", 4),
                                       ("black tie", 9), ("bl", 2))
             for i in range(n)]
    log = QuerySuggestions(min_users=2)
    log.reset(pairs)
    assert log.suggest("bl", 10) == [("black tie", 9), ("blue jeans", 4), ("blush", 4),
                                     ("bl", 2), ("blue hat", 2)]
    assert log.suggest("blu", 2) == [("blue jeans", 4), ("blush", 4)]
    assert log.suggest("blue  j", 5) == [("blue jeans", 4)]
    assert log.suggest("c", 5) == []


def test_reset_forgets_users_no_longer_in_the_store():
    log = QuerySuggestions(min_users=2)
    log.reset([("a", "tent"), ("b", "tent")])
    assert log.suggest("te", 5) == [("tent", 2)]
    log.reset([("a", "tent")])               # b erased
    assert log.suggest("te", 5) == []
    log.add("c", "tent")
    assert log.suggest("te", 5) == [("tent", 2)]


def test_new_queries_stop_at_max_queries_and_bad_sizes_are_refused():
    log = QuerySuggestions(min_users=2, max_queries=2)
    for query in ("a1", "a2", "a3"):
        log.add("u", query)
        log.add("v", query)
    assert [q for q, _ in log.suggest("a", 5)] == ["a1", "a2"]
    with pytest.raises(ValueError, match="min_users and max_queries must be >= 1"):
        QuerySuggestions(min_users=0)
    assert normalise("  Mixed\tCase  words ") == "mixed case words"
