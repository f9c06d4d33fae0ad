import pytest
from pydantic import ValidationError

from casflow.tasks.config import ConfigError, parse_config

GOOD = """
models:
  - name: g
    generator: {kind: gaussian, components: 8}
"""


def test_defaults_and_implicit_baseline():
    config = parse_config(GOOD)
    assert config.store.url == "./casflow-store"
    assert config.dataset.kind == "digits"
    assert config.classifier.recipe == "fast"
    assert [m.name for m in config.all_models] == ["real", "g"]
    assert config.baseline.generator.kind == "real"


def test_explicit_real_model_is_the_baseline():
    config = parse_config("models:\n  - {name: upper, generator: {kind: real}}\n  - {name: g, generator: {kind: gaussian}}\n")
    assert config.baseline.name == "upper"
    assert [m.name for m in config.all_models] == ["upper", "g"]


def test_config_is_frozen():
    config = parse_config(GOOD)
    with pytest.raises(ValidationError, match="frozen"):
        config.seed = 3


@pytest.mark.parametrize("text, path, words", [
    ("models: []", "models", "at least 1"),
    (GOOD + "colour: blue\n", "colour", "Extra inputs"),
    ("models:\n  - {name: g, generator: {kind: gaussian, temperature: -1}}\n", "models.0.generator.temperature", "greater than or equal"),
    ("models:\n  - {name: g, generator: {kind: gaussian, component: 3}}\n", "models.0.generator.component", "Extra inputs"),
    ("models:\n  - {name: g, generator: {kind: gan}}\n", "models.0.generator", "kind"),
    ("models:\n  - {name: 'bad name', generator: {kind: real}}\n", "models.0.name", "pattern"),
    ("models:\n  - {name: a, generator: {kind: real}}\n  - {name: a, generator: {kind: gaussian}}\n", "", "repeated: a"),
    ("classifier: {options: {widthz: [1, 2, 3]}}\n" + GOOD, "classifier", "options.widthz"),
    ("classifier: {options: {epochs: many}}\n" + GOOD, "classifier", "options.epochs"),
    ("classifier: {recipe: huge}\n" + GOOD, "classifier.recipe", "fast"),
    ("classifier: {device: gpu0}\n" + GOOD, "classifier.device", "gpu0"),
    ("store: {access_key_id: k}\n" + GOOD, "store", "both"),
    ("dataset: {kind: hf-parquet, name: c}\n" + GOOD, "dataset.train", "Field required"),
    ("models:\n  - {name: p, generator: {kind: python, entry_point: 'no colon'}}\n", "models.0.generator.entry_point", "pattern"),
    ("models:\n  - {name: real, generator: {kind: gaussian}}\n", "", "kept for the baseline"),
    ("models:\n  - {name: p, generator: {kind: python, entry_point: 'm:f', prompt_template: 'a photo'}}\n",
     "models.0.generator.prompt_template", "must contain {class_name}"),
    ("models:\n  - {name: p, generator: {kind: python, entry_point: 'm:f', prompt_template: '{class_name} by {artist}'}}\n",
     "models.0.generator.prompt_template", "unknown placeholder {artist}"),
    ("models:\n  - {name: p, generator: {kind: python, entry_point: 'm:f', prompt_template: 'a {} {class_name}'}}\n",
     "models.0.generator.prompt_template", "unknown placeholder {}"),
    ("models:\n  - {name: p, generator: {kind: python, entry_point: 'm:f', prompt_template: 'a {class_name'}}\n",
     "models.0.generator.prompt_template", "not a format string"),
])
def test_bad_config_names_the_key(text, path, words):
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="my.yaml")
    message = str(info.value)
    assert "my.yaml" in message
    assert f"my.yaml: {path}" in message or path == ""
    assert words in message


def test_not_yaml_and_not_a_mapping():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("models: [", source="x.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        parse_config("- 1\n- 2\n", source="x.yaml")


def test_secrets_do_not_show_in_repr():
    config = parse_config("store: {url: 's3://b/p', access_key_id: AKIDSECRET, secret_access_key: VERYSECRET}\n" + GOOD)
    assert "VERYSECRET" not in repr(config) and "AKIDSECRET" not in repr(config)
    assert config.store.secret_access_key.get_secret_value() == "VERYSECRET"
