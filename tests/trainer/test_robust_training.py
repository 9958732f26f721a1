"""Adversarial training (trainer/adversarial.py) and DP-SGD (trainer/dp.py), issue #22 parts 2
and 3: the config options, the FGM / PGD step, the privacy accountant against
tensorflow-privacy and dp-accounting, and each option training and exporting both models on
the synthetic shop."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.trainer import shop_runs
from tests.trainer.conftest import RANKING_CONFIG, RETRIEVAL_CONFIG
from trainer import adversarial, dp
from trainer.config import RankingConfig, RetrievalConfig

STEPS = 12
DP_RETRIEVAL = {"dp_noise_multiplier": 1.0, "dp_microbatches": 8, "logq_correction": False,
                "related_items": 0}


def test_options_are_off_by_default_and_checked():
    for cls in (RetrievalConfig, RankingConfig):
        config = cls()
        assert not config.uses_adversarial and not config.uses_dp
    assert RankingConfig.from_custom_config({"adversarial_epsilon": 0.1}).uses_adversarial
    with pytest.raises(ValueError, match="cannot be combined"):
        RankingConfig.from_custom_config({"adversarial_epsilon": 0.1,
                                          "dp_noise_multiplier": 1.0})
    with pytest.raises(ValueError, match="divide batch_size"):
        RankingConfig.from_custom_config({"dp_noise_multiplier": 1.0, "dp_microbatches": 7})
    with pytest.raises(ValueError, match="ensemble"):
        RankingConfig.from_custom_config({"dp_noise_multiplier": 1.0, "ensemble_size": 2})
    with pytest.raises(ValueError, match="adversarial_steps"):
        RetrievalConfig.from_custom_config({"adversarial_steps": 0})
    # retrieval: negatives from the microbatch, no noiseless train statistics in the export
    with pytest.raises(ValueError, match="logq_correction.*related_items"):
        RetrievalConfig.from_custom_config({"dp_noise_multiplier": 1.0,
                                            "dp_microbatches": 8})
    with pytest.raises(ValueError, match=">= 2 examples per microbatch"):
        RetrievalConfig.from_custom_config(dict(DP_RETRIEVAL, dp_microbatches=0))
    with pytest.raises(ValueError, match="early_stopping_patience must be 0"):
        RetrievalConfig.from_custom_config(dict(DP_RETRIEVAL, early_stopping_patience=2))
    assert RetrievalConfig.from_custom_config(DP_RETRIEVAL).dp_num_microbatches == 8


class _Linear(tf.Module):
    """loss = mean_i w . (x_i + delta_i): the FGM direction is w / ||w|| for every example."""

    def __init__(self, perturbation):
        super().__init__()
        self.w = tf.constant([3.0, 4.0])
        self.x = tf.constant([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
        self.perturbation = perturbation

    def loss(self):
        x = self.perturbation("x", self.x * 1.0)
        return tf.reduce_mean(tf.linalg.matvec(x, self.w))


@pytest.mark.parametrize("steps", [1, 3])
def test_fgm_and_pgd_move_each_example_epsilon_along_the_gradient(steps):
    perturbation = adversarial.EmbeddingPerturbation()
    model = _Linear(perturbation)
    clean = float(model.loss())
    total = float(adversarial.adversarial_loss(model.loss, perturbation, epsilon=0.5,
                                               weight=2.0, steps=steps))
    # each example moves 0.5 along w / ||w||: its score rises by 0.5 * ||w|| = 2.5
    assert total == pytest.approx(clean + 2.0 * (clean + 2.5), rel=1e-5)
    assert float(model.loss()) == pytest.approx(clean), "the perturbation is removed after"


def test_adversarial_training_keeps_gradients_on_the_weights():
    from tests.trainer.test_ranking import _batch, _model  # pylint: disable=import-outside-toplevel
    model = _model(adversarial_epsilon=0.5, embedding_l2=0)
    plain = _model(embedding_l2=0)
    batch = _batch()
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    clean = float(plain.compute_loss(batch, training=False))
    assert float(loss) > 2 * clean * 0.99, "clean + perturbed, the perturbed one larger"


# The library's own published values (tensorflow_privacy compute_dp_sgd_privacy_test.py):
# (n, batch, noise multiplier, epochs, delta) -> epsilon from its RDP accountant.
PUBLISHED = [((60000, 150, 1.3, 15, 1e-5), 0.7242234026109595),
             ((100000, 100, 1.0, 30, 1e-7), 1.4154988495444845)]


@pytest.mark.parametrize("setting,expected", PUBLISHED)
def test_epsilon_matches_tensorflow_privacy(setting, expected):
    lib = dp._tf_privacy_module("analysis.compute_dp_sgd_privacy_lib")  # pylint: disable=protected-access
    n, batch, sigma, epochs, delta = setting
    steps = math.ceil(epochs * n / batch)
    library, _ = lib.compute_dp_sgd_privacy(n, batch, sigma, epochs, delta)
    assert library == pytest.approx(expected, rel=1e-9)
    ours = dp.epsilon(n, batch, sigma, steps, delta)
    # same accountant; ours searches more RDP orders (dp-accounting's default), so it may
    # only be tighter, and by little
    assert expected * 0.97 <= ours <= expected * (1 + 1e-9)
    assert dp.epsilon(n, batch, sigma, steps, delta, accountant="pld") <= ours * 1.01


def test_epsilon_is_dp_accountings_rdp_and_the_microbatch_rule_is_the_librarys():
    import dp_accounting  # pylint: disable=import-outside-toplevel
    lib = dp._tf_privacy_module("analysis.compute_dp_sgd_privacy_lib")  # pylint: disable=protected-access
    n, batch, sigma, steps, delta = 5000, 64, 1.1, 780, 1 / 5000
    q = batch / n
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    direct = dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(delta)
    assert dp.epsilon(n, batch, sigma, steps, delta) == pytest.approx(direct, rel=1e-12)
    for microbatch_size, used in ((1, False), (8, True)):
        library = lib._compute_dp_sgd_example_privacy(  # pylint: disable=protected-access
            steps * q, sigma, delta, used_microbatching=used,
            poisson_subsampling_probability=q)
        ours = dp.epsilon(n, batch, sigma, steps, delta, microbatch_size=microbatch_size)
        assert ours == pytest.approx(library, rel=1e-9)
    assert dp.epsilon(n, batch, sigma, steps, delta, microbatch_size=8) > direct
    user = dp.user_epsilon(n, batch, sigma, steps, delta, max_examples_per_user=4)
    assert user > direct


def _run(transformed_shop, tmp_path_factory, name, module, config):
    out = str(tmp_path_factory.mktemp(name))
    return shop_runs.run(module.run_fn,
                         shop_runs.fn_args(transformed_shop, out, config, train_steps=STEPS))


def _check_export(run, signature):
    loaded = tf.saved_model.load(run.export)
    assert signature in loaded.signatures
    return loaded


@pytest.mark.slow
@pytest.mark.parametrize("option", ["fgm", "pgd", "dp"])
def test_retrieval_trains_and_exports_with_the_option(option, transformed_shop,
                                                      tmp_path_factory):
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    extra = {"fgm": {"adversarial_epsilon": 0.1},
             "pgd": {"adversarial_epsilon": 0.1, "adversarial_steps": 2},
             "dp": DP_RETRIEVAL}[option]
    run = _run(transformed_shop, tmp_path_factory, f"retrieval_{option}", retrieval,
               dict(RETRIEVAL_CONFIG, **extra))
    metrics = run.metrics
    assert metrics["training"]["steps"] == STEPS
    assert np.isfinite(metrics["training"]["loss_last"])
    assert 0 <= metrics["model"]["recall@10"] <= 1
    loaded = _check_export(run, "top_k")
    out = loaded.signatures["top_k"](user_id=tf.constant(["user_001"]),
                                     history_item_ids=tf.constant([["hair_00"]]),
                                     query=tf.constant(["shampoo"]))
    assert out["item_ids"].shape == (1, 20)
    if option == "dp":
        privacy = metrics["privacy"]
        assert privacy["microbatch_size"] == 64 // 8 and privacy["steps"] == STEPS
        assert privacy["delta"] == pytest.approx(1 / privacy["num_examples"])
        assert privacy["epsilon"] == pytest.approx(dp.epsilon(
            privacy["num_examples"], 64, 1.0, STEPS, privacy["delta"], microbatch_size=8))
        assert privacy["user_epsilon"] is None or privacy["user_epsilon"] > privacy["epsilon"]
    else:
        assert "privacy" not in metrics


@pytest.mark.slow
@pytest.mark.parametrize("option", ["fgm", "dp"])
def test_ranking_trains_and_exports_with_the_option(option, transformed_shop,
                                                    tmp_path_factory):
    from trainer import ranking  # pylint: disable=import-outside-toplevel
    extra = {"fgm": {"adversarial_epsilon": 0.1}, "dp": {"dp_noise_multiplier": 1.0}}[option]
    run = _run(transformed_shop, tmp_path_factory, f"ranking_{option}", ranking,
               dict(RANKING_CONFIG, use_text_embedding=False, **extra))
    metrics = run.metrics
    assert metrics["training"]["steps"] == STEPS
    assert metrics["click"]["auc"] is not None
    _check_export(run, "serving_default")
    if option == "dp":
        privacy = metrics["privacy"]
        assert privacy["microbatch_size"] == 1 and privacy["noise_multiplier"] == 1.0
        assert privacy["epsilon"] == pytest.approx(dp.epsilon(
            privacy["num_examples"], 64, 1.0, STEPS, privacy["delta"]))
        assert privacy["epsilon_pld"] <= privacy["epsilon"] * 1.01
