"""Early stopping of the retrieval trainer on a ranking metric of the eval split.

The loss of a softmax over in-batch negatives says little about the ranking a shopper sees,
so the watched value is what the trainer reports after training: recall@K or NDCG@K of the
eval split's clicked units over the full catalog (trainer/retrieval_eval.py), measured on
the model's current weights after every epoch (or every N steps). ``ValidationMetric``
writes it into the epoch's logs as ``val_<metric>``; Keras' own ``EarlyStopping`` watches that
key (patience, best weights restored at the end of training), so the stopping rule is the
library's. The checks are kept for metrics.json and drawn as ``validation_curve.png``.
"""
import os
import time
from typing import Callable, Dict, List, Optional

from absl import logging
import tensorflow as tf

from trainer import training
from trainer.config import EARLY_STOPPING_METRIC, RetrievalConfig

CURVE_FILE = "validation_curve.png"


def metric_k(metric: str) -> int:
    """The K of a metric name such as "ndcg@10" or "recall@50_history_filtered"."""
    match = EARLY_STOPPING_METRIC.fullmatch(metric)
    if match is None:
        raise ValueError(f"not a retrieval metric name: {metric!r}")
    return int(match.group(2))


class ValidationMetric(tf.keras.callbacks.Callback):
    """After every epoch: ``measure()`` on the current weights, logged as ``val_<metric>``
    (callbacks after this one, Keras' EarlyStopping among them, see it in the same logs)."""

    def __init__(self, metric: str, measure: Callable[[], float]):
        super().__init__()
        self.metric, self.measure = metric, measure
        self.steps = 0
        self.checks: List[Dict[str, float]] = []

    @property
    def key(self) -> str:
        return "val_" + self.metric

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        started = time.time()
        value = float(self.measure())
        self.checks.append({"epoch": epoch + 1, "steps": self.steps, "value": round(value, 6),
                            "seconds": round(time.time() - started, 1)})
        if logs is not None:
            logs[self.key] = value
        logging.info("retrieval: check %d (%d steps): eval %s %.5f (%.1f s)", epoch + 1,
                     self.steps, self.metric, value, time.time() - started)


class EarlyStopping:
    """The callbacks of one run and what it reports."""

    def __init__(self, config: RetrievalConfig, measure: Callable[[], float]):
        self.config = config
        self.validation = ValidationMetric(config.early_stopping_metric, measure)
        self.stopper = tf.keras.callbacks.EarlyStopping(
            monitor=self.validation.key, mode="max", patience=config.early_stopping_patience,
            restore_best_weights=True, verbose=0)

    @property
    def callbacks(self) -> List[tf.keras.callbacks.Callback]:
        return [self.validation, self.stopper]      # this order: the value, then the rule

    def report(self) -> Dict:
        """The checks, the best one (its weights are the model's after training) and whether
        patience ran out before the budget."""
        checks = self.validation.checks
        best = checks[self.stopper.best_epoch] if checks else None     # Keras' choice
        return {"metric": self.config.early_stopping_metric,
                "patience": self.config.early_stopping_patience,
                "checks": checks,
                "best_epoch": best and best["epoch"], "best_steps": best and best["steps"],
                "best_value": best and best["value"],
                "stopped_early": self.stopper.stopped_epoch > 0,
                "check_seconds": round(sum(c["seconds"] for c in checks), 1)}

    def plot(self, model_run_dir: str) -> None:
        """``validation_curve.png``: the metric at every check, the kept one marked."""
        report = self.report()
        if not report["checks"]:
            return
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

        fig, ax = plt.subplots(figsize=(7, 4))
        steps = [c["steps"] for c in report["checks"]]
        ax.plot(steps, [c["value"] for c in report["checks"]], marker="o",
                label="the Trainer's eval files (the pipeline's rank split if it has one)")
        ax.axvline(report["best_steps"], color="grey", linestyle="--",
                   label=f"kept: check {report['best_epoch']}")
        ax.set_xlabel("training step")
        ax.set_ylabel(report["metric"])
        ax.set_title(f"retrieval early stopping (patience {report['patience']})")
        ax.legend()
        training.save_figure(fig, os.path.join(model_run_dir, CURVE_FILE))


def steps_between_checks(config: RetrievalConfig, train_steps: Optional[int],
                         train_examples: Callable[[], int]) -> Optional[int]:
    """With a step budget (TFX TrainArgs.num_steps): the steps between checks,
    ``early_stopping_every_steps`` or one pass over ``train_examples()`` units (at least 1,
    at most the budget). None without a budget: every dataset pass is a check."""
    if not train_steps:
        return None
    every = config.early_stopping_every_steps or max(
        1, train_examples() // config.batch_size)
    return min(every, int(train_steps))
