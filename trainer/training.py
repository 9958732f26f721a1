"""The Keras training loop both trainers share, and the run report they write."""
import json
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import tensorflow as tf

from trainer import distribute

METRICS_FILE = "metrics.json"
LOSS_CURVE_FILE = "loss_curve.png"


class BatchLossRecorder(tf.keras.callbacks.Callback):
    """Keeps the loss of every training batch (tfrs.Model reports per-batch, not running, loss)."""

    def __init__(self):
        super().__init__()
        self.losses: List[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


class ProgressLogger(tf.keras.callbacks.Callback):
    """Logs "step i/N, loss, steps/s" about 20 times per run (every 50 steps when the total is
    unknown), so a long Trainer shows progress in the TFX/absl log."""

    def __init__(self, total_steps: Optional[int], times: int = 20):
        super().__init__()
        self.total = total_steps
        self.every = max(1, total_steps // times) if total_steps else 50
        self.step, self.start = 0, None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.start is None:
            self.start = time.time()                   # after the first (tracing) step
            return
        if self.step % self.every == 0 or self.step == self.total:
            rate = (self.step - 1) / max(time.time() - self.start, 1e-9)
            logging.info("train step %d/%s loss %.4f (%.2f steps/s)", self.step,
                         self.total or "?", float((logs or {}).get("loss", float("nan"))),
                         rate)


class StepTimer(tf.keras.callbacks.Callback):
    """Wall-clock times of the training steps; the first step (tracing) is reported apart."""

    def __init__(self):
        super().__init__()
        self.start = 0.0
        self.ends: List[float] = []

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())

    def summary(self, batch_size: int) -> Dict[str, float]:
        """Seconds in total and for the first step; steps/s and examples/s after the first."""
        out = {"train_seconds": (self.ends[-1] - self.start) if self.ends else 0.0,
               "first_step_seconds": (self.ends[0] - self.start) if self.ends else 0.0}
        if len(self.ends) > 1:
            rate = (len(self.ends) - 1) / max(self.ends[-1] - self.ends[0], 1e-9)
            out.update(steps_per_second=rate, examples_per_second=rate * batch_size)
        return {k: round(v, 3) for k, v in out.items()}


def fit(model: tf.keras.Model, dataset: tf.data.Dataset, epochs: int,
        train_steps: Optional[int], callbacks: Sequence[tf.keras.callbacks.Callback] = (),
        steps_per_epoch: Optional[int] = None) -> List[float]:
    """Trains `model`; exactly `train_steps` batches when given (TFX TrainArgs.num_steps, the
    dataset must then repeat), else `epochs` passes. ``steps_per_epoch`` (with train_steps):
    the budget runs as Keras epochs of that many steps, rounded up to whole epochs, so
    epoch-end callbacks (early stopping) see it in parts. Returns the per-batch losses."""
    if not any(True for _ in dataset.take(1)):
        raise ValueError("the training split has no usable examples (check the train split and "
                         "its labels: retrieval trains on clicked == 1 units)")
    dataset = distribute.sharded_by_data(dataset, model.distribute_strategy)
    recorder = BatchLossRecorder()
    callbacks = [recorder, ProgressLogger(int(train_steps) if train_steps else None)
                 ] + list(callbacks)
    if train_steps:
        every = min(int(steps_per_epoch or train_steps), int(train_steps))
        model.fit(dataset, epochs=math.ceil(int(train_steps) / every), steps_per_epoch=every,
                  callbacks=callbacks, verbose=2)
    else:
        model.fit(dataset, epochs=epochs, callbacks=callbacks, verbose=2)
    return recorder.losses


def loss_summary(losses: List[float]) -> Dict[str, float]:
    """Steps run and the mean loss of the first and of the last few steps."""
    window = max(1, min(10, len(losses) // 5))
    return {"steps": len(losses), "loss_first": sum(losses[:window]) / window,
            "loss_last": sum(losses[-window:]) / window}


def write_report(model_run_dir: str, metrics: Dict[str, Any], losses: List[float],
                 title: str) -> None:
    """Writes `metrics.json` and `loss_curve.png` into `model_run_dir` and logs the metrics."""
    tf.io.gfile.makedirs(model_run_dir)
    with tf.io.gfile.GFile(os.path.join(model_run_dir, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    logging.info("%s metrics: %s", title, json.dumps(metrics, sort_keys=True))
    _plot_losses(os.path.join(model_run_dir, LOSS_CURVE_FILE), losses, title)


def _plot_losses(path: str, losses: List[float], title: str) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = range(1, len(losses) + 1)
    ax.plot(steps, losses, alpha=0.35, label="batch loss")
    window = max(1, len(losses) // 20)
    if window > 1:
        cumulative = [0.0]
        for loss in losses:
            cumulative.append(cumulative[-1] + loss)
        smooth = [(cumulative[i + 1] - cumulative[max(0, i + 1 - window)]) / min(i + 1, window)
                  for i in range(len(losses))]
        ax.plot(steps, smooth, label=f"moving mean ({window} steps)")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    save_figure(fig, path)


def save_figure(fig, path: str) -> None:
    """Writes a matplotlib figure as PNG to ``path`` (local or a tf.io.gfile URL) and closes it."""
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
    fig.tight_layout()
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    local = path if "://" not in path else "/tmp/" + os.path.basename(path)
    fig.savefig(local, dpi=100)
    plt.close(fig)
    if local != path:
        tf.io.gfile.copy(local, path, overwrite=True)
