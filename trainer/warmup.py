"""TF Serving warm-up requests written into each exported SavedModel.

TF Serving replays `<export>/assets.extra/tf_serving_warmup_requests` (a TFRecord file of
`tensorflow_serving.apis.prediction_log_pb2.PredictionLog` records, at most 1000) through the
model while it loads a version, before the version serves: the first call of a signature
otherwise pays its graph loading and optimisation (2.5-2.8 s measured for the ranking model),
far beyond the API's deadline. TF loaders (TFMA, `tf.saved_model.load`) ignore
`assets.extra`.

One PredictLog per signature of the export and batch size in `BATCH_SIZES`, built from the
signature defs in `saved_model.pb`, so every signature (including new ones) is covered:
inputs are named as in trainer/features.py and filled with real catalog items and made-up
user contexts over them (`Samples`; no shopper's data); serialized tf.Examples for `examples` inputs; defaults for
anything else (e.g. external float features). Signatures with unbatched (rank-0) inputs,
like the ranking model's `rank_candidates`, ask only for `score`: TF Serving's batching
(`--enable_batching`) refuses scalar inputs for requests of a signature's full output set
and runs other output subsets unbatched. Signatures with a `score` among several outputs
get a `score`-only request too (what the API asks for).
"""
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from pipeline.contract.spec import top_category
from pipeline.examples import pad_history
from trainer import data
from trainer import features as F

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000                 # TF Serving refuses more
# One user / candidate, and a batch. At most batching.config's max_batch_size (64): TF
# Serving's batcher refuses larger requests of a signature's full output set, and a
# failing warm-up request fails the load of the version.
BATCH_SIZES = (1, 32)
EXAMPLES = "examples"
SCORE = "score"
ITEM_KEYS = (F.ITEM_ID, F.TITLE, F.DESCRIPTION, F.BRAND, F.CATEGORY, F.PRICE, F.IN_STOCK)
# The transformed examples keep only the z-scored price: plausible placeholder prices.
PRICES = (4.99, 12.5, 19.99, 34.0, 59.0, 8.75, 24.99, 99.0)


@dataclass(frozen=True)
class Samples:
    """Realistic request values: `items` (key of ITEM_KEYS -> n values) and `users`
    ((user_id, history item ids most recent first, session query) tuples); histories are
    sent padded to `history_length`, the model's width (serialized examples must have it)."""

    items: Mapping[str, Sequence]
    users: Sequence[Tuple[str, Sequence[str], str]]
    history_length: int = F.HISTORY_LENGTH

    def __post_init__(self):
        sizes = {len(values) for values in self.items.values()}
        if len(sizes) != 1 or 0 in sizes or not self.users:
            raise ValueError("warm-up samples need >= 1 user and >= 1 item, every item "
                             f"column of the same length (got {sizes or 'none'})")

    @property
    def num_items(self) -> int:
        return len(next(iter(self.items.values())))


def export_path(export_dir: str) -> str:
    """Where TF Serving looks for the warm-up file of a SavedModel."""
    return os.path.join(export_dir, WARMUP_DIR, WARMUP_FILE)


def signature_defs(export_dir: str) -> Dict:
    """Signature defs of the `serve` meta graph of a SavedModel (no model load)."""
    model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        model.ParseFromString(f.read())
    for meta_graph in model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return {name: sig for name, sig in meta_graph.signature_def.items()
                    if not name.startswith("__")}
    raise ValueError(f"{export_dir}: no meta graph tagged 'serve'")


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


class _Rows:
    """Row r of a request: its user context and its item."""

    def __init__(self, samples: Samples, size: int, user: int, one_user: bool):
        n_users = len(samples.users)
        self.samples, self.size = samples, size
        self.users = [samples.users[user % n_users if one_user else (user + r) % n_users]
                      for r in range(size)]
        self.items = [r % samples.num_items for r in range(size)]

    def value(self, name: str, r: int):
        """Raw feature `name` of row r, None if the samples do not know it."""
        user_id, history, query = self.users[r]
        item = self.items[r]
        known = {F.USER_ID: user_id, F.QUERY: query,
                 F.HISTORY_ITEM_IDS: pad_history(history, self.samples.history_length),
                 F.NUM_HISTORY: len([h for h in history if h])}
        if name in known:
            return known[name]
        if name == F.TOP_CATEGORY and F.CATEGORY in self.samples.items:
            return top_category(str(self.samples.items[F.CATEGORY][item]))
        if name in self.samples.items:
            return self.samples.items[name][item]
        return None

    def example(self, r: int) -> bytes:
        """Row r as a serialized raw tf.Example (the Transform graph's raw features)."""
        feature = {}
        for name in (F.USER_ID, F.QUERY, F.HISTORY_ITEM_IDS, F.NUM_HISTORY, F.TOP_CATEGORY,
                     *ITEM_KEYS):
            value = self.value(name, r)
            if value is None:
                continue
            values = value if isinstance(value, list) else [value]
            if name in F.FLOAT_FEATURES:
                feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
            elif name in F.INT_FEATURES:
                feature[name] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[int(v) for v in values]))
            else:
                feature[name] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[_bytes(v) for v in values]))
        return tf.train.Example(
            features=tf.train.Features(feature=feature)).SerializeToString()


