"""trainer.config: custom_config dicts -> validated dataclasses (no TensorFlow needed)."""
import pytest

from trainer.config import RANKING_HEADS, RANKING_OUTPUTS, RankingConfig, RetrievalConfig


def test_defaults_from_empty_or_none():
    assert RetrievalConfig.from_custom_config(None) == RetrievalConfig()
    config = RetrievalConfig.from_custom_config({})
    assert config.top_k == 100 and config.seed == 42 and config.eval_ks == (10, 50, 100)
    assert RankingConfig.from_custom_config(None).loss_weight == {
        "click": 1.0, "purchase": 1.0, "rating": 1.0}


def test_values_are_coerced_from_json_types():
    config = RetrievalConfig.from_custom_config(
        {"learning_rate": 1, "hidden_units": [32, 16], "eval_ks": [5], "use_text": False})
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.hidden_units == (32, 16) and config.eval_ks == (5,)
    assert config.use_text is False


def test_unknown_key_names_the_key_and_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown custom_config key\(s\) \['embeding_dim'\].*"
                                         r"embedding_dim"):
        RetrievalConfig.from_custom_config({"embeding_dim": 8})


@pytest.mark.parametrize("key, value, message", [
    ("text_mode", "partial", r"text_mode must be one of \['none', 'frozen', 'top_layers'"),
    ("text_mode", 1, "must be a string"),
    ("text_top_layers", 7, r"text_top_layers must be in \[1, 6\]"),
    ("text_seq_len", 1, "text_seq_len must be in"),
    ("description_chars", -1, r"description_chars must be in \[0, 10000\]"),
    ("description_chars", 10_001, r"RetrievalConfig.description_chars must be in"),
    ("text_learning_rate", -1e-5, "text_learning_rate must be >= 0"),
    ("text_encoder_cache_dir", "gs://bucket/cache", "must be a local directory"),
    ("batch_size", "64", "must be an integer"),
    ("batch_size", 0, "batch_size must be >= 1"),
    ("use_history", 1, "must be true/false"),
    ("temperature", 0, "temperature must be > 0"),
    ("learning_rate", -0.1, "learning_rate must be >= 0"),
    ("hidden_units", 8, "must be a list"),
])
def test_bad_values_are_rejected(key, value, message):
    with pytest.raises(ValueError, match=message):
        RetrievalConfig.from_custom_config({key: value})


def test_towers_need_at_least_one_part():
    with pytest.raises(ValueError, match="query tower"):
        RetrievalConfig.from_custom_config(
            {"use_user_id": False, "use_history": False, "use_query_text": False})
    with pytest.raises(ValueError, match="candidate tower"):
        RetrievalConfig.from_custom_config(
            {"use_item_id": False, "use_item_features": False, "use_text": False})


def test_degrade_means_learning_rate_zero():
    assert RetrievalConfig.from_custom_config({"degrade": True}).effective_learning_rate == 0
    assert RankingConfig().effective_learning_rate == RankingConfig().learning_rate > 0


def test_ranking_weights_per_head_with_defaults():
    config = RankingConfig.from_custom_config({"score_weights": {"click": 0.2, "purchase": 3}})
    assert config.score_weight == {"click": 0.2, "purchase": 3.0, "rating": 0.0}
    assert config.to_dict()["score_weights"] == {"click": 0.2, "purchase": 3.0, "rating": 0.0}
    assert RankingConfig().loss_weight == {"click": 1.0, "purchase": 1.0, "rating": 1.0}
    assert RankingConfig.from_custom_config(
        {"loss_weights": {"rating": 0.5}}).loss_weight["rating"] == 0.5
    with pytest.raises(ValueError, match="unknown head"):
        RankingConfig.from_custom_config({"loss_weights": {"clicks": 1.0}})
    with pytest.raises(ValueError, match=">= 0"):
        RankingConfig.from_custom_config({"loss_weights": {"click": 1.0, "purchase": -1}})
    with pytest.raises(ValueError, match="at least one head"):
        RankingConfig.from_custom_config(
            {"loss_weights": {"click": 0, "purchase": 0, "rating": 0}})
    assert set(RANKING_HEADS) == {"click", "purchase"}
    assert RANKING_OUTPUTS == ("click", "purchase", "rating")


