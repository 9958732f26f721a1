"""SavedModel warm-up: the stand-in replays assets.extra/tf_serving_warmup_requests before a
version serves, as TF Serving does, and refuses versions whose warm-up fails; the trainers'
warm-up writer (trainer/warmup.py) covers every signature with realistic requests."""
import os
import shutil
import threading

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving.client.errors import NotFound
from serving.standin.model_config import ModelConfig
from serving.standin.model_registry import ModelRegistry
from serving.standin.model_server import parse_args
from serving.standin.saved_model_servable import ModelLoadError, SavedModelServable
from serving.standin.warmup import warmup_path
from tests.serving import tiny_models
from tests.serving.api.setup import api_serving_dir, api_shop  # noqa: F401
from trainer import features as F
from trainer import warmup

X = {"ids": np.array([1], np.int64)}
TINY_SAMPLES = warmup.Samples(items={F.ITEM_ID: ["a"]}, users=[("u1", ["a"], "red lipstick")])


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    """Tiny model version 1 without and version 2 with a warm-up file (trainer.warmup)."""
    root = str(tmp_path_factory.mktemp("tiny_warmup"))
    for version in (1, 2):
        tiny_models.write_version(root, version)
    warmup.write(os.path.join(root, "2"), TINY_SAMPLES, "m")
    return root


def add_version(source, base_path, version, source_version):
    staging = os.path.join(base_path, f".staging-{version}")
    shutil.copytree(os.path.join(source, str(source_version)), staging)
    os.rename(staging, os.path.join(base_path, str(version)))


def served_version(registry):
    with registry.servable("m") as (version, servable):
        servable.predict("embed", X)
    return version


def _write_records(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)


def test_writer_covers_every_signature_at_two_batch_sizes(tiny_source):
    path = warmup_path(os.path.join(tiny_source, "2"))
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(path)]
    requests = [log.predict_log.request for log in logs]
    seen = {(r.model_spec.signature_name, r.inputs["ids" if "ids" in r.inputs else
                                                   next(iter(r.inputs))].tensor_shape.dim[0].size,
             tuple(r.output_filter)) for r in requests}
    assert seen == {("embed", 1, ()), ("embed", 32, ()), ("echo_bytes", 1, ()),
                    ("echo_bytes", 32, ()),
                    # `score` among several outputs: also the score-only request
                    ("serving_default", 1, ()), ("serving_default", 32, ()),
                    ("serving_default", 1, ("score",)), ("serving_default", 32, ("score",))}
    query = tf.make_ndarray(requests[-1].inputs["query"])
    assert set(query.tolist()) == {b"red lipstick"}
    assert all(r.model_spec.name == "m" for r in requests)


def test_loading_replays_each_request_through_the_signatures(tiny_source):
    servable = SavedModelServable(os.path.join(tiny_source, "2"))
    assert servable.warmup.records == 8
    assert dict(servable.warmup.signatures) == {"serving_default": 4, "embed": 2,
                                                "echo_bytes": 2}
    assert SavedModelServable(os.path.join(tiny_source, "1")).warmup is None, "no file"
    assert SavedModelServable(os.path.join(tiny_source, "2"), warmup=False).warmup is None


