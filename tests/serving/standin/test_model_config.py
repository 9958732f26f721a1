"""ModelServerConfig parsing, validation messages, and version policies."""
import pytest

from serving.standin.model_config import (ConfigError, ModelConfig, load_model_config,
                                  parse_model_config, single_model_config)

CONFIG = """
model_config_list {
  config {
    name: 'retrieval'
    base_path: '/models/retrieval'
    model_platform: 'tensorflow'
  }
  config {
    name: 'ranking'
    base_path: '/models/ranking'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 3 versions: 4 } }
    version_labels { key: 'stable' value: 3 }
  }
}
"""


def test_parse_policies_labels_and_mapping():
    retrieval, ranking = parse_model_config(CONFIG, base_path_mapping={"/models": "/srv/m"})
    assert retrieval == ModelConfig("retrieval", "/srv/m/retrieval")
    assert (ranking.policy, ranking.versions, ranking.labels) == ("specific", (3, 4),
                                                                 {"stable": 3})
    assert ranking.base_path == "/srv/m/ranking"


@pytest.mark.parametrize("config,on_disk,aspired", [
    (ModelConfig("m", "/p"), {1, 2, 10}, {10}),
    (ModelConfig("m", "/p", num_versions=2), {1, 2, 10}, {2, 10}),
    (ModelConfig("m", "/p", policy="all"), {1, 2}, {1, 2}),
    (ModelConfig("m", "/p", policy="specific", versions=(1, 5)), {1, 2}, {1}),
    (ModelConfig("m", "/p"), set(), set()),
])
def test_aspired_versions(config, on_disk, aspired):
    assert config.aspired(on_disk) == aspired


@pytest.mark.parametrize("text,message", [
    ("model_config_list { config { name: 'a' base_path: '/a' } ", "<config>:1:"),
    ("model_config_list { config { nme: 'a' } }", "<config>:1:"),
    ("", "expected a 'model_config_list"),
    ("model_config_list { }", "no 'config' entries"),
    ("model_config_list { config { base_path: '/a' } }", "config #1: 'name' is required"),
    ("model_config_list { config { name: 'a' } }", "'base_path' is required"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'onnx' } }",
     "model_platform 'onnx' is not supported"),
    ("model_config_list { config { name: 'a' base_path: '/a' } "
     "config { name: 'a' base_path: '/b' } }", "model 'a' is configured twice"),
    ("model_config_list { config { name: 'a' base_path: '/a' "
     "model_version_policy { specific { } } } }", "needs at least one 'versions'"),
    ("model_config_list { config { name: 'a' base_path: '/a' "
     "model_version_policy { specific { versions: 1 } } "
     "version_labels { key: 'x' value: 2 } } }", "label 'x' points at version 2"),
])
def test_invalid_configs_say_where_and_why(text, message):
    with pytest.raises(ConfigError) as e:
        parse_model_config(text)
    assert message in str(e.value)


def test_load_model_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read model config file"):
        load_model_config(str(tmp_path / "missing.config"))
    bad = tmp_path / "bad.config"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_model_config(str(bad))
    good = tmp_path / "models.config"
    good.write_text(CONFIG)
    assert [m.name for m in load_model_config(str(good))] == ["retrieval", "ranking"]


def test_single_model_flags():
    assert single_model_config("m", "/p") == [ModelConfig("m", "/p")]
    with pytest.raises(ConfigError, match="--model_base_path is required"):
        single_model_config("m", "")
