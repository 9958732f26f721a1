"""Reader of the Beauty folder layout (errors name file:line) and the shop converter."""
import csv
import datetime
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


def write_folder(path, items=None, sequences=SEQUENCES):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "items.tsv"), "w", encoding="utf-8") as f:
        f.write(HEADER + "".join(ITEM_ROWS if items is None else items))
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
    assert counts == {"items": 4, "events": 10, "users": 3, "imputed_prices": 1,
                      "filled_titles": 1}
    items = read_csv(tmp_path / "shop" / "items.csv")
    events = read_csv(tmp_path / "shop" / "events.csv")
    assert tuple(items[0]) == spec.ITEM_COLUMNS
    assert tuple(events[0]) == spec.EVENT_COLUMNS
    assert items[0]["categories"] == "Beauty > Makeup > Nails"
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
