"""DP-SGD for both trainers: tensorflow-privacy's Keras optimizer (per-microbatch gradient
clipping + Gaussian noise) and the privacy spent, from dp-accounting's RDP accountant (the one
tensorflow-privacy's own report uses). docs/DESIGN.md, "Adversarial training and DP-SGD".

What the guarantee covers: add-or-remove-one-*example* (one impression unit) adjacency for the
trained weights and every intermediate checkpoint, assuming Poisson sampling of batches (our
input pipeline shuffles and batches instead, the usual approximation; tensorflow-privacy's
report states the same). A user contributes many examples: the user-level epsilon by group
privacy (tensorflow-privacy's computation) is reported too and is much larger. Statistics the
trainers compute from the train split outside the gradient (Transform's vocabularies, the
rating mean of the ranker's bias start) are not covered; the retrieval config refuses the
ones that would be exported (logQ click shares, item-to-item tables).

tensorflow-privacy 0.9.0 is installed without its dependencies (requirements/nodeps.txt): its
package `__init__` imports its Estimator heads, and tensorflow-estimator cannot import on
TensorFlow 2.16. The library's own switch `sys.skip_tf_privacy_import` skips that `__init__`;
we then import only the optimizer and analysis modules, which need TensorFlow, dp-accounting
and packaging.
"""
import math
import sys
from typing import Any, Callable, Dict, Optional

import tensorflow as tf

ACCOUNTANTS = ("rdp", "pld")


def _tf_privacy_module(name: str):
    """A tensorflow_privacy submodule, without the package's Estimator imports (module
    docstring)."""
    import importlib  # pylint: disable=import-outside-toplevel
    if "tensorflow_privacy" not in sys.modules:
        sys.skip_tf_privacy_import = True
    return importlib.import_module(f"tensorflow_privacy.privacy.{name}")


def optimizer(config) -> tf.keras.optimizers.Optimizer:
    """tensorflow-privacy's DP Adam (tf-keras legacy Adam underneath) for a trainer config
    with `dp_noise_multiplier` > 0. Microbatches: `dp_microbatches`, or one per example (the
    batch's own size, so a partial batch works)."""
    module = _tf_privacy_module("optimizers.dp_optimizer_keras")
    return module.DPKerasAdamOptimizer(
        l2_norm_clip=config.dp_l2_norm_clip, noise_multiplier=config.dp_noise_multiplier,
        num_microbatches=config.dp_microbatches or None,
        learning_rate=config.effective_learning_rate)


def train_step(model: tf.keras.Model, inputs,
               example_losses: Callable[[Any], tf.Tensor]) -> Dict[str, tf.Tensor]:
    """One DP-SGD step: per-example losses [B] under a tape, then the DP optimizer's
    minimize (per-microbatch jacobians, clipped, summed, noised, averaged). Replica-local:
    under a multi-replica strategy each replica adds its own noise to its share, so the
    global sum holds more noise than the accountant assumes (conservative)."""
    with tf.GradientTape() as tape:
        losses = example_losses(inputs)
    model.optimizer.minimize(losses, model.trainable_variables, tape=tape)
    return {"loss": tf.reduce_mean(losses)}


def epsilon(num_examples: int, batch_size: int, noise_multiplier: float, steps: int,
            delta: float, microbatch_size: int = 1, accountant: str = "rdp") -> float:
    """(epsilon, delta)-DP of `steps` DP-SGD steps with Poisson sampling rate
    batch_size / num_examples, by dp-accounting (RDP by default, or PLD). Microbatches of
    more than one example double the sensitivity under add-or-remove adjacency (Ponomareva
    et al. 2023, sec. 5.6; tensorflow-privacy's `used_microbatching`): the effective noise
    multiplier is then halved."""
    import dp_accounting  # pylint: disable=import-outside-toplevel
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    sigma = noise_multiplier / 2.0 if microbatch_size > 1 else noise_multiplier
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            min(1.0, batch_size / num_examples), dp_accounting.GaussianDpEvent(sigma)),
        int(steps))
    if accountant == "rdp":
        account = dp_accounting.rdp.RdpAccountant()
    else:
        account = dp_accounting.pld.PLDAccountant()
    return float(account.compose(event).get_epsilon(delta))


def user_epsilon(num_examples: int, batch_size: int, noise_multiplier: float, steps: int,
                 delta: float, max_examples_per_user: int, microbatch_size: int = 1
                 ) -> Optional[float]:
    """Add-or-remove-one-user epsilon by group privacy over `max_examples_per_user`
    examples, tensorflow-privacy's own computation (RDP); None when it finds none."""
    lib = _tf_privacy_module("analysis.compute_dp_sgd_privacy_lib")
    q = min(1.0, batch_size / num_examples)
    try:
        value = lib._compute_dp_sgd_user_privacy(  # pylint: disable=protected-access
            num_epochs=steps * q, noise_multiplier=noise_multiplier, user_delta=delta,
            max_examples_per_user=max_examples_per_user,
            used_microbatching=microbatch_size > 1, poisson_subsampling_probability=q)
    except lib.UserLevelDPComputationError:
        return None
    return None if math.isinf(value) else float(value)


def report(config, num_examples: int, steps: int,
           max_examples_per_user: Optional[int] = None) -> Dict[str, Any]:
    """The privacy section of a DP run's metrics.json: settings, delta and epsilon
    (example level, RDP and PLD; user level when `max_examples_per_user` is given)."""
    delta = config.dp_delta or 1.0 / num_examples
    microbatch_size = config.batch_size // config.dp_num_microbatches
    common = dict(num_examples=num_examples, batch_size=config.batch_size,
                  noise_multiplier=config.dp_noise_multiplier, steps=steps, delta=delta,
                  microbatch_size=microbatch_size)
    out = {"noise_multiplier": config.dp_noise_multiplier,
           "l2_norm_clip": config.dp_l2_norm_clip, "microbatch_size": microbatch_size,
           "num_examples": num_examples, "batch_size": config.batch_size, "steps": steps,
           "sampling_rate": config.batch_size / num_examples, "delta": delta,
           "epsilon": epsilon(**common), "epsilon_pld": epsilon(**common, accountant="pld"),
           "unit": "example (impression unit), add-or-remove, Poisson sampling assumed"}
    if max_examples_per_user:
        out["max_examples_per_user"] = int(max_examples_per_user)
        out["user_epsilon"] = user_epsilon(**common,
                                           max_examples_per_user=max_examples_per_user)
    return out


def steps_of(num_examples: int, batch_size: int, epochs: int,
             train_steps: Optional[int]) -> int:
    """Optimizer steps of a run: TrainArgs' num_steps, else full batches per epoch x epochs
    (DP runs drop the last partial batch)."""
    if train_steps:
        return int(train_steps)
    return int(epochs) * (num_examples // batch_size)
