"""A trainable tf-keras (Keras 2) layer over a reusable SavedModel.

Why not `tensorflow_hub.KerasLayer`: tensorflow-hub 0.15 (the version TFX 1.16 pins) cannot be
imported on TF 2.16 (`cannot import name 'estimator'`), and 0.16.1 (in our lock) fails to
import in our environment too (`No module named 'pkg_resources'`: it needs setuptools at
import time). This layer is the small part of `hub.KerasLayer` we need, and it also wraps
in-memory objects with the same protocol (e.g. `trainer.text.encoder.EncoderStack`).

Protocol of the wrapped object (TF Hub "reusable SavedModel"): `variables`,
`trainable_variables`, optional `regularization_losses` (zero-argument callables) and
`__call__(inputs, training)`; objects without variables (e.g. the tokenizer) are called as
`obj(inputs)`.
"""
import os

import tensorflow as tf
import tf_keras


class SavedModelLayer(tf_keras.layers.Layer):
    """Calls a reusable SavedModel; its trainable variables train when `trainable=True`.

    Args:
        handle: SavedModel directory, or an already loaded / in-memory object.
        trainable: whether the object's trainable variables are trained. When False the
            object runs with `training=False` and no gradient flows through its outputs.
        output_key: return only `outputs[output_key]` (e.g. "embedding" -> [B, H]).
    """

    def __init__(self, handle, trainable=False, output_key=None, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        if isinstance(handle, os.PathLike):
            handle = os.fspath(handle)
        self._handle = handle if isinstance(handle, str) else None
        if isinstance(handle, str):
            import tensorflow_text  # noqa: F401  (registers ops our tokenizer exports use)
            handle = tf.saved_model.load(handle)
        self._obj = handle
        if not callable(self._obj):
            raise TypeError(f"{handle!r} is not callable: a reusable SavedModel needs a "
                            "__call__ tf.function")
        self._output_key = output_key
        variables = list(getattr(self._obj, "variables", []))
        trainable_ids = {id(v) for v in getattr(self._obj, "trainable_variables", [])}
        self._takes_training = bool(variables)
        for v in variables:                   # register the object's own tf.Variables
            self.add_weight(name=v.name.split(":")[0], shape=v.shape, dtype=v.dtype,
                            trainable=id(v) in trainable_ids,
                            getter=lambda *_, _v=v, **__: _v)
        if trainable:
            for loss_fn in getattr(self._obj, "regularization_losses", []):
                self.add_loss(loss_fn)

    @tf.autograph.experimental.do_not_convert     # plain Python control flow on Python
    def call(self, inputs, training=None):        # values: nothing for AutoGraph to do
        """inputs: what the wrapped object takes; returns its outputs (or one of them)."""
        if self._takes_training:
            if training is None:
                training = tf_keras.backend.learning_phase()
            if not self.trainable:
                training = False
            outputs = tf.__internal__.smart_cond.smart_cond(
                training,
                lambda: self._obj(inputs, training=True),
                lambda: self._obj(inputs, training=False))
        else:
            outputs = self._obj(inputs)
        if not self.trainable:
            outputs = tf.nest.map_structure(tf.stop_gradient, outputs)
        if self._output_key is not None:
            if self._output_key not in outputs:
                raise KeyError(f"output_key {self._output_key!r} not among the outputs "
                               f"{sorted(outputs)} of {self._handle or self._obj!r}")
            outputs = outputs[self._output_key]
        return outputs

    def get_config(self):
        if self._handle is None:
            raise NotImplementedError(
                "a SavedModelLayer over an in-memory object cannot be re-created from its "
                "config; save the model with tf.saved_model.save instead")
        config = super().get_config()
        config.update({"handle": self._handle, "output_key": self._output_key})
        return config
