"""Model building blocks: history encoder, hashed text, loss scaling, models under a strategy."""
import numpy as np
import pytest
import tensorflow as tf

from trainer import features as F
from trainer.config import RankingConfig, RetrievalConfig
from trainer.layers import HashedBagOfWords, HistoryEncoder, global_batch_mean

L = F.HISTORY_LENGTH


def _encoder(dim=8):
    tf.keras.utils.set_random_seed(1)
    items = tf.keras.layers.Embedding(20, dim)
    return HistoryEncoder(items, L, dim), items


def _history(*rows):
    return tf.constant([list(r) + [0] * (L - len(r)) for r in rows], tf.int64)


def test_history_encoder_shapes_empty_history_and_order():
    encoder, _ = _encoder()
    out = encoder(_history([3, 5, 7], [], [5, 3, 7])).numpy()
    assert out.shape == (3, 8)
    np.testing.assert_array_equal(out[1], np.zeros(8))      # no history -> 0
    assert not np.allclose(out[0], out[2])                   # order matters


def test_history_encoder_ignores_padding_embedding():
    encoder, items = _encoder()
    history = _history([3, 5], [4])
    before = encoder(history).numpy()
    table = items.embeddings.numpy()
    table[0] = 100.0                                          # padding row
    items.embeddings.assign(table)
    np.testing.assert_allclose(encoder(history).numpy(), before, atol=1e-6)


def test_hashed_bag_of_words():
    tf.keras.utils.set_random_seed(1)
    text = HashedBagOfWords(64, 4)
    out = text(tf.constant(["Red Lipstick!", "red   lipstick", "", "crème"])).numpy()
    assert out.shape == (4, 4)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)   # case and punctuation ignored
    np.testing.assert_array_equal(out[2], np.zeros(4))
    assert np.abs(out[3]).sum() > 0                          # non-ASCII words are tokens


def test_global_batch_mean_without_strategy():
    assert float(global_batch_mean(tf.constant(12.0), 4)) == pytest.approx(3.0)


