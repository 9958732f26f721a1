"""Reader of the Beauty folder layout (errors name file:line) and the shop converter."""
import csv
import datetime
import hashlib
import os

import numpy as np
import pytest

from benchmarks import beauty_data
from benchmarks.beauty_data import BeautyDataError
from pipeline.contract import spec

HEADER = "item_id\titem_idx0\tasin\ttitle\tbrand\tcategories\tprice\tsales_rank\tsales_type\n"
ITEM_ROWS = [
    "1\t0\tA001\tRed Nail Polish\tOPI\tBeauty|Makeup|Nails\t12.0\t1.0\tBeauty\n",
    "2\t1\tA002\tBlue Nail Polish\tOPI\tBeauty|Makeup|Nails\t\t2.0\tBeauty\n",
    "3\t2\tA003\t\tAcme\tBeauty|Skin Care\t5.5\t3.0\tBeauty\n",
    "4\t3\tA004\tShampoo\t\t\t8.0\t4.0\tBeauty\n",
]
SEQUENCES = "1 1 2 3\n2 2 4 1 3\n3 4 3 2\n"


def write_folder(path, items=None, sequences=SEQUENCES, header=HEADER):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "items.tsv"), "w", encoding="utf-8") as f:
        f.write(header + "".join(ITEM_ROWS if items is None else items))
    with open(os.path.join(path, "sequential_data.txt"), "w", encoding="utf-8") as f:
        f.write(sequences)
    return str(path)


def test_load_reads_sequences_as_zero_based_indices(tmp_path):
    data = beauty_data.load_beauty(write_folder(tmp_path))
    assert data.user_ids == ["1", "2", "3"]
    assert [s.tolist() for s in data.sequences] == [[0, 1, 2], [1, 3, 0, 2], [3, 2, 1]]
    assert data.n_items == 4 and data.n_interactions == 10
    assert data.items.asin[2] == "A003"
    assert data.items.categories[0] == ["Beauty", "Makeup", "Nails"]
    assert data.items.categories[3] == []
    assert np.isnan(data.items.price[1]) and data.items.price[2] == 5.5


def test_max_users_is_a_seeded_subset_in_file_order(tmp_path):
    folder = write_folder(tmp_path, sequences="".join(f"{u} 1 2 3\n" for u in range(1, 21)))
    a = beauty_data.load_beauty(folder, max_users=5, seed=3)
    b = beauty_data.load_beauty(folder, max_users=5, seed=3)
    c = beauty_data.load_beauty(folder, max_users=5, seed=4)
    assert a.user_ids == b.user_ids != c.user_ids
    assert len(a.user_ids) == 5 and a.user_ids == sorted(a.user_ids, key=int)
    assert a.n_items == 4                      # the catalog is never subsampled


@pytest.mark.parametrize("sequences, line, message", [
    ("1 1 2\n2 1 x\n", 2, "item id 'x' is not an integer"),
    ("1 1 2\n2 1 9\n", 2, "outside 1..4"),
    ("1 1 2\n1 3 4\n", 2, "already on line 1"),
    ("1 1 2\n\n", 2, "empty line"),
    ("1 1 2\n2 3\n3\n", 3, "has no items"),
    ("1 1 0\n", 1, "outside 1..4"),
])
def test_sequence_errors_name_file_and_line(tmp_path, sequences, line, message):
    folder = write_folder(tmp_path, sequences=sequences)
    with pytest.raises(BeautyDataError, match=message) as err:
        beauty_data.load_beauty(folder)
    assert f"sequential_data.txt:{line}:" in str(err.value)


@pytest.mark.parametrize("rows, line, message", [
    (ITEM_ROWS[:1] + ["3\t2\tA003\tX\tB\tC\t1.0\t1\tBeauty\n"], 3, "expected 2"),
    (ITEM_ROWS[:1] + ["2\t1\tA002\tX\tB\tC\t1.0\n"], 3, "expected 9 tab-separated fields"),
    (ITEM_ROWS[:1] + ["2\t1\tA002\tX\tB\tC\tcheap\t1\tBeauty\n"], 3, "price 'cheap'"),
    (ITEM_ROWS[:1] + ["2\t1\tA002\tX\tB\tC\t-1\t1\tBeauty\n"], 3, "must be a finite number"),
])
def test_item_errors_name_file_and_line(tmp_path, rows, line, message):
    folder = write_folder(tmp_path, items=rows, sequences="1 1 2\n")
    with pytest.raises(BeautyDataError, match=message) as err:
        beauty_data.load_beauty(folder)
    assert f"items.tsv:{line}:" in str(err.value)


