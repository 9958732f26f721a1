"""Adversarial training on embeddings (FGM, Miyato et al. 2017; PGD, Madry et al. 2018), shared
by the retrieval and ranking models (docs/DESIGN.md, "Adversarial training and DP-SGD").

A model passes the embeddings to perturb through its `EmbeddingPerturbation` by name
(`x = perturb("item_id", x)`: item-id embeddings, text vectors). `adversarial_loss` runs the
model's loss once clean, takes the gradient of that loss with respect to those embeddings,
moves each example's embeddings by `epsilon` along the normalised gradient (FGM; PGD: `steps`
steps of epsilon / steps, each projected back into the epsilon ball) and returns
clean + weight * perturbed loss. The perturbations are constants (stop_gradient): the model
learns to keep its loss low in the worst small neighbourhood of its embeddings.

Everything is replica-local graph code (a nested GradientTape inside the model's loss), so it
runs inside any train_step and under tf.distribute; the per-example normalisation makes the
step independent of the loss scale (global-batch means, replica count).
"""
from typing import Callable, Dict, Optional

import tensorflow as tf


class EmbeddingPerturbation:
    """Named embedding outputs of a forward pass: recorded (and watched) while `record` is
    on, shifted by the current `deltas` while they are set, passed through otherwise."""

    def __init__(self):
        self._tape: Optional[tf.GradientTape] = None
        self._recorded: Optional[Dict[str, tf.Tensor]] = None
        self._deltas: Dict[str, tf.Tensor] = {}

    def __call__(self, name: str, x: tf.Tensor) -> tf.Tensor:
        if name in self._deltas:
            x = x + tf.cast(self._deltas[name], x.dtype)
        if self._recorded is not None:
            self._tape.watch(x)
            self._recorded[name] = x
        return x


def _per_example_normalize(x: tf.Tensor) -> tf.Tensor:
    """x / ||x|| over all but the first (batch) axis; zero rows stay zero."""
    axes = list(range(1, len(x.shape)))
    return x * tf.math.rsqrt(tf.reduce_sum(tf.square(x), axis=axes, keepdims=True) + 1e-12)


def _project(delta: tf.Tensor, epsilon: float) -> tf.Tensor:
    """delta scaled into the per-example L2 ball of radius epsilon."""
    axes = list(range(1, len(delta.shape)))
    norm = tf.sqrt(tf.reduce_sum(tf.square(delta), axis=axes, keepdims=True) + 1e-12)
    return delta * tf.minimum(1.0, epsilon / norm)


def adversarial_loss(loss_fn: Callable[[], tf.Tensor], perturbation: EmbeddingPerturbation,
                     epsilon: float, weight: float, steps: int = 1) -> tf.Tensor:
    """clean + weight * loss at the perturbed embeddings (module docstring). `loss_fn()` runs
    the forward pass and returns the scalar loss; it is called steps + 1 times."""
    recorded: Dict[str, tf.Tensor] = {}
    perturbation._tape = tape = tf.GradientTape(watch_accessed_variables=False)
    perturbation._recorded = recorded
    try:
        with tape:
            clean = loss_fn()
    finally:
        perturbation._recorded, perturbation._tape = None, None
    names = sorted(recorded)
    if not names:
        return clean
    gradients = dict(zip(names, tape.gradient(clean, [recorded[n] for n in names])))
    step = epsilon / steps
    deltas = {name: tf.stop_gradient(step * _per_example_normalize(g))
              for name, g in gradients.items() if g is not None}
    try:
        for _ in range(steps - 1):             # PGD: ascend again from the perturbed point
            perturbation._deltas = deltas
            perturbation._recorded, perturbation._tape = {}, tf.GradientTape(
                watch_accessed_variables=False)
            inner, found = perturbation._tape, perturbation._recorded
            with inner:
                loss = loss_fn()
            perturbation._recorded, perturbation._tape = None, None
            keys = sorted(deltas)
            grads = inner.gradient(loss, [found[k] for k in keys])
            deltas = {k: tf.stop_gradient(_project(
                deltas[k] + (step * _per_example_normalize(g) if g is not None else 0.0),
                epsilon)) for k, g in zip(keys, grads)}
        perturbation._deltas = deltas
        perturbed = loss_fn()
    finally:
        perturbation._deltas, perturbation._recorded, perturbation._tape = {}, None, None
    return clean + weight * perturbed
