"""SavedModel warm-up, as TF Serving does it (``saved_model_warmup_util.cc``).

While a version loads (state LOADING), the requests in
``<version>/assets.extra/tf_serving_warmup_requests`` -- a TFRecord file of
``PredictionLog`` records -- are replayed through the loaded signatures, so the first real
request does not pay the lazy initialisation (graph loading and optimisation, seconds for a
real model). Same rules as TF Serving: no file = no warm-up; at most 1000 records; a
record that is not a PredictionLog, a file that is not a TFRecord file, or a request that
fails fails the load of that version (the previous version keeps serving). Only Predict
records are replayed (the stand-in has no Classify/Regress/MultiInference): other log
types fail the load with UNIMPLEMENTED; a record without a log type is skipped.
"""
from __future__ import annotations

import collections
import logging
import os
import time
from dataclasses import dataclass, field

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import prediction_log_pb2

from serving.client.errors import ServingError
from serving.client.tensor_proto import from_tensor_proto

log = logging.getLogger(__name__)

ASSETS_EXTRA = "assets.extra"
REQUESTS_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000


class WarmupError(Exception):
    """The warm-up failed; ``code`` is the status code name the load reports."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass
class WarmupResult:
    path: str
    records: int = 0
    seconds: float = 0.0
    signatures: collections.Counter = field(default_factory=collections.Counter)


def warmup_path(model_dir: str) -> str:
    return os.path.join(model_dir, ASSETS_EXTRA, REQUESTS_FILE)


def _records(path: str):
    try:
        for record in tf.data.TFRecordDataset(path):
            yield record.numpy()
    except tf.errors.DataLossError as e:
        raise WarmupError(f"{e.message} in warmup data {path}. Please verify your warmup "
                          "data is in TFRecord format.", "DATA_LOSS") from None


def run_warmup(servable, model_dir: str) -> WarmupResult | None:
    """Replay the warm-up file of ``model_dir`` through ``servable.predict``; None if
    there is no file. Raises WarmupError when TF Serving would refuse the version."""
    path = warmup_path(model_dir)
    if not os.path.isfile(path):
        log.info("No warmup data file found at %s", path)
        return None
    log.info("Starting to read warmup data for model at %s", path)
    result = WarmupResult(path)
    started = time.perf_counter()
    for record in _records(path):
        if result.records >= MAX_RECORDS:
            raise WarmupError(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) "
                              f"at {path}", "INVALID_ARGUMENT")
        try:
            prediction_log = prediction_log_pb2.PredictionLog.FromString(record)
        except DecodeError:
            raise WarmupError(f"Failed to parse warmup record: {record[:40]!r} from {path}",
                              "INVALID_ARGUMENT") from None
        result.records += 1
        kind = prediction_log.WhichOneof("log_type")
        if kind is None:
            continue  # TF Serving skips records without a request
        if kind != "predict_log":
            raise WarmupError(f"Unsupported log_type for warmup: {kind} (record "
                              f"{result.records} of {path}; the stand-in replays Predict "
                              "requests only)", "UNIMPLEMENTED")
        request = prediction_log.predict_log.request
        signature = request.model_spec.signature_name or "serving_default"
        try:
            inputs = {alias: from_tensor_proto(proto, alias)
                      for alias, proto in request.inputs.items()}
            servable.predict(signature, inputs, list(request.output_filter))
        except ServingError as e:
            raise WarmupError(f"Warmup request {result.records} (signature {signature!r}) "
                              f"of {path} failed: {e.message}", e.code) from None
        result.signatures[signature] += 1
    result.seconds = time.perf_counter() - started
    log.info("Finished reading warmup data for model at %s. Number of warmup records read: "
             "%d. Elapsed time (microseconds): %d. Signatures: %s", path, result.records,
             int(result.seconds * 1e6), dict(sorted(result.signatures.items())))
    return result