def test_missing_header_column_and_missing_files(tmp_path):
    folder = write_folder(tmp_path / "a")
    with open(os.path.join(folder, "items.tsv"), "w") as f:
        f.write("item_id\ttitle\n1\tX\n")
    with pytest.raises(BeautyDataError, match=r"items.tsv:1: header lacks column\(s\) brand"):
        beauty_data.load_beauty(folder)
    with pytest.raises(BeautyDataError, match="not a directory"):
        beauty_data.load_beauty(str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(BeautyDataError, match="items.tsv: file not found"):
        beauty_data.load_beauty(str(tmp_path / "empty"))


def test_event_timestamps_strictly_increase_and_end_aligned():
    a = beauty_data.event_timestamps(5, user_index=0)
    b = beauty_data.event_timestamps(3, user_index=7)
    assert all(x < y for x, y in zip(a, a[1:]))
    cut = beauty_data.EXPORT_END_DAY.timestamp() - beauty_data.DAY_SECONDS / 2
    assert [t > cut for t in a] == [False] * 4 + [True]
    assert [t > cut for t in b] == [False] * 2 + [True]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_to_shop_writes_the_contract_columns(tmp_path):
    data = beauty_data.load_beauty(write_folder(tmp_path / "beauty"))
    counts = beauty_data.to_shop(data, str(tmp_path / "shop"))
    assert counts == {"items": 4, "events": 10, "users": 3, "held_out": 0,
                      "imputed_prices": 1, "filled_titles": 1}
    items = read_csv(tmp_path / "shop" / "items.csv")
    events = read_csv(tmp_path / "shop" / "events.csv")
    assert tuple(items[0]) == spec.ITEM_COLUMNS
    assert tuple(events[0]) == spec.EVENT_COLUMNS
    assert items[0]["categories"] == "Beauty > Makeup > Nails"
    assert {i["description"] for i in items} == {""}      # no description column
    assert items[1]["price"] == "12.00"          # median of its category path
    assert items[2]["title"] == "Acme Skin Care"
    assert [e["item_id"] for e in events[:3]] == ["A001", "A002", "A003"]
    assert {e["event_type"] for e in events} == {"purchase"}
    for user in ("1", "2", "3"):
        stamps = [datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
                  for e in events if e["user_id"] == user]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_to_shop_output_passes_the_shop_data_contract(tmp_path):
    contract = pytest.importorskip("pipeline.contract.load")
    data = beauty_data.load_beauty(write_folder(tmp_path / "beauty"))
    beauty_data.to_shop(data, str(tmp_path / "shop"))
    tables = contract.load_shop(tmp_path / "shop")
    assert len(tables.items) == 4 and len(tables.events) == 10
    assert tables.events["timestamp"].is_monotonic_increasing


def test_to_shop_refuses_the_repository(tmp_path):
    data = beauty_data.load_beauty(write_folder(tmp_path / "beauty"))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with pytest.raises(BeautyDataError, match="research-only"):
        beauty_data.to_shop(data, os.path.join(repo, "sample_shop_beauty"))
    assert not os.path.exists(os.path.join(repo, "sample_shop_beauty"))


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit, match="error: .*not a directory"):
        beauty_data.main(["--data", str(tmp_path / "nope"), "--to-shop", str(tmp_path / "o")])
    beauty_data.main(["--data", write_folder(tmp_path / "b"), "--to-shop", str(tmp_path / "o")])
    assert "wrote 4 items (1 prices imputed, 1 empty titles filled)" in capsys.readouterr().out


def load_contract(folder):
    """The shop data contract's check of a written folder (fails on any bad row)."""
    return pytest.importorskip("pipeline.contract.load").load_shop(folder)


SMALL_HEADER = "item_id\tasin\ttitle\tbrand\tcategories\tprice\tdescription\n"


