"""QueryMatch: has-a-query flag and share of query words found in the item text."""
import numpy as np
import tensorflow as tf

from trainer.query_match import QueryMatch


def test_share_of_query_words_in_the_item_text():
    out = QueryMatch()(tf.constant(["Red lipstick", "", "gel polish", "a a b", "crème"]),
                       tf.constant(["lipstick, matte RED", "red", "", "b c", "Crème riche"]))
    np.testing.assert_allclose(out.numpy(), [[1, 1], [0, 0], [1, 0], [1, 0.5], [1, 1]])


def test_batches_without_any_words_and_unknown_batch_size():
    match = QueryMatch()
    np.testing.assert_array_equal(match(tf.constant(["", ""]), tf.constant(["", ""])).numpy(),
                                  np.zeros((2, 2)))
    traced = tf.function(match, input_signature=[tf.TensorSpec([None], tf.string)] * 2)
    out = traced(tf.constant(["a b", ""]), tf.constant(["b", "c"]))
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out.numpy(), [[1, 0.5], [0, 0]])
