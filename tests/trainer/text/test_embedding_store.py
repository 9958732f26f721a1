"""The store of encoded texts (trainer/text/embedding_store.py) and encode_tables reading it:
stored texts are read, not encoded; new ones are encoded and added; bad shards cost an
encoding, never a run."""
import os

import numpy as np
import pytest

from tests.trainer.text.encoder_fixture import SEQ_LEN, encoder_cache
from trainer.text import cache as text_cache
from trainer.text.embedding_store import EmbeddingStore, STORE_DIR, text_key
from trainer.text.encoder import ensure_text_encoder

TEXTS = np.array([b"Velora Red Matte Lipstick | Velora | Beauty > Makeup > Lips",
                  b"Trailhead Green 2-Person Dome Tent | Trailhead",
                  b"Mug", "red lipstick".encode()], dtype=object)


def test_added_embeddings_are_found_by_text_str_or_bytes(tmp_path):
    store = EmbeddingStore(str(tmp_path), width=3)
    assert store.lookup([b"a"])[1].tolist() == [False]                 # empty store
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = store.add([b"a", "b"], values)
    assert os.path.dirname(path) == os.path.join(str(tmp_path), STORE_DIR)
    got, found = store.lookup(["b", b"x", "a", b"b"])
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(got, [values[1], [0, 0, 0], values[0], values[1]])
    assert text_key("é") == text_key("é".encode("utf-8")) != text_key("e")
    assert store.add([], np.zeros([0, 3])) == "" and len(store.shards()) == 1
    with pytest.raises(ValueError, match=r"embeddings of shape \(1, 2\) for 1 texts"):
        store.add([b"c"], np.zeros([1, 2]))


def test_the_oldest_shard_decides_a_text_stored_twice(tmp_path):
    store = EmbeddingStore(str(tmp_path), width=2)
    store.add([b"a"], [[1.0, 1.0]])
    store.add([b"a", b"b"], [[2.0, 2.0], [3.0, 3.0]])
    got, found = store.lookup([b"a", b"b"])
    assert found.all() and got.tolist() == [[1.0, 1.0], [3.0, 3.0]]


def test_unreadable_or_misshapen_shards_are_skipped_with_a_warning(tmp_path, caplog):
    store = EmbeddingStore(str(tmp_path), width=2)
    store.add([b"a"], [[1.0, 2.0]])
    with open(os.path.join(store.directory, "shard-0-broken.npz"), "wb") as f:
        f.write(b"not a zip file")
    np.savez(os.path.join(store.directory, "shard-1-wide.npz"),
             keys=np.zeros([1, 16], np.uint8), embeddings=np.zeros([1, 5], np.float32))
    got, found = store.lookup([b"a", b"b"])
    assert found.tolist() == [True, False] and got[0].tolist() == [1.0, 2.0]
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "shard-0-broken.npz" in warnings and "shard-1-wide.npz" in warnings


def test_batches_hold_texts_of_one_length_shortest_first():
    lengths = np.array([5, 3, 5, 5, 3, 9])
    batches = [b.tolist() for b in text_cache.same_length_batches(lengths, batch_size=2)]
    assert batches == [[1, 4], [0, 2], [3], [5]]
    assert list(text_cache.same_length_batches(np.zeros([0], int), 4)) == []


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return ensure_text_encoder(encoder_cache(tmp_path_factory), SEQ_LEN)


@pytest.mark.slow
def test_encode_tables_reads_stored_texts_and_encodes_only_new_ones(paths, tmp_path):
    store = EmbeddingStore(str(tmp_path), paths.info()["hidden_dim"])
    fresh = text_cache.encode_tables(TEXTS, paths, "frozen")
    first = text_cache.encode_tables(TEXTS[:3], paths, "frozen", store=store)
    assert first.stored_rows == 0 and len(store.shards()) == 1
    # bit for bit: a text's encoding does not depend on the texts encoded with it
    np.testing.assert_array_equal(first.embeddings, fresh.embeddings[:3])
    # The query is new: encoded and stored; the three item texts are read as stored.
    second = text_cache.encode_tables(TEXTS, paths, "frozen", store=store)
    assert second.stored_rows == 3 and len(store.shards()) == 2
    np.testing.assert_array_equal(second.embeddings[:3], first.embeddings)
    np.testing.assert_array_equal(second.embeddings, fresh.embeddings)
    again = text_cache.encode_tables(TEXTS[::-1], paths, "frozen", store=store)
    assert again.stored_rows == 4 and len(store.shards()) == 2     # nothing new to store
    np.testing.assert_array_equal(again.embeddings[::-1], second.embeddings)
    # full mode still tokenises every text; top_layers still runs every text's lower layers
    full = text_cache.encode_tables(TEXTS, paths, "full", store=store)
    np.testing.assert_array_equal(full.token_ids,
                                  text_cache.encode_tables(TEXTS, paths, "full").token_ids)
    top = text_cache.encode_tables(TEXTS, paths, "top_layers", 4, store=store)
    plain = text_cache.encode_tables(TEXTS, paths, "top_layers", 4)
    assert top.stored_rows == 4
    np.testing.assert_array_equal(top.lower_hidden, plain.lower_hidden)
    np.testing.assert_array_equal(top.embeddings, second.embeddings)


@pytest.mark.slow
def test_only_the_first_texts_use_the_store_when_asked(paths, tmp_path):
    """A run's TextCatalog stores its item texts, never its search queries (personal data)."""
    store = EmbeddingStore(str(tmp_path), paths.info()["hidden_dim"])
    tables = text_cache.encode_tables(TEXTS, paths, "frozen", store=store, stored_texts=3)
    assert store.lookup(TEXTS)[1].tolist() == [True, True, True, False]
    again = text_cache.encode_tables(TEXTS, paths, "frozen", store=store, stored_texts=3)
    assert again.stored_rows == 3
    np.testing.assert_array_equal(again.embeddings, tables.embeddings)