def test_new_version_serves_only_after_its_warmup(tiny_source, tmp_path):
    gate, warming_up = threading.Event(), threading.Event()
    calls = []

    class GatedServable(SavedModelServable):
        """Warm-up requests wait for ``gate`` (to observe the version while it warms up)."""

        def __init__(self, path):
            self.warming = True
            super().__init__(path)
            self.warming = False

        def predict(self, signature_name, inputs, output_filter=()):
            if self.warming:
                warming_up.set()
                gate.wait(30)
                calls.append(signature_name)
            return super().predict(signature_name, inputs, output_filter)

    add_version(tiny_source, str(tmp_path), 1, 1)
    registry = ModelRegistry([ModelConfig("m", str(tmp_path))], loader=GatedServable)
    registry.poll()
    assert served_version(registry) == 1 and calls == []
    add_version(tiny_source, str(tmp_path), 2, 2)
    poller = threading.Thread(target=registry.poll)
    poller.start()
    try:
        assert warming_up.wait(30)
        assert registry.status("m", version=2)[0].state == "LOADING"
        assert served_version(registry) == 1, "requests stay on v1 during the warm-up"
        with pytest.raises(NotFound):
            with registry.servable("m", version=2):
                pass
    finally:
        gate.set()
        poller.join(60)
    assert [(s.version, s.state) for s in registry.status("m")] == [(2, "AVAILABLE"),
                                                                    (1, "END")]
    assert served_version(registry) == 2
    assert sorted(set(calls)) == ["echo_bytes", "embed", "serving_default"]
    assert len(calls) == 8


def _refused(tiny_source, tmp_path, corrupt):
    """v1 serving, v2 with a warm-up file changed by ``corrupt(path)``: v2's status."""
    add_version(tiny_source, str(tmp_path), 1, 1)
    registry = ModelRegistry([ModelConfig("m", str(tmp_path))])
    registry.poll()
    add_version(tiny_source, str(tmp_path), 2, 2)
    corrupt(warmup_path(str(tmp_path / "2")))
    registry.poll()
    assert served_version(registry) == 1, "the previous version keeps serving"
    (status,) = registry.status("m", version=2)
    assert status.state == "END"
    return status


def test_a_file_that_is_not_tfrecord_fails_the_load(tiny_source, tmp_path):
    def garbage(path):
        with open(path, "wb") as f:
            f.write(b"this is not a TFRecord file, just some text\n" * 3)

    status = _refused(tiny_source, tmp_path, garbage)
    assert status.error_code == "DATA_LOSS"
    assert "tf_serving_warmup_requests" in status.error_message
    assert "TFRecord format" in status.error_message


def test_a_truncated_file_fails_the_load(tiny_source, tmp_path):
    def truncate(path):
        with open(path, "rb+") as f:
            f.truncate(os.path.getsize(path) - 7)

    status = _refused(tiny_source, tmp_path, truncate)
    assert status.error_code == "DATA_LOSS" and "TFRecord format" in status.error_message


def test_a_record_that_is_not_a_prediction_log_fails_the_load(tiny_source, tmp_path):
    status = _refused(tiny_source, tmp_path,
                      lambda path: _write_records(path, [b"\xff\xff\xff\xff"]))
    assert status.error_code == "INVALID_ARGUMENT"
    assert status.error_message.startswith("Failed to parse warmup record")


def test_a_failing_request_fails_the_load_naming_the_signature(tiny_source, tmp_path):
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = "embed"
    request.inputs["wrong"].CopyFrom(tf.make_tensor_proto(np.array([1], np.int64)))
    record = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString()
    status = _refused(tiny_source, tmp_path, lambda path: _write_records(path, [record]))
    assert status.error_code == "INVALID_ARGUMENT"
    assert "signature 'embed'" in status.error_message and "wrong" in status.error_message


def test_more_than_1000_records_fail_the_load(tiny_source):
    path = os.path.join(tiny_source, "2")
    records = [r.numpy() for r in tf.data.TFRecordDataset(warmup_path(path))]
    over = os.path.join(os.path.dirname(tiny_source), "over")
    shutil.copytree(path, over)
    _write_records(warmup_path(over), (records * 126)[:1001])
    with pytest.raises(ModelLoadError, match=r"exceeds the maximum \(1000\)") as info:
        SavedModelServable(over)
    assert info.value.code == "INVALID_ARGUMENT"


def test_unsupported_log_type_fails_and_empty_records_are_skipped(tiny_source, tmp_path):
    path = os.path.join(tiny_source, "2")
    target = str(tmp_path / "v")
    shutil.copytree(path, target)
    _write_records(warmup_path(target), [prediction_log_pb2.PredictionLog().SerializeToString()])
    assert SavedModelServable(target).warmup.records == 1
    classify = prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog())
    _write_records(warmup_path(target), [classify.SerializeToString()])
    with pytest.raises(ModelLoadError, match="Unsupported log_type for warmup: classify_log"):
        SavedModelServable(target)