def test_ranking_dcn_and_text_settings():
    config = RankingConfig()
    assert config.num_cross_layers == 2 and config.use_text_embedding
    assert config.hidden_units == (128, 64)
    text = config.text_config()
    assert text.text_mode == "frozen" and text.use_text and not text.use_query_text
    for bad in ({"num_cross_layers": -1}, {"cross_projection_dim": -2},
                {"text_projection_dim": 0}, {"text_seq_len": 1}):
        with pytest.raises(ValueError, match="RankingConfig"):
            RankingConfig.from_custom_config(bad)


def test_ranking_defaults_use_query_match_and_embedding_l2():
    config = RankingConfig()
    assert config.use_text and config.embedding_l2 == pytest.approx(3e-4)
    assert RankingConfig.from_custom_config({"embedding_l2": 0}).embedding_l2 == 0.0
    with pytest.raises(ValueError, match="embedding_l2 must be >= 0"):
        RankingConfig.from_custom_config({"embedding_l2": -1e-4})


def test_ranking_external_features_are_known_distinct_names():
    assert RankingConfig().external_features == ()
    config = RankingConfig.from_custom_config(
        {"external_features": ["retrieval_score", "transition_score"]})
    assert config.external_features == ("retrieval_score", "transition_score")
    for bad, message in ((["retrieval"], "must be distinct names from"),
                         (["retrieval_score", "retrieval_score"], "must be distinct names"),
                         ("retrieval_score", "must be a list of strings"),
                         ([1], r"external_features\[0\] must be a string")):
        with pytest.raises(ValueError, match=message):
            RankingConfig.from_custom_config({"external_features": bad})


def test_text_settings(monkeypatch, tmp_path):
    config = RetrievalConfig(text_mode="frozen")
    assert config.uses_bert and config.uses_text_match
    assert config.use_query_text and config.use_history_text and config.logq_correction
    assert not RetrievalConfig(text_mode="none").uses_bert
    assert not RetrievalConfig(text_mode="frozen", use_text=False, use_query_text=False,
                               use_history_text=False).uses_bert
    assert not RetrievalConfig(text_mode="frozen", use_text=False).uses_text_match
    assert not RetrievalConfig(text_mode="frozen", degrade=True).uses_text_match
    monkeypatch.setenv("SHOPREC_CACHE_DIR", str(tmp_path))
    assert config.encoder_cache_dir() == str(tmp_path / "text_encoder")
    assert RetrievalConfig(text_encoder_cache_dir="/x").encoder_cache_dir() == "/x"
    assert RetrievalConfig(text_learning_rate=1e-4,
                           degrade=True).effective_text_learning_rate == 0


def test_the_rankers_text_settings_reach_its_embedder_config():
    config = RankingConfig.from_custom_config({"description_chars": 200, "text_seq_len": 64})
    text = config.text_config()
    assert (text.description_chars, text.text_seq_len, text.text_mode) == (200, 64, "frozen")
    with pytest.raises(ValueError, match=r"RankingConfig.description_chars must be in"):
        RankingConfig.from_custom_config({"description_chars": -5})


def test_the_cloud_trainers_own_keys_pass_through():
    """Vertex AI training (tfx.extensions.google_cloud_ai_platform.Trainer) hands run_fn
    the custom_config with its own keys still in it."""
    config = RetrievalConfig.from_custom_config(
        {"top_k": 7, "ai_platform_enable_vertex": True, "ai_platform_vertex_region": "r",
         "ai_platform_training_args": {"worker_pool_specs": []}})
    assert config == RetrievalConfig(top_k=7)
    with pytest.raises(ValueError, match="ai_platfrom_enable_vertex"):
        RankingConfig.from_custom_config({"ai_platfrom_enable_vertex": True})