def _batch(n=8):
    rng = np.random.default_rng(0)
    return {
        F.idx(F.USER_ID): tf.constant(rng.integers(1, 5, n)),
        F.idx(F.HISTORY_ITEM_IDS): tf.constant(rng.integers(0, 9, (n, L))),
        F.idx(F.ITEM_ID): tf.constant(np.arange(1, n + 1) % 9),
        F.idx(F.BRAND): tf.constant(rng.integers(0, 3, n)),
        F.idx(F.CATEGORY): tf.constant(rng.integers(0, 3, n)),
        F.idx(F.TOP_CATEGORY): tf.constant(rng.integers(0, 3, n)),
        F.PRICE_Z: tf.constant(rng.normal(size=n), tf.float32),
        F.IN_STOCK: tf.constant(rng.integers(0, 2, n)),
        F.QUERY: tf.constant(["serum"] * (n // 2) + [""] * (n - n // 2)),
        F.TITLE: tf.constant([f"item {i}" for i in range(n)]),
        F.BRAND: tf.constant(["Acme"] * n),
        F.CATEGORY: tf.constant(["Skin > Serum"] * n),
        F.CLICKED: tf.constant(rng.integers(0, 2, n)),
        F.PURCHASED: tf.constant(rng.integers(0, 2, n)),
        F.HAS_RATING: tf.constant(rng.integers(0, 2, n)),
        F.RATING: tf.constant(rng.integers(1, 6, n), tf.float32),
    }


BUCKETS = {F.USER_ID: 6, F.ITEM_ID: 10, F.BRAND: 4, F.CATEGORY: 4, F.TOP_CATEGORY: 4}


@pytest.mark.parametrize("kind", ["retrieval", "ranking"])
def test_models_train_under_a_distribution_strategy(kind):
    from trainer import ranking, retrieval  # pylint: disable=import-outside-toplevel
    module, config = ((retrieval, RetrievalConfig(embedding_dim=8, hidden_units=(8,),
                                                  text_mode="none"))
                      if kind == "retrieval" else
                      (ranking, RankingConfig(embedding_dim=8, hidden_units=(8,),
                                              use_text_embedding=False)))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    model = module.build_model(config, BUCKETS, strategy)
    dataset = tf.data.Dataset.from_tensors(_batch()).repeat()
    history = model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.trainable_variables
    assert all(strategy.extended.variable_created_in_scope(v)
               for v in model.trainable_variables)


@pytest.mark.parametrize("parts", [
    {"use_user_id": False}, {"use_history": False}, {"use_text": False},
    {"use_query_text": False}, {"use_item_id": False}, {"use_item_features": False}])
def test_retrieval_tower_parts_switch_off(parts):
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    config = RetrievalConfig.from_custom_config(dict(embedding_dim=8, hidden_units=[],
                                                     text_mode="none", **parts))
    model = retrieval.build_model(config, BUCKETS)
    queries = model.query_tower(_batch()).numpy()
    candidates = model.candidate_tower(_batch()).numpy()
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(candidates, axis=1), 1.0, rtol=1e-5)
    names = " ".join(v.name for v in model.trainable_variables)
    assert ("user_embedding" in names) == config.use_user_id
    assert ("brand_embedding" in names) == config.use_item_features
    assert ("token_embedding" in names) == (config.use_text or config.use_query_text)


def test_ranking_outputs_probabilities_per_head():
    from trainer import ranking  # pylint: disable=import-outside-toplevel
    model = ranking.build_model(RankingConfig(embedding_dim=8, hidden_units=(8,),
                                              use_text_embedding=False), BUCKETS)
    out = model(_batch(5))
    assert set(out) == {"click", "purchase", "rating"}
    for value in (out["click"], out["purchase"]):
        assert value.shape == (5,) and np.all((value.numpy() > 0) & (value.numpy() < 1))
    assert np.isfinite(float(model.compute_loss(_batch(5))))


def test_history_encoder_pools_texts_with_its_weights():
    encoder, _ = _encoder(dim=4)
    encoder.text_projection = tf.keras.layers.Dense(4, use_bias=False)
    history = _history([3, 5], [])
    texts = tf.random.stateless_normal([2, L, 6], seed=[1, 2])
    summary, text = encoder(history, texts)
    assert summary.shape == (2, 4) and text.shape == (2, 6)
    np.testing.assert_array_equal(text.numpy()[1], np.zeros(6))       # empty history
    assert not np.allclose(summary.numpy()[0], encoder(history).numpy()[0])  # texts count
    real = texts.numpy()[0, :2]                                        # the 2 real positions
    coefficients, *_ = np.linalg.lstsq(real.T, text.numpy()[0], rcond=None)
    assert coefficients.sum() == pytest.approx(1.0, abs=1e-4)          # attention weights
    assert np.all(coefficients > 0)
    plain, _ = _encoder(dim=4)
    with pytest.raises(ValueError, match="no text_projection"):
        plain(history, texts)


def test_text_match_adds_a_weighted_text_cosine_per_query_kind():
    from trainer.layers import TextMatch  # pylint: disable=import-outside-toplevel
    match = TextMatch(search_weight=2.0, history_weight=1.0)
    assert float(match.search_weight) == pytest.approx(2.0)
    assert float(match.history_weight) == pytest.approx(1.0)
    text = tf.constant([[0.6, 0.8, 0.0], [0.6, 0.8, 0.0]])
    q = match(tf.constant([[1.0, 0.0], [1.0, 0.0]]), text,
              is_search=tf.constant([[True], [False]]))
    c = match(tf.constant([[0.0, 1.0]]), tf.constant([[0.6, 0.8, 0.0]]))
    assert q.shape == (2, 5) and c.shape == (1, 5)
    np.testing.assert_allclose(tf.reduce_sum(q * c, axis=1).numpy(), [2.0, 1.0], rtol=1e-5)
    match.history_logit.assign(np.log(np.exp(3.0) - 1.0))               # history weight 3
    q = match(tf.constant([[1.0, 0.0]]), tf.constant([[0.6, 0.8, 0.0]]),
              is_search=tf.constant([[False]]))
    assert float(tf.reduce_sum(q * c)) == pytest.approx(3.0, rel=1e-5)
    assert {w.name.split("/")[-1].split(":")[0] for w in match.trainable_weights} == {
        "search_weight_logit", "history_weight_logit"}


# Runs in its own process: the CPU is split into two logical devices before TensorFlow
# starts, so MirroredStrategy has two replicas, each with half of every batch.
_TWO_REPLICAS = r'''
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tensorflow_recommenders as tfrs
from tests.trainer.test_layers import BUCKETS, _batch
from trainer import retrieval
from trainer.config import RetrievalConfig
from trainer.layers import global_batch_candidates, global_batch_mean

two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}

def replicas(fn, batch):
    """Sum over the two replicas of fn(local half) -> (loss, gradients)."""
    dist = two.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).unbatch().batch(len(next(iter(batch.values())))))
    results = [two.run(tf.function(fn), args=(b,)) for b in dist][0]
    def total(v):
        if v is None:
            return None
        return sum(tf.convert_to_tensor(x).numpy() for x in two.experimental_local_results(v))
    loss, grads = results
    return total(loss), (total(grads) if not isinstance(grads, list)
                         else [total(g) for g in grads])

# 1. the gathered candidates: own rows first, then the other replica's; None passes through
def gather(b):
    values, ids, none = global_batch_candidates(b["v"], b["id"], None)
    assert none is None
    return values, ids
def per_replica(result):
    return [[x.numpy().tolist() for x in two.experimental_local_results(t)] for t in result]
rows = {"v": tf.constant([1.0, 2.0, 3.0, 4.0, 5.0]), "id": tf.constant([7, 8, 9, 7, 8])}
uneven = next(iter(two.experimental_distribute_dataset(               # 3 + 2 rows
    tf.data.Dataset.from_tensors(rows).unbatch().batch(5))))
out["uneven"] = per_replica(two.run(tf.function(gather), args=(uneven,)))
static = two.experimental_distribute_values_from_function(            # 2 + 2, static shapes
    lambda ctx: {"v": tf.constant([1.0, 2.0]) + 2.0 * ctx.replica_id_in_sync_group,
                 "id": tf.constant([5, 6]) * (ctx.replica_id_in_sync_group + 1)})
out["static"] = per_replica(two.run(tf.function(gather), args=(static,)))

# 2. a softmax over global negatives: loss and gradients as on one device, uneven halves
task = tfrs.tasks.Retrieval(loss=tf.keras.losses.CategoricalCrossentropy(
    from_logits=True, reduction="sum"), remove_accidental_hits=True)
with two.scope():
    w = tf.Variable(tf.eye(4) + 0.1)
def softmax_loss(b):
    with tf.GradientTape() as tape:
        c, ids, p = global_batch_candidates(tf.matmul(b["c"], w), b["id"], b["p"])
        loss = global_batch_mean(task(b["q"], c, candidate_sampling_probability=p,
                                      candidate_ids=ids, compute_metrics=False,
                                      compute_batch_metrics=False), tf.shape(b["q"])[0])
    return loss, tape.gradient(loss, w)
rng = np.random.default_rng(0)
rows = {"q": rng.normal(size=(5, 4)).astype("float32"), "c": rng.normal(size=(5, 4)).astype("float32"),
        "id": np.array([1, 2, 1, 3, 2]), "p": np.array([.1, .2, .1, .3, .2], "float32")}
loss2, grad2 = replicas(softmax_loss, rows)
loss1, grad1 = softmax_loss.__wrapped__(rows) if hasattr(softmax_loss, "__wrapped__") else softmax_loss(rows)
out["softmax"] = [float(loss1), float(loss2), float(np.abs(grad1.numpy() - grad2).max())]

# 3. the retrieval model's loss (main softmax + causal next-item objective)
for encoder in ("pooled", "causal"):
    config = RetrievalConfig(embedding_dim=8, hidden_units=(8,), text_mode="none",
                             id_dropout=0.0, sequence_dropout=0.0, history_encoder=encoder)
    tf.keras.utils.set_random_seed(1)
    model2 = retrieval.build_model(config, BUCKETS, two)
    tf.keras.utils.set_random_seed(1)
    model1 = retrieval.build_model(config, BUCKETS)
    batch = _batch()
    model1.compute_loss(batch, training=True)
    two.run(tf.function(lambda b: model2.compute_loss(b, training=True)), args=(
        next(iter(two.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors(batch).unbatch().batch(8)))),))
    model2.set_weights(model1.get_weights())
    def model_loss(b, model=model2):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(b, training=True)
        return loss, tape.gradient(loss, model.trainable_variables)
    loss2, grads2 = replicas(model_loss, batch)
    with tf.GradientTape() as tape:
        loss1 = model1.compute_loss(batch, training=True)
    grads1 = tape.gradient(loss1, model1.trainable_variables)
    diff = max(float(np.abs(tf.convert_to_tensor(g1).numpy() - g2).max()     # relative
                     / max(1.0, float(np.abs(g2).max())))
               for g1, g2 in zip(grads1, grads2) if g1 is not None and g2 is not None)
    assert sum(g is not None for g in grads2) == sum(g is not None for g in grads1)
    out[encoder] = [float(loss1), float(loss2), diff]
print("RESULT " + json.dumps(out))
'''


def test_two_replicas_take_softmax_negatives_from_the_whole_global_batch():
    """Under two replicas (each with half of the batch) the retrieval losses and their
    gradients are those of one device on the whole batch: every replica's in-batch softmax
    sees all of the batch's candidates, its own rows first (trainer/layers.py
    global_batch_candidates; also with static per-replica shapes), and the mean divides by the
    global batch also when the halves are uneven (5 rows: 3 + 2)."""
    import json  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", _TWO_REPLICAS], cwd=repo, text=True,
                          capture_output=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": repo, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    # replica 0 holds rows 1-3 and gathers [1,2,3 | 4,5]; replica 1 gathers [4,5 | 1,2,3]
    assert out["uneven"] == [[[1, 2, 3, 4, 5], [4, 5, 1, 2, 3]],
                             [[7, 8, 9, 7, 8], [7, 8, 7, 8, 9]]]
    assert out["static"] == [[[1, 2, 3, 4], [3, 4, 1, 2]], [[5, 6, 10, 12], [10, 12, 5, 6]]]
    for name in ("softmax", "pooled", "causal"):
        one, two, gradient_gap = out[name]
        assert two == pytest.approx(one, rel=1e-5), (name, out)
        assert gradient_gap < 1e-5, (name, out)   # largest gap / largest gradient
