"""Tests for pipeline/contract/fields.py on raw columns of every dtype the readers produce."""
import numpy as np
import pandas as pd

from pipeline.contract.fields import (attribute_text, normalise_categories, parse_bool,
                                    parse_number, parse_text, parse_timestamp)


def codes(parsed):
    """Row index -> issue codes."""
    out = {}
    for issue in parsed.issues:
        for i in np.flatnonzero(issue.mask):
            out.setdefault(int(i), []).append(issue.code)
    return out


def test_parse_text_mixed_objects():
    parsed = parse_text(pd.Series([" a ", 7, None, np.nan, "", 1.5, True, ["x"]], dtype=object))
    assert parsed.values.tolist() == ["a", "7", "", "", "", "", "", ""]
    assert parsed.absent.tolist() == [False, False, True, True, True, False, False, False]
    assert codes(parsed) == {5: ["wrong_type"], 6: ["wrong_type"], 7: ["wrong_type"]}


def test_parse_text_typed_columns():
    assert parse_text(pd.Series([1, 2])).values.tolist() == ["1", "2"]
    assert codes(parse_text(pd.Series([1.0, np.nan]))) == {0: ["wrong_type"]}


def test_category_lists_and_normalisation():
    parsed = parse_text(pd.Series([["A", "B"], "A>B >C", [1]], dtype=object), join_lists=True)
    assert codes(parsed) == {2: ["wrong_type"]}
    assert normalise_categories(parsed.values).tolist() == ["A > B", "A > B > C", ""]


def test_parse_number_text_and_typed():
    parsed = parse_number(pd.Series([" 1.5", "", "x", "nan", "-inf", 3, None, False],
                                    dtype=object))
    values = parsed.values.to_numpy()
    assert values[0] == 1.5 and values[5] == 3.0
    assert np.isnan(values[[1, 2, 3, 4, 6, 7]]).all()
    assert parsed.absent.tolist() == [False, True, False, False, False, False, True, False]
    assert codes(parsed) == {2: ["wrong_type"], 3: ["not_finite"], 4: ["not_finite"],
                             7: ["wrong_type"]}
    typed = parse_number(pd.Series([1.0, np.nan, np.inf]))
    assert typed.absent.tolist() == [False, True, False]
    assert codes(typed) == {2: ["not_finite"]}
    assert np.isnan(typed.values.iat[2])


def test_parse_bool_forms():
    parsed = parse_bool(pd.Series(["Yes", "no", "TRUE", "0", "", True, 1, 0.0, 2, "y"],
                                  dtype=object))
    np.testing.assert_array_equal(parsed.values.to_numpy(),
                                  [1, 0, 1, 0, np.nan, 1, 1, 0, np.nan, np.nan])
    assert parsed.absent.tolist() == [False] * 4 + [True] + [False] * 5
    assert codes(parsed) == {8: ["bad_boolean"], 9: ["bad_boolean"]}
    assert parse_bool(pd.Series([True, False])).values.tolist() == [1.0, 0.0]


def test_parse_timestamp_typed_datetimes():
    naive = pd.Series(pd.to_datetime(["2024-01-02 10:00:00", None]))
    aware = naive.dt.tz_localize("Europe/Paris")
    assert parse_timestamp(naive).values.tolist()[0] == 1704189600
    assert parse_timestamp(aware).values.tolist()[0] == 1704189600 - 3600
    assert parse_timestamp(naive).absent.tolist() == [False, True]


def test_parse_timestamp_numbers_and_objects():
    parsed = parse_timestamp(pd.Series([1704189600, 1704189600.7, -1, float("nan"), None,
                                        1.8e12, 1e11, "abc", True], dtype=object))
    values = parsed.values.to_numpy()
    assert values[:2].tolist() == [1704189600, 1704189600]
    assert parsed.absent.tolist() == [False] * 4 + [True] + [False] * 4
    assert codes(parsed) == {2: ["bad_timestamp"], 3: ["bad_timestamp"], 5: ["bad_timestamp"],
                             6: ["bad_timestamp"], 7: ["bad_timestamp"], 8: ["wrong_type"]}
    assert np.isnan(values[2:]).all()
    typed = parse_timestamp(pd.Series([1.0, np.nan]))      # a typed null is absent, not NaN
    assert typed.absent.tolist() == [False, True] and not typed.issues


def test_attribute_text():
    out = attribute_text(pd.Series([" x", 3, 2.5, None, np.nan, True, [1, 2], {"b": 1}],
                                   dtype=object))
    assert out.tolist() == ["x", "3", "2.5", "", "", "true", "[1, 2]", '{"b": 1}']
