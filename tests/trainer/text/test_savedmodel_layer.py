"""SavedModelLayer over the exported MiniLM: trainable, frozen and top-layers modes (tf-keras)."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from trainer.text.savedmodel_layer import SavedModelLayer
from trainer.text.encoder import encoder_stages, ensure_text_encoder, load_encoder

SEQ_LEN = 24          # same export as tests/trainer/text/test_encoder.py (shared cache)
TEXTS = tf.constant(["red matte lipstick", "naïve café soap", "Crème brûlée scented candle",
                     "Stainless Steel Water Bottle 750ml"])

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def minilm_paths(tmp_path_factory):
    return ensure_text_encoder(tmp_path_factory.getbasetemp() / "text_encoder_cache", SEQ_LEN)


@pytest.fixture(scope="module")
def tokens(minilm_paths):
    return SavedModelLayer(minilm_paths.tokenizer)(TEXTS)


def _similarity_loss(embeddings):
    """In-batch softmax loss over [B, H] embeddings against a shifted copy of themselves."""
    logits = tf.matmul(embeddings, tf.roll(embeddings, 1, axis=0), transpose_b=True) / 0.05
    labels = tf.range(tf.shape(embeddings)[0])
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def test_gradients_reach_every_encoder_variable(minilm_paths, tokens):
    encoder = SavedModelLayer(minilm_paths.encoder, trainable=True, output_key="embedding")
    with tf.GradientTape() as tape:
        loss = _similarity_loss(encoder(tokens, training=True))
    grads = tape.gradient(loss, encoder.trainable_weights)
    assert len(encoder.trainable_weights) == len(encoder._obj.trainable_variables) == 101
    missing = [w.name for w, g in zip(encoder.trainable_weights, grads)
               if g is None or float(tf.norm(tf.convert_to_tensor(g))) == 0.0]
    assert not missing
    assert len(encoder.non_trainable_weights) == 19          # dropout seed states


def test_frozen_encoder_gets_no_gradient_and_no_dropout(minilm_paths, tokens):
    encoder = SavedModelLayer(minilm_paths.encoder, trainable=False, output_key="embedding")
    assert encoder.trainable_weights == []
    variables = [v for v in encoder.non_trainable_weights if v.dtype.is_floating]
    assert len(variables) == 101
    with tf.GradientTape() as tape:
        tape.watch(variables)
        out = encoder(tokens, training=True)
        loss = _similarity_loss(out)
    assert all(g is None for g in tape.gradient(loss, variables))
    np.testing.assert_allclose(out, encoder(tokens, training=False), atol=1e-6)


def test_training_flag_switches_dropout(minilm_paths, tokens):
    encoder = SavedModelLayer(minilm_paths.encoder, trainable=True, output_key="embedding")
    a, b = encoder(tokens, training=True), encoder(tokens, training=True)
    assert float(tf.reduce_max(tf.abs(a - b))) > 1e-3
    np.testing.assert_allclose(encoder(tokens, training=False), encoder(tokens), atol=1e-6)


def test_top_layers_mode_trains_only_the_top_layers(minilm_paths, tokens):
    lower, upper = encoder_stages(load_encoder(minilm_paths), num_frozen_layers=4)
    cached = lower(tokens, training=False)                    # computed once, cacheable
    top = SavedModelLayer(upper, trainable=True, output_key="embedding")
    assert len(top.trainable_weights) == 2 * 16
    top_ids = {id(v) for v in upper.trainable_variables}
    assert not top_ids & {id(v) for v in lower.variables}
    before = [v.numpy() for v in lower.trainable_variables]
    optimizer = tf_keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss = _similarity_loss(top(cached, training=True))
    grads = tape.gradient(loss, top.trainable_weights)
    assert all(g is not None for g in grads)
    optimizer.apply_gradients(zip(grads, top.trainable_weights))
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, lower.trainable_variables))


def test_checkpoint_restores_encoder_weights(minilm_paths, tokens, tmp_path):
    encoder = SavedModelLayer(minilm_paths.encoder, trainable=True, output_key="embedding")
    text = tf_keras.Input(shape=(), dtype=tf.string)
    model = tf_keras.Model(text, encoder(SavedModelLayer(minilm_paths.tokenizer)(text)))
    expected = model(TEXTS).numpy()
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    weight = encoder.trainable_weights[0]
    weight.assign(tf.zeros_like(weight))
    assert not np.allclose(model(TEXTS).numpy(), expected)
    tf.train.Checkpoint(model=model).restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(model(TEXTS).numpy(), expected)


def test_unknown_output_key_is_a_clear_error(minilm_paths, tokens):
    encoder = SavedModelLayer(minilm_paths.encoder, output_key="pooled_output")
    with pytest.raises(KeyError, match="pooled_output.*embedding"):
        encoder(tokens)