def small_items(categories=("Beauty",) * 4, prices=("",) * 4, descriptions=("",) * 4):
    return [f"{i + 1}\tB{i:03d}\tItem {i}\tBrand\t{c}\t{p}\t{d}\n"
            for i, (c, p, d) in enumerate(zip(categories, prices, descriptions))]


def test_description_column_is_read_and_written(tmp_path):
    rows = small_items(prices=("1", "2", "3", "4"),
                       descriptions=("Long-lasting, \"glossy\" polish.", "", "  x  ", "Ünïcode"))
    data = beauty_data.load_beauty(write_folder(tmp_path / "b", rows, header=SMALL_HEADER))
    assert data.items.description == ["Long-lasting, \"glossy\" polish.", "", "  x  ", "Ünïcode"]
    beauty_data.to_shop(data, str(tmp_path / "shop"))
    written = read_csv(tmp_path / "shop" / "items.csv")
    assert [i["description"] for i in written] == data.items.description
    tables = load_contract(tmp_path / "shop")
    assert tables.items["description"].tolist()[0] == "Long-lasting, \"glossy\" polish."


def test_description_absent_is_empty_and_items_default_keeps_working(tmp_path):
    data = beauty_data.load_beauty(write_folder(tmp_path))
    assert data.items.description == [""] * 4
    items = beauty_data.Items(item_id=["1", "2"], asin=["A", "B"], title=["a", "b"],
                              brand=["", ""], categories=[[], []], price=np.asarray([1.0, 2.0]))
    assert items.description == ["", ""] and len(items) == 2


def test_too_long_description_fails_naming_the_item_line(tmp_path):
    cap = spec.MAX_CHARS[spec.DESCRIPTION]
    rows = small_items(prices=("1",) * 4, descriptions=("ok", "", "d" * (cap + 1), ""))
    data = beauty_data.load_beauty(write_folder(tmp_path / "b", rows, header=SMALL_HEADER))
    with pytest.raises(BeautyDataError) as err:
        beauty_data.to_shop(data, str(tmp_path / "shop"))
    message = str(err.value)
    assert "items.tsv:4: item_id 3: description has" in message
    assert f"{cap + 1} characters" in message and f"at most {cap}" in message
    assert "does not truncate" in message
    assert not (tmp_path / "shop").exists()          # nothing half-written
    rows[2] = rows[2].replace("d" * (cap + 1), " " + "d" * cap + " ")   # at the cap after trim
    data = beauty_data.load_beauty(write_folder(tmp_path / "b", rows, header=SMALL_HEADER))
    beauty_data.to_shop(data, str(tmp_path / "shop"))
    assert len(load_contract(tmp_path / "shop").items) == 4


def test_every_price_empty_is_imputed_as_zero_end_to_end(tmp_path, capsys):
    folder = write_folder(tmp_path / "b", small_items(), header=SMALL_HEADER)
    data = beauty_data.load_beauty(folder)
    assert np.isnan(data.items.price).all()
    prices, imputed = beauty_data.shop_prices(data.items)
    assert prices.tolist() == [0.0] * 4 and imputed == 4
    counts = beauty_data.to_shop(data, str(tmp_path / "shop"))
    assert counts["imputed_prices"] == 4
    assert [i["price"] for i in read_csv(tmp_path / "shop" / "items.csv")] == ["0.00"] * 4
    tables = load_contract(tmp_path / "shop")
    assert len(tables.items) == 4 and len(tables.events) == 10
    assert (tables.items["price"] == 0.0).all()
    beauty_data.main(["--data", folder, "--to-shop", str(tmp_path / "cli")])
    assert "(4 prices imputed," in capsys.readouterr().out


DEEP = "Beauty|Skin Care|Face|Moisturizers|Night Creams"


