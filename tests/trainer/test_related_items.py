"""trainer/related_items.py on tables small enough to follow by hand: the text neighbours
aligned from a text cache, and the related_items module with and without them (outputs,
shapes, padding, and a saved signature like the retrieval export's)."""
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from trainer import related_items as R
from trainer.candidates import CooccurrenceSource, TextNeighbourSource, TransitionSource

CATALOG = np.array([b"a", b"b", b"c", b"d"], dtype=object)
# The text cache: item texts by row (c: row 0, a: row 1, x: not in the catalog, b: no text);
# d is not cached. Cosines: (a, c) 0.6; b and d have no text.
CACHE_IDS = np.array([b"c", b"a", b"x", b"b"], dtype=object)
CACHE_ROWS = np.array([0, 1, 2, -1], np.int32)
EMBEDDINGS = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]], np.float32)
M = 3


def _tables():
    """Transitions a -> b (2), a -> c (1); co-occurrences (a, b) both ways; b engaged twice."""
    transitions = sp.csr_matrix(np.array([[0, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0],
                                          [0, 0, 0, 0]], np.float32))
    together = sp.csr_matrix(np.array([[0, 2, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0],
                                       [0, 0, 0, 0]], np.float32))
    return R.Tables(CATALOG, TransitionSource(transitions), CooccurrenceSource(together),
                    np.array([0, 2, 1, 0], np.int64), {"engaged_units": 3})


def _answer(module, ids):
    out = module(tf.constant(ids))
    return {key: value.numpy() for key, value in out.items()}


def test_text_embeddings_follow_the_catalog_order_with_zeros_for_items_without_text():
    aligned = R.text_embeddings(CATALOG, CACHE_IDS, CACHE_ROWS, EMBEDDINGS)
    np.testing.assert_array_equal(aligned, [EMBEDDINGS[1], [0, 0], EMBEDDINGS[0], [0, 0]])
    R.text_embeddings(CATALOG, CACHE_IDS, CACHE_ROWS, EMBEDDINGS[:2])  # x's row: unused
    with pytest.raises(ValueError, match="text rows must be < 1"):
        R.text_embeddings(CATALOG, CACHE_IDS, CACHE_ROWS, EMBEDDINGS[:1])
    table = R.text_table(CATALOG, CACHE_IDS, CACHE_ROWS, EMBEDDINGS, neighbours=5).table
    np.testing.assert_allclose(table.toarray(), [[0, 0, 0.6, 0], [0, 0, 0, 0],
                                                 [0.6, 0, 0, 0], [0, 0, 0, 0]], rtol=1e-6)


def test_with_texts_adds_the_text_table_and_its_counts():
    tables = R.with_texts(_tables(), CACHE_IDS, CACHE_ROWS, EMBEDDINGS, neighbours=M)
    assert isinstance(tables.texts, TextNeighbourSource) and tables.texts.table.shape == (4, 4)
    assert tables.report["engaged_units"] == 3                  # the fit's counts are kept
    assert tables.report["text_items"] == 2 and tables.report["text_pairs"] == 2
    assert tables.report["text_fit_seconds"] >= 0
    assert _tables().texts is None


def test_related_items_without_texts_serve_the_two_count_tables():
    module = R.RelatedItems(_tables(), M)
    out = _answer(module, ["a", "nope"])
    assert set(out) == set(R.OUTPUTS) and R.TEXT_IDS not in out
    assert out[R.TRANSITION_IDS].tolist() == [[b"b", b"c", b""], [b"", b"", b""]]
    np.testing.assert_array_equal(out[R.TRANSITION_WEIGHTS], [[2, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out[R.ENGAGEMENTS], [0, 0])


def test_related_items_with_texts_also_serve_the_text_neighbours():
    tables = R.with_texts(_tables(), CACHE_IDS, CACHE_ROWS, EMBEDDINGS, neighbours=M)
    out = _answer(R.RelatedItems(tables, M), ["a", "b", "c", "d", "nope"])
    assert set(out) == set(R.OUTPUTS) | {R.TEXT_IDS, R.TEXT_WEIGHTS}
    assert out[R.TEXT_IDS].shape == out[R.TEXT_WEIGHTS].shape == (5, M)
    assert out[R.TEXT_IDS].dtype == object and out[R.TEXT_WEIGHTS].dtype == np.float32
    assert out[R.TEXT_IDS].tolist() == [[b"c", b"", b""], [b"", b"", b""], [b"a", b"", b""],
                                        [b"", b"", b""], [b"", b"", b""]]
    np.testing.assert_allclose(out[R.TEXT_WEIGHTS][:, 0], [0.6, 0, 0.6, 0, 0], rtol=1e-6)
    assert not out[R.TEXT_WEIGHTS][:, 1:].any()                  # 0 padded
    assert out[R.TRANSITION_IDS][0].tolist() == [b"b", b"c", b""]   # the others unchanged


@pytest.mark.parametrize("texts", [False, True])
def test_the_signature_traces_saves_and_serves_its_outputs(tmp_path, texts):
    # As trainer/signatures.py export_retrieval wraps it.
    tables = _tables()
    if texts:
        tables = R.with_texts(tables, CACHE_IDS, CACHE_ROWS, EMBEDDINGS, neighbours=M)
    module = tf.Module()
    module.related = R.RelatedItems(tables, M)

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string,
                                                                 name="item_id")])
    def related_items(item_id):
        return module.related(item_id)

    module.related_items = related_items
    path = str(tmp_path / "model")
    tf.saved_model.save(module, path,
                        signatures={R.SIGNATURE: related_items.get_concrete_function()})
    out = tf.saved_model.load(path).signatures[R.SIGNATURE](item_id=tf.constant(["c", "?"]))
    expected = set(R.OUTPUTS) | ({R.TEXT_IDS, R.TEXT_WEIGHTS} if texts else set())
    assert set(out) == expected
    if texts:
        assert out[R.TEXT_IDS].numpy().tolist() == [[b"a", b"", b""], [b"", b"", b""]]
        np.testing.assert_allclose(out[R.TEXT_WEIGHTS].numpy()[:, 0], [0.6, 0], rtol=1e-6)