def _default(dtype: tf.DType):
    return b"" if dtype == tf.string else dtype.as_numpy_dtype(0)


def _tensor(name: str, info, rows: _Rows):
    """TensorProto for input `name` (TensorInfo `info`) of the request `rows`."""
    dtype = tf.as_dtype(info.dtype)
    dims = [-1] if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
    if not dims:                                            # a scalar of the user context
        values = rows.value(name, 0)
    elif name == F.HISTORY_ITEM_IDS and len(dims) == 1:     # one user's history [L]
        values = rows.value(name, 0)
    elif name == EXAMPLES and dtype == tf.string and len(dims) == 1:
        values = [rows.example(r) for r in range(rows.size)]
    elif len(dims) == 1 or (name == F.HISTORY_ITEM_IDS and len(dims) == 2):
        values = [rows.value(name, r) for r in range(rows.size)]
    else:
        values = None
    if values is None or (isinstance(values, list) and any(v is None for v in values)):
        shape = [rows.size if i == 0 and d < 0 else max(d, 1) for i, d in enumerate(dims)]
        values = np.full(shape, _default(dtype), dtype=object if dtype == tf.string else None)
    if dtype == tf.string:
        array = np.array(values, dtype=object)
        array = np.vectorize(_bytes, otypes=[object])(array) if array.size else array
        return tf.make_tensor_proto(array, dtype=tf.string, shape=array.shape)
    return tf.make_tensor_proto(np.asarray(values, dtype=dtype.as_numpy_dtype), dtype=dtype)


def requests(signatures: Mapping, samples: Samples, model_name: str = "",
             batch_sizes: Sequence[int] = BATCH_SIZES) -> List[prediction_log_pb2.PredictionLog]:
    """PredictionLogs warming every signature at every batch size (see the module doc)."""
    logs = []
    for name in sorted(signatures):
        signature = signatures[name]
        one_user = any(not info.tensor_shape.unknown_rank and not info.tensor_shape.dim
                       for info in signature.inputs.values())
        outputs = sorted(signature.outputs)
        filters = [[]]
        if SCORE in outputs and len(outputs) > 1:
            filters = [[SCORE]] if one_user else [[], [SCORE]]
        for i, size in enumerate(batch_sizes):
            rows = _Rows(samples, size, i, one_user)
            inputs = {alias: _tensor(alias, info, rows)
                      for alias, info in signature.inputs.items()}
            for output_filter in filters:
                request = predict_pb2.PredictRequest(
                    model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name),
                    output_filter=output_filter)
                for alias, proto in inputs.items():
                    request.inputs[alias].CopyFrom(proto)
                logs.append(prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request)))
    if len(logs) > MAX_RECORDS:
        raise ValueError(f"{len(logs)} warm-up records; TF Serving accepts at most "
                         f"{MAX_RECORDS}")
    return logs


def write(export_dir: str, samples: Samples, model_name: str = "",
          batch_sizes: Sequence[int] = BATCH_SIZES) -> str:
    """Writes the warm-up file of the SavedModel in `export_dir`; returns its path."""
    logs = requests(signature_defs(export_dir), samples, model_name, batch_sizes)
    path = export_path(export_dir)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    logging.info("%s: %d warm-up requests (%s) written to %s", model_name or "model", len(logs),
                 ", ".join(sorted({log.predict_log.request.model_spec.signature_name
                                   for log in logs})), path)
    return path


def _strings(values) -> List[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


WARMUP_USER = "shoprec-warmup"     # a user id no shop has: the unknown-user (OOV) path


def samples_from_catalog(catalog_patterns: Sequence[str], spec: Mapping,
                         num_items: int = 8, history_length: int = F.HISTORY_LENGTH) -> Samples:
    """Samples from the transformed catalog split only: the first `num_items` items, and two
    made-up user contexts over them (a history of three items with a query of title words,
    and a one-item history without one) for a user id no shop has. Nothing personal
    (shoppers' ids, histories, searches) goes into the export's warm-up file
    (docs/privacy.md); the requests still take every code path (known items, histories,
    live-encoded query text, the out-of-vocabulary user)."""
    keys = [k for k in ITEM_KEYS if k in spec and k != F.PRICE]
    batch = next(iter(data.make_dataset(catalog_patterns, {k: spec[k] for k in keys},
                                        num_items)))
    items = {k: (_strings(batch[k].numpy()) if spec[k].dtype == tf.string
                 else batch[k].numpy().tolist()) for k in keys}
    n = len(items[keys[0]])
    items[F.PRICE] = [PRICES[i % len(PRICES)] for i in range(n)]
    ids = items.get(F.ITEM_ID, [])
    words = " ".join(items.get(F.TITLE, ["gift"])[:1]).lower().split()
    contexts = [(ids[:3], " ".join(words[:2]) or "gift"), (ids[-1:], "")]
    return Samples(items, [(WARMUP_USER, h, q) for h, q in contexts], history_length)


def write_for_run(fn_args, tft_output, model_name: str) -> str:
    """The warm-up file of a Trainer run's export (`fn_args.serving_model_dir`)."""
    samples = samples_from_catalog(data.catalog_patterns(fn_args.train_files),
                                   tft_output.transformed_feature_spec(),
                                   history_length=F.history_length_of(
                                       tft_output.raw_feature_spec()))
    return write(fn_args.serving_model_dir, samples, model_name)
