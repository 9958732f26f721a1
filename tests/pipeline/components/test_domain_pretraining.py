"""DomainPretraining component: catalog texts, the Keras-3 child run, pipeline wiring."""
import os

import pytest
import tensorflow as tf

from pipeline.components import domain_pretraining as dp
from pipeline.configs import load_config
from pipeline.pipeline import create_pipeline
from trainer import features as F
from trainer.config import RetrievalConfig
from trainer.retrieval import with_base_model


def _write_catalog(split_dir, rows):
    os.makedirs(split_dir)
    path = os.path.join(split_dir, "data.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for row in rows:
            feats = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
                     for k, v in row.items()}
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feats)).SerializeToString())


def test_catalog_texts_are_the_retrieval_item_texts_deduplicated(tmp_path):
    rows = [{F.ITEM_ID: "a", F.TITLE: "Velvet Lipstick", F.BRAND: "Rosa",
             F.CATEGORY: "Beauty > Makeup > Lips"},
            {F.ITEM_ID: "b", F.TITLE: "Velvet Lipstick", F.BRAND: "Rosa",
             F.CATEGORY: "Beauty > Makeup > Lips"},
            {F.ITEM_ID: "c", F.TITLE: "Dome Tent", F.BRAND: "", F.CATEGORY: "Sports",
             F.DESCRIPTION: "Sleeps two."},
            {F.ITEM_ID: "d", F.TITLE: "", F.BRAND: "", F.CATEGORY: ""}]
    _write_catalog(str(tmp_path / "Split-catalog"), rows)
    assert dp.catalog_texts(str(tmp_path / "Split-catalog")) == [
        "Velvet Lipstick | Rosa | Beauty > Makeup > Lips", "Dome Tent | Sports"]
    # with descriptions on (RetrievalConfig.description_chars), as the retrieval model reads
    assert dp.catalog_texts(str(tmp_path / "Split-catalog"), description_chars=6) == [
        "Velvet Lipstick | Rosa | Beauty > Makeup > Lips", "Dome Tent | Sports | Sleeps"]


def test_catalog_texts_names_an_empty_split(tmp_path):
    os.makedirs(tmp_path / "Split-catalog")
    with pytest.raises(ValueError, match="no catalog example files under .*Split-catalog"):
        dp.catalog_texts(str(tmp_path / "Split-catalog"))


def test_run_pretraining_refuses_a_catalog_without_texts(tmp_path):
    with pytest.raises(ValueError, match="1 distinct item texts"):
        dp.run_pretraining(["only one"], str(tmp_path), 1, 0, 16, 8, 5e-5)


@pytest.mark.slow
def test_run_pretraining_writes_a_preset_the_retrieval_trainer_accepts(tmp_path):
    texts = [f"{c} {p} | {b} | Beauty > {p}" for c in ("Ruby", "Coral", "Nude", "Plum")
             for p in ("Matte Lipstick", "Lip Balm", "Nail Lacquer") for b in ("Rosa", "Opi")]
    report = dp.run_pretraining(texts, str(tmp_path), steps=1, seed=3, seq_len=16,
                                batch_size=8, learning_rate=5e-5)
    assert report["steps"] == 1 and report["num_train_texts"] + report[
        "num_heldout_texts"] == len(texts)
    assert report["heldout_mlm_loss_after"] != report["heldout_mlm_loss_before"]
    config = with_base_model(RetrievalConfig(text_mode="frozen"), str(tmp_path))
    assert config.text_backbone == str(tmp_path / dp.BACKBONE_DIR)


def test_base_model_without_a_preset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="holds no keras-hub preset"):
        with_base_model(RetrievalConfig(text_mode="frozen"), str(tmp_path))
    # No BERT, an explicit backbone, or no base model: the config is left alone.
    assert with_base_model(RetrievalConfig(text_mode="none"), str(tmp_path)).text_backbone == ""
    assert with_base_model(RetrievalConfig(text_mode="frozen", text_backbone="/b"),
                           str(tmp_path)).text_backbone == "/b"
    assert with_base_model(RetrievalConfig(text_mode="frozen"), None).text_backbone == ""


def _nodes(cfg):
    return {node.id: node for node in create_pipeline(cfg).components}


def test_pipeline_wires_domain_pretraining_into_the_retrieval_trainer(tmp_path):
    common = dict(data_dir=str(tmp_path), pipeline_root=str(tmp_path / "root"),
                  serving_dir=str(tmp_path / "serving"))
    assert "DomainPretraining" not in _nodes(load_config(**common))
    nodes = _nodes(load_config(domain_pretraining_steps=50, **common))
    assert nodes["DomainPretraining"].exec_properties["steps"] == 50
    base = nodes["retrieval_trainer"].inputs["base_model"]
    assert base.producer_component_id == "DomainPretraining"
    assert "base_model" not in nodes["ranking_trainer"].inputs
    with pytest.raises(ValueError, match="domain_pretraining_steps > 0 needs a BERT"):
        load_config(domain_pretraining_steps=5, retrieval_config={"text_mode": "none"}, **common)
    with pytest.raises(ValueError, match="domain_pretraining_steps=-1"):
        load_config(domain_pretraining_steps=-1, **common)