def test_enable_model_warmup_flag():
    assert parse_args([]).enable_model_warmup is True
    assert parse_args(["--enable_model_warmup=false"]).enable_model_warmup is False
    with pytest.raises(SystemExit):
        parse_args(["--enable_model_warmup=maybe"])


def test_ranking_requests_use_real_values_and_ask_rank_candidates_for_score_only(
        api_serving_dir):
    logs = warmup.requests(warmup.signature_defs(str(api_serving_dir / "ranking" / "1")),
                           warmup.Samples(
                               items={F.ITEM_ID: ["toy1", "book2"], F.TITLE: ["Toy", "Book"],
                                      F.CATEGORY: ["Toys > Building", "Books > Fiction"],
                                      F.PRICE: [5.5, 6.5], F.IN_STOCK: [1, 0]},
                               users=[("u1", ["book1"], "blocks"), ("u2", [], "")]),
                           "ranking")
    ranked = [log.predict_log.request for log in logs
              if log.predict_log.request.model_spec.signature_name == "rank_candidates"]
    assert [list(r.output_filter) for r in ranked] == [["score"], ["score"]]
    one, batch = ({k: tf.make_ndarray(v) for k, v in r.inputs.items()} for r in ranked)
    assert one["user_id"].shape == () and one["user_id"] == b"u1"
    assert one["history_item_ids"].tolist() == [b"book1"] + [b""] * 9
    assert batch["query"] == b"" and batch["item_id"].shape == (32,)
    assert batch["item_id"][:3].tolist() == [b"toy1", b"book2", b"toy1"]
    assert batch["price"].dtype == np.float32 and batch["in_stock"].dtype == np.int64
    assert batch["brand"].tolist() == [b""] * 32, "inputs the samples lack get defaults"
    scored = [log.predict_log.request for log in logs
              if log.predict_log.request.model_spec.signature_name == "score"]
    assert sorted(len(r.output_filter) for r in scored) == [0, 0, 1, 1]
    rows = tf.make_ndarray(scored[-1].inputs["user_id"])
    assert rows[:2].tolist() == [b"u2", b"u1"], "batch rows cycle through the users"


def test_samples_come_from_the_catalog_and_hold_no_shopper_data(tmp_path):
    folder = tmp_path / "Transform" / "Split-catalog"
    folder.mkdir(parents=True)
    _write_records(str(folder / "data.tfrecord"), [
        tf.train.Example(features=tf.train.Features(feature={
            k: (tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
                if isinstance(v, int) else tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[v.encode()])))
            for k, v in {"item_id": f"i{n}", "title": f"Red Shoe {n}", "description": "",
                         "brand": "B", "category": "Shoes > Red",
                         "in_stock": n % 2}.items()})).SerializeToString()
        for n in range(12)])
    spec = {F.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
            F.TITLE: tf.io.FixedLenFeature([], tf.string),
            F.DESCRIPTION: tf.io.FixedLenFeature([], tf.string),
            F.BRAND: tf.io.FixedLenFeature([], tf.string),
            F.CATEGORY: tf.io.FixedLenFeature([], tf.string),
            F.IN_STOCK: tf.io.FixedLenFeature([], tf.int64)}
    samples = warmup.samples_from_catalog([str(folder / "*")], spec)
    assert samples.items[F.ITEM_ID] == [f"i{n}" for n in range(8)]
    assert samples.items[F.IN_STOCK][:2] == [0, 1] and len(samples.items[F.PRICE]) == 8
    assert samples.users == [(warmup.WARMUP_USER, ["i0", "i1", "i2"], "red shoe"),
                             (warmup.WARMUP_USER, ["i7"], "")]