@pytest.mark.parametrize("categories, expected", [
    (("Beauty",) * 4, ["Beauty"] * 4),
    ((DEEP, DEEP, "Beauty|Hair", DEEP),
     [" > ".join(DEEP.split("|"))] * 2 + ["Beauty > Hair", " > ".join(DEEP.split("|"))]),
    (("", "Beauty", "", DEEP), ["", "Beauty", "", " > ".join(DEEP.split("|"))]),
    (("",) * 4, [""] * 4),
])
def test_category_depths_pass_the_shop_data_contract(tmp_path, categories, expected):
    rows = small_items(categories=categories, prices=("1", "", "3", ""))
    data = beauty_data.load_beauty(write_folder(tmp_path / "b", rows, header=SMALL_HEADER))
    assert [len(c) for c in data.items.categories] == [len(c.split("|")) if c else 0
                                                        for c in categories]
    beauty_data.to_shop(data, str(tmp_path / "shop"))
    assert [i["categories"] for i in read_csv(tmp_path / "shop" / "items.csv")] == expected
    tables = load_contract(tmp_path / "shop")
    assert tables.items["categories"].tolist() == expected
    assert len(tables.events) == 10


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_hold_out_last_is_the_full_export_minus_each_users_last_rows(tmp_path, n):
    data = beauty_data.load_beauty(write_folder(tmp_path / "b"))   # lengths 3, 4, 3
    beauty_data.to_shop(data, str(tmp_path / "full"))
    counts = beauty_data.to_shop(data, str(tmp_path / "held"), hold_out_last=n)
    full = read_csv(tmp_path / "full" / "events.csv")
    held = read_csv(tmp_path / "held" / "events.csv")
    expected = []
    for user in data.user_ids:
        rows = [e for e in full if e["user_id"] == user]
        expected += rows[:max(len(rows) - n, 0)]
    assert held == expected                       # same rows, timestamps and sessions
    assert counts["events"] == len(held) and counts["held_out"] == len(full) - len(held)
    assert counts["held_out"] == sum(min(n, len(s)) for s in data.sequences)
    assert counts["users"] == sum(len(s) > n for s in data.sequences)
    assert read_csv(tmp_path / "held" / "items.csv") == read_csv(tmp_path / "full" / "items.csv")
    if held:
        assert len(load_contract(tmp_path / "held").events) == len(held)


def test_hold_out_last_zero_is_the_full_export_and_bad_values_fail(tmp_path, capsys):
    data = beauty_data.load_beauty(write_folder(tmp_path / "b"))
    beauty_data.to_shop(data, str(tmp_path / "full"))
    assert beauty_data.to_shop(data, str(tmp_path / "zero"), hold_out_last=0)["held_out"] == 0
    assert (read_csv(tmp_path / "zero" / "events.csv")
            == read_csv(tmp_path / "full" / "events.csv"))
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="hold_out_last must be an integer >= 0"):
            beauty_data.to_shop(data, str(tmp_path / "bad"), hold_out_last=bad)
    assert not (tmp_path / "bad").exists()
    folder = str(tmp_path / "b")
    beauty_data.main(["--data", folder, "--to-shop", str(tmp_path / "cli"),
                      "--hold-out-last", "1"])
    assert "7 purchase events (3 held out: each user's last 1) of 3 users" in \
        capsys.readouterr().out
    assert len(read_csv(tmp_path / "cli" / "events.csv")) == 7
    with pytest.raises(SystemExit):
        beauty_data.main(["--data", folder, "--to-shop", str(tmp_path / "cli"),
                          "--hold-out-last", "-1"])
    assert "--hold-out-last must be >= 0" in capsys.readouterr().err


def test_describe_names_the_data_set(tmp_path):
    folder = write_folder(tmp_path / "my_shop")
    data = beauty_data.load_beauty(folder, max_users=2)
    described = beauty_data.describe(folder, data)
    sha = {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
           for name in ("sequential_data.txt", "items.tsv")}
    assert described == {"title": "my_shop", "path": os.path.abspath(folder), "users": 2,
                         "items": 4, "interactions": data.n_interactions, "sha256": sha}
    with open(os.path.join(folder, "PROVENANCE.md"), "w", encoding="utf-8") as f:
        f.write("Some preamble\n\n# My Shop Export, 2024 #\n\n## Files\n")
    assert beauty_data.describe(folder, data)["title"] == "My Shop Export, 2024"
    with open(os.path.join(folder, "PROVENANCE.md"), "w", encoding="utf-8") as f:
        f.write("no heading here\n")
    assert beauty_data.describe(folder + os.sep, data)["title"] == "my_shop"
