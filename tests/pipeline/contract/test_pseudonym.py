"""Keyed pseudonyms of user ids (pipeline/contract/pseudonym.py)."""
import os
import stat

import pandas as pd
import pytest

from pipeline.contract import pseudonym
from pipeline.contract.pseudonym import Pseudonyms, PseudonymKeyError


def test_same_key_same_pseudonym_other_key_other_pseudonym():
    one, same, other = Pseudonyms(b"k" * 32), Pseudonyms(b"k" * 32), Pseudonyms(b"j" * 32)
    p = one("u00042")
    assert p == same("u00042") and p != other("u00042") and p != one("u00043")
    assert p.startswith("p_") and len(p) == pseudonym.PSEUDONYM_CHARS
    assert "u00042" not in p and one("") == ""
    assert one.key_id == same.key_id != other.key_id and len(one.key_id) == 8
    assert "k" * 8 not in repr(one) and one.key_id in repr(one)
    assert one("\udc80 odd") != one("odd")          # lone surrogates hash too


def test_column_maps_each_id_like_the_scalar_call():
    names = Pseudonyms(b"s" * 32)
    column = pd.Series(["a", "b", "a", "", "c"])
    assert names.column(column).tolist() == [names(v) for v in column]


def test_key_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "keys" / "pseudonym.key"
    written = pseudonym.write_new_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Pseudonyms.from_file(path)("u1") == written("u1")
    with pytest.raises(PseudonymKeyError, match="exists"):
        pseudonym.write_new_key(path)
    with pytest.raises(PseudonymKeyError, match="no such pseudonym key file.*new-key"):
        Pseudonyms.from_file(tmp_path / "missing.key")
    bad = tmp_path / "bad.key"
    bad.write_text("not hex\n")
    with pytest.raises(PseudonymKeyError, match="bad.key: expected 64 hex"):
        Pseudonyms.from_file(bad)
    bad.write_text("ab" * 8 + "\n")
    with pytest.raises(PseudonymKeyError, match="expected 64 hex characters, got 16"):
        Pseudonyms.from_file(bad)
    with pytest.raises(PseudonymKeyError, match="at least 16 bytes"):
        Pseudonyms(b"short")


def test_command_line_writes_a_key_and_prints_its_id(tmp_path, capsys):
    path = tmp_path / "p.key"
    assert pseudonym.main(["new-key", str(path)]) == 0
    assert pseudonym.main(["key-id", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == Pseudonyms.from_file(path).key_id and out[-1] in out[0]
    assert pseudonym.main(["new-key", str(path)]) == 2
    assert "exists" in capsys.readouterr().err
