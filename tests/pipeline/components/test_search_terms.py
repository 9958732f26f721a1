"""SearchTerms' aggregation (pipeline/components/search_terms.py): which search texts an item
keeps, and what the file never holds."""
import json

import pandas as pd
import pytest

from pipeline.components.search_terms import collect_terms


def _units(rows):
    """(user, item, query, engaged) tuples -> the columns read_units gives."""
    return pd.DataFrame(rows, columns=["user_id", "item_id", "query", "engaged"])


def test_an_item_keeps_the_texts_enough_users_chose_it_after_most_users_first():
    units = _units([
        ("u1", "fan", "Ceiling  Fan", True), ("u2", "fan", "ceiling fan", True),
        ("u3", "fan", "ceiling fan", True),
        ("u1", "fan", "fan with light", True), ("u4", "lamp", "fan with light", True),
        ("u5", "lamp", "lamp", True), ("u6", "lamp", "lamp", False),    # one user engaged
        ("u7", "fan", "", True), ("u8", "fan", "", True),             # no search before
        ("u9", "fan", "anna's gift", True),                           # one user only
    ])
    report = collect_terms(units, min_users=2, max_per_item=5)
    assert report["items"] == {"fan": ["ceiling fan", "fan with light"],
                               "lamp": ["fan with light"]}
    assert (report["terms"], report["terms_below_min_users"]) == (2, 2)   # lamp, anna's gift
    assert (report["items_with_terms"], report["pairs"]) == (2, 3)
    assert report["engaged_units_after_a_search"] == 7


def test_max_per_item_keeps_the_most_chosen_and_anonymous_users_do_not_count():
    rows = [(f"u{i}", "fan", "a", True) for i in range(3)]
    rows += [(f"u{i}", "fan", "b", True) for i in range(2)]
    rows += [(f"u{i}", "fan", "c", True) for i in range(4)]
    rows += [("", "fan", "d", True), ("", "fan", "d", True), ("u1", "fan", "d", True)]
    report = collect_terms(_units(rows), min_users=2, max_per_item=2)
    assert report["items"] == {"fan": ["c", "a"]}
    assert "d" not in json.dumps(report["items"])       # one known user: below the threshold


def test_the_file_names_no_user():
    units = _units([("p_0123456789abcdef", "fan", "ceiling fan", True),
                    ("p_fedcba9876543210", "fan", "ceiling fan", True)])
    text = json.dumps(collect_terms(units, 2, 32))
    assert "p_0123" not in text and "p_fedc" not in text and "ceiling fan" in text


@pytest.mark.parametrize("min_users, max_per_item", [(0, 5), (2, 0)])
def test_bad_settings_are_refused(min_users, max_per_item):
    with pytest.raises(ValueError, match="min_users and max_per_item"):
        collect_terms(_units([]), min_users, max_per_item)
